"""Tables the audio tower builds once from its geometry: torch's bicubic resize taps (the mel
image's time axis) and Swin's window partition, relative position index and shifted-window
mask. NumPy, except `bicubic_resize`, which applies its taps to an MLX array.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np

BICUBIC_A = -0.75  # torch's cubic convolution constant
# transformers masks shifted-window attention with -100, whose exp() lands in float32
# denormals that slow softmax and the following matmul several-fold on x86. A mask that
# exps to exactly 0 gives the same float32 result unless a masked score beats its row's
# best unmasked one by more than ~80.
MASKED_SCORE = -1e9


def bicubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Torch's 1-D bicubic resize (align_corners=True) as [out_size, 4] source indices and
    their weights: each output sample blends 4 neighbours.

    Source positions and tap weights are computed in float32 like torch's CPU kernel, so the
    blend reproduces `F.interpolate(mode="bicubic")` up to summation order.
    """
    scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    source = scale * np.arange(out_size, dtype=np.float32)
    left = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    t = np.clip(source - left.astype(np.float32), 0, 1).astype(np.float32)
    a = np.float32(BICUBIC_A)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)
    taps = np.clip(left[:, None] + np.arange(-1, 3), 0, in_size - 1)
    return taps.astype(np.int32), weights.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _bicubic_taps_mx(in_size: int, out_size: int) -> tuple[mx.array, mx.array]:
    taps, weights = bicubic_taps(in_size, out_size)
    return mx.array(taps.reshape(-1)), mx.array(weights[:, :, None])


def bicubic_resize(x: mx.array, out_size: int) -> mx.array:
    """x [in_size, columns] resized along axis 0 to out_size rows (torch's bicubic): a
    gather of 4 rows per output row, not a dense [out, in] matmul that is 99.6% zeros."""
    taps, weights = _bicubic_taps_mx(x.shape[0], out_size)
    return (x[taps].reshape(out_size, 4, -1) * weights).sum(axis=1)


def relative_position_index(window: int) -> np.ndarray:
    """[window², window²] index into the relative position bias table (Swin's layout)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    relative = coords[:, :, None] - coords[:, None, :] + window - 1
    return relative[0] * (2 * window - 1) + relative[1]


def partition(grid: np.ndarray, window: int) -> np.ndarray:
    """[H, W] map -> [windows, window²], windows in row-major order (Swin's window_partition)."""
    height, width = grid.shape
    grid = grid.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
    return grid.reshape(-1, window * window)


def round_up(size: int, window: int) -> int:
    return -(-size // window) * window


def window_table(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """[windows, window²] int32 token indices of the zero-padded, cyclically shifted map read
    window by window; -1 stands for a padding token."""
    padded = np.full((round_up(height, window), round_up(width, window)), -1, np.int32)
    padded[:height, :width] = np.arange(height * width).reshape(height, width)
    return partition(np.roll(padded, (-shift, -shift), axis=(0, 1)), window)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """[windows, window², window²] additive mask keeping attention inside each region of
    the cyclically shifted map, as transformers' `get_attn_mask`."""

    def regions(size: int) -> np.ndarray:
        index = np.arange(size)
        return (index >= size - window).astype(np.int64) + (index >= size - shift)

    labels = partition(regions(height)[:, None] * 3 + regions(width)[None, :], window)
    return np.where(labels[:, None, :] != labels[:, :, None], MASKED_SCORE, 0.0).astype(np.float32)
