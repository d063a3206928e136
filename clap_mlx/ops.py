"""The hot ops of both towers: gelu, softmax, layer_norm (+ residual), window attention,
tanh, sigmoid (linear layers: linear_ops.py).

MLX's CPU backend evaluates transcendental functions (exp, erf, tanh) one scalar at a time
on one thread: 20-130x slower than torch. So each op has up to three paths (op_paths.py
chooses: forced by CLAP_MLX_OPS, or measured per op and shape class):

* "kernels": the fused C kernels of `_kernels` (one vectorised pass per row, bias / scale /
  residual adds folded in; attention per (window, head) inside L1), compiled per SIMD
  target; on the host, over evaluated inputs;
* "numpy": multi-pass NumPy ufuncs over cache-sized blocks (host_ops.py); attention as MLX
  matmuls around the NumPy softmax; linear layers as MLX's matmul;
* "mlx": MLX's own ops, lazy: a forward on this path is one MLX graph on any device.

The host paths force evaluation, so they cannot be traced by `mx.grad` or `mx.compile`.
`donate=True` lets a host path write its result into its input's buffer (saves an
allocation and a copy): only for a temporary that nothing else holds, e.g. a fresh matmul
output. Other dtypes than float32 always take MLX's path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import host_ops, op_paths
from .op_paths import Runner

try:
    from . import _kernels

    # the threads that share the attention and fused-stage kernels' units with their caller
    _kernels.team(host_ops.workers() - 1, host_ops.TEAM_SPIN_US)
except ImportError:  # built without a C compiler: the NumPy and MLX paths still work
    _kernels = None


def use_kernels() -> bool:
    """Whether the compiled kernels are available (tests switch them off to cover the rest)."""
    return _kernels is not None


def fused_path_allowed() -> bool:
    """Whether a fused host composite (a Swin stage, the audio front) may run: the kernels are
    built, CLAP_MLX_OPS does not force the per-op paths, and the device is not a GPU."""
    return (
        use_kernels()
        and op_paths.mode() not in ("numpy", "mlx")
        and mx.default_device().type != mx.DeviceType.gpu
    )


def _host_path(x: mx.array) -> bool:
    return x.dtype == mx.float32 and x.size > 0


def _rows_class(op: str, x: mx.array, **extras: bool) -> str:
    """An op's shape class: row width, row count to a power of two, which extras it has."""
    cols = x.shape[-1] if x.ndim else 1
    rows = max(1, x.size // max(cols, 1))
    return " ".join([op, f"{cols} x ~{1 << (rows.bit_length() - 1)}", *(name for name, on in extras.items() if on)])


def _paths(kernels: Runner | None, numpy: Runner, mlx: Runner) -> dict[str, Runner]:
    """The runners of an op, the kernel's first (auto times them in this order)."""
    runners = {"kernels": kernels} if kernels is not None and _kernels is not None else {}
    return {**runners, "numpy": numpy, "mlx": mlx}


def _with_bias(x: mx.array, bias: mx.array | None) -> mx.array:
    return x if bias is None else x + bias


def _gelu_kernels(x: mx.array, bias: mx.array | None, donate: bool) -> mx.array:
    rows = host_ops.rows_view(x)
    result, out = host_ops.kernel_output(x, rows, donate)
    bias_vector = host_ops.float32_vector(bias)
    cols = rows.shape[1]
    host_ops.split_rows(
        lambda start, stop: _kernels.gelu(rows, out, bias_vector, cols, start, stop), rows.shape[0], rows.size
    )
    return host_ops.finish(result, x.shape)


def gelu(x: mx.array, bias: mx.array | None = None, *, donate: bool = False) -> mx.array:
    """Exact (erf) GELU of `x + bias`, as transformers' "gelu"; max abs error 2.5e-7 vs float64."""
    if not _host_path(x):
        return nn.gelu(_with_bias(x, bias))
    runners = _paths(
        lambda d: _gelu_kernels(x, bias, donate and d),
        lambda d: host_ops.apply_rows(host_ops.gelu_block, _with_bias(x, bias)),
        lambda d: nn.gelu(_with_bias(x, bias)),
    )
    return op_paths.choose(_rows_class("gelu", x, bias=bias is not None), [x, bias], runners)


def _scores(x: mx.array, scale: float, add: mx.array | None) -> mx.array:
    x = x * scale if scale != 1.0 else x
    return x + add if add is not None else x


def _softmax_kernels(x: mx.array, scale: float, add: mx.array | None, donate: bool) -> mx.array:
    rows = host_ops.rows_view(x)
    result, out = host_ops.kernel_output(x, rows, donate)
    add_rows = None if add is None else host_ops.rows_view(add.astype(mx.float32))
    count = 0 if add_rows is None else add_rows.shape[0]
    cols = rows.shape[1]
    host_ops.split_rows(
        lambda start, stop: _kernels.softmax(rows, out, scale, add_rows, count, cols, start, stop),
        rows.shape[0],
        rows.size,
    )
    return host_ops.finish(result, x.shape)


def _softmax_numpy(x: mx.array, scale: float, add: mx.array | None, donate: bool = False) -> mx.array:
    return host_ops.apply_rows(host_ops.softmax_block, _scores(x, scale, add))


def _softmax_mlx(x: mx.array, scale: float, add: mx.array | None, donate: bool = False) -> mx.array:
    return mx.softmax(_scores(x, scale, add), axis=-1, precise=True)


def softmax(
    x: mx.array, axis: int = -1, *, scale: float = 1.0, add: mx.array | None = None, donate: bool = False
) -> mx.array:
    """softmax(scale * x + add) along `axis`; -inf entries get 0, an all -inf row gives NaN
    (as mx.softmax). `add` (last axis only) has the shape of x's trailing axes and is
    broadcast over the leading ones, e.g. an attention bias over the batch."""
    last = x.ndim - 1
    if axis not in (-1, last):
        if add is not None:
            raise ValueError("softmax: `add` is only supported along the last axis")
        moved = mx.moveaxis(x * scale if scale != 1.0 else x, axis, -1)
        return mx.moveaxis(softmax(moved), -1, axis)
    if add is not None and tuple(x.shape[x.ndim - add.ndim :]) != tuple(add.shape):
        raise ValueError(f"softmax: add {list(add.shape)} is not the trailing shape of x {list(x.shape)}")
    if not _host_path(x):
        return _softmax_mlx(x, scale, add)
    runners = _paths(
        lambda d: _softmax_kernels(x, scale, add, donate and d),
        lambda d: _softmax_numpy(x, scale, add),
        lambda d: _softmax_mlx(x, scale, add),
    )
    return op_paths.choose(_rows_class("softmax", x, scale=scale != 1.0, add=add is not None), [x, add], runners)


# (tokens, head width) the compiled attention kernel is specialised for: Swin's 8x8 windows
# (HTSAT's heads are 24 wide); other shapes run the matmul path with the kernels' softmax.
ATTENTION_KERNEL_SHAPES = {(64, 8), (64, 16), (64, 24), (64, 32)}

Softmax = Callable[[mx.array, float, mx.array | None, bool], mx.array]


def _attention_matmuls(
    qkv: mx.array, heads: int, scale: float, bias: mx.array | None, softmax_path: Softmax
) -> mx.array:
    items, tokens, packed = qkv.shape
    dims = packed // 3
    # [3, items, heads, tokens, head_dims] in one copy: q, k, v become contiguous slices.
    queries, keys, values = mx.contiguous(qkv.reshape(items, tokens, 3, heads, dims // heads).transpose(2, 0, 3, 1, 4))
    scores = queries @ keys.swapaxes(-1, -2)
    if bias is not None:
        scores = scores.reshape(-1, *bias.shape)
    # the scores are a fresh temporary: the softmax may write into them
    probs = softmax_path(scores, scale, bias, True).reshape(items, heads, tokens, tokens)
    return (probs @ values).transpose(0, 2, 1, 3).reshape(items, tokens, dims)


@functools.lru_cache(maxsize=64)
def _window_indices(table: bytes, tokens: int) -> tuple[mx.array, mx.array]:
    """(the qkv row of each window position, a padding token's being the appended pad row
    `tokens`; each token's position in window order): derived once per window table, as a
    forward calls every block's table again."""
    order = np.frombuffer(table, np.int32)
    inverse = np.argsort(order, kind="stable")[np.count_nonzero(order < 0) :]
    return mx.array(np.where(order < 0, tokens, order)), mx.array(inverse)


def _gather_windows(qkv: mx.array, windows: np.ndarray, pad: mx.array | None) -> mx.array:
    """[batch, tokens, 3 * dims] -> [batch * groups, window, 3 * dims], padding tokens as `pad`."""
    batch, tokens, packed = qkv.shape
    if pad is not None:
        qkv = mx.concatenate([qkv, mx.broadcast_to(pad, (batch, 1, packed))], axis=1)
    rows, _ = _window_indices(windows.tobytes(), tokens)
    return qkv[:, rows].reshape(-1, windows.shape[1], packed)


def _scatter_windows(out: mx.array, windows: np.ndarray, batch: int, tokens: int) -> mx.array:
    """_gather_windows' inverse for the result [batch * groups, window, dims], padding dropped."""
    _, inverse = _window_indices(windows.tobytes(), tokens)
    return out.reshape(batch, -1, out.shape[-1])[:, inverse]


def attention_host(
    packed_rows: np.ndarray,
    out: np.ndarray,
    batch: int,
    heads: int,
    scale: float,
    bias_rows: np.ndarray | None,
    window_rows: np.ndarray,
    pad_row: np.ndarray | None,
) -> None:
    """The attention kernel on host buffers: packed_rows [batch * tokens, 3 * dims] -> out
    [batch * tokens, dims]; bias_rows [groups * heads * 64, 64] or None; window_rows
    [windows, 64] int32 token indices (-1: `pad_row`)."""
    tokens = packed_rows.shape[0] // batch
    dims = packed_rows.shape[1] // 3
    items = batch * window_rows.shape[0]
    bias_count = 0 if bias_rows is None else bias_rows.shape[0] // window_rows.shape[1]
    pairs = items * heads
    unit = host_ops.split_unit(pairs, pairs * window_rows.shape[1] ** 2 * (dims // heads))
    _kernels.attention(packed_rows, out, window_rows, len(window_rows), tokens, pad_row, bias_rows, bias_count, scale,
                       items, heads, dims // heads, 0, pairs, unit)


def _attention_kernel(
    qkv: mx.array, heads: int, scale: float, bias: mx.array | None, windows: np.ndarray | None, pad: mx.array | None
) -> mx.array:
    batch, tokens, packed = qkv.shape
    # without windows each item is one window of its own tokens in order
    window_rows = np.arange(tokens, dtype=np.int32)[None] if windows is None else windows
    bias_rows = None if bias is None else host_ops.rows_view(bias.astype(mx.float32))
    out = np.empty((batch, tokens, packed // 3), np.float32)
    attention_host(
        host_ops.rows_view(qkv), out, batch, heads, scale, bias_rows, window_rows, host_ops.float32_vector(pad)
    )
    return mx.array(out)


def attention(
    qkv: mx.array,
    heads: int,
    scale: float,
    bias: mx.array | None = None,
    windows: np.ndarray | None = None,
    pad: mx.array | None = None,
) -> mx.array:
    """Multi-head self-attention from one packed projection.

    qkv: [items, tokens, 3 * dims], the query, key and value projections side by side (as one
    GEMM with concatenated weights gives them); bias: [groups, heads, tokens, tokens] added to
    the scaled scores, item i using group i % groups (e.g. a per-window bias broadcast over the
    batch), or None. Returns [items, tokens, dims], heads concatenated.

    windows: [groups, tokens] token indices partitioning qkv's axis 1 into windows (-1: a
    padding token projected as `pad` [3 * dims]), or None. Then qkv is [batch, any tokens,
    3 * dims] in any order, item i is window i % groups of batch element i // groups, and the
    result is [batch, tokens, dims] in qkv's order: the kernel reads and writes the windows in
    place, without gathering them.
    """
    batch, qkv_tokens, packed = qkv.shape
    if windows is not None:
        windows = np.ascontiguousarray(windows, np.int32)
    items, tokens = (batch * len(windows), windows.shape[1]) if windows is not None else (batch, qkv_tokens)
    dims = packed // 3
    if packed % 3 or dims % heads:
        raise ValueError(f"attention: last axis {packed} is not 3 x a multiple of {heads} heads")
    head_dims = dims // heads
    if bias is not None and (bias.ndim != 4 or tuple(bias.shape[1:]) != (heads, tokens, tokens) or items % bias.shape[0]):
        raise ValueError(
            f"attention: bias {list(bias.shape)} is not [groups dividing {items}, {heads}, {tokens}, {tokens}]"
        )
    if windows is not None and pad is None and (windows < 0).any():
        raise ValueError("attention: windows has padding tokens (-1) but no pad row")

    def matmuls(softmax_path: Softmax) -> mx.array:
        if windows is None:
            return _attention_matmuls(qkv, heads, scale, bias, softmax_path)
        gathered = _attention_matmuls(_gather_windows(qkv, windows, pad), heads, scale, bias, softmax_path)
        return _scatter_windows(gathered, windows, batch, qkv_tokens)

    if not _host_path(qkv):
        return matmuls(_softmax_mlx)
    if (tokens, head_dims) in ATTENTION_KERNEL_SHAPES:
        kernels = lambda d: _attention_kernel(qkv, heads, scale, bias, windows, pad)  # noqa: E731
    else:
        kernels = lambda d: matmuls(_softmax_kernels)  # noqa: E731
    runners = _paths(kernels, lambda d: matmuls(_softmax_numpy), lambda d: matmuls(_softmax_mlx))
    groups = 0 if bias is None else bias.shape[0]
    op_class = f"attention {tokens} tokens {heads} x {head_dims} x ~{1 << (items.bit_length() - 1)} bias {groups > 0}"
    op_class += " windows" if windows is not None else ""
    return op_paths.choose(op_class, [qkv, bias, pad], runners)


def _layer_norm_kernels(
    x: mx.array, residual: mx.array | None, weight: mx.array | None, bias: mx.array | None, eps: float, keep_sum: bool
) -> tuple[mx.array | None, mx.array]:
    rows = host_ops.rows_view(x)
    residual_rows = None if residual is None else host_ops.rows_view(residual)
    total, total_rows = host_ops.kernel_output(x, rows, donate=True) if keep_sum else (None, None)
    out = np.empty_like(rows)
    weight_vector, bias_vector = host_ops.float32_vector(weight), host_ops.float32_vector(bias)
    cols = rows.shape[1]
    host_ops.split_rows(
        lambda start, stop: _kernels.layer_norm(
            rows, residual_rows, total_rows, out, weight_vector, bias_vector, eps, cols, start, stop
        ),
        rows.shape[0],
        rows.size,
    )
    return (host_ops.finish(total, x.shape) if keep_sum else None), mx.array(out.reshape(x.shape))


def _layer_norm(
    x: mx.array, residual: mx.array | None, weight: mx.array | None, bias: mx.array | None, eps: float, keep_sum: bool
) -> tuple[mx.array | None, mx.array]:
    """(x + residual if keep_sum, LayerNorm(x + residual)); x's buffer may receive the sum."""
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"layer_norm: residual {list(residual.shape)} does not match x {list(x.shape)}")
    total = x + residual if residual is not None else x  # lazy: the host paths may not need it
    if not _host_path(x):
        return (total if keep_sum else None), mx.fast.layer_norm(total, weight, bias, eps)
    # A runner returns one array: the kernel's sum rides along in `sums`. It writes the sum
    # into x's buffer only when donating is allowed (never while auto times the paths).
    sums: list[mx.array | None] = []

    def kernels(donate: bool) -> mx.array:
        kept, normed = _layer_norm_kernels(x, residual, weight, bias, eps, keep_sum and donate)
        sums.append(kept)
        return normed

    def numpy(donate: bool) -> mx.array:
        vectors = host_ops.float32_vector(weight), host_ops.float32_vector(bias)
        return host_ops.apply_rows(host_ops.layer_norm_kernel(*vectors, eps), total)

    runners = _paths(kernels, numpy, lambda d: mx.fast.layer_norm(total, weight, bias, eps))
    op_class = _rows_class(
        "layer_norm", x, residual=residual is not None, weight=weight is not None, bias=bias is not None
    )
    normed = op_paths.choose(op_class, [x, residual, weight, bias], runners)
    kept = sums[-1] if sums and sums[-1] is not None else total
    return (kept if keep_sum else None), normed


def layer_norm(
    x: mx.array, weight: mx.array | None, bias: mx.array | None, eps: float, residual: mx.array | None = None
) -> mx.array:
    """LayerNorm of `x + residual` over the last axis (biased variance, as torch)."""
    return _layer_norm(x, residual, weight, bias, eps, keep_sum=False)[1]


def add_layer_norm(
    x: mx.array, residual: mx.array, weight: mx.array | None, bias: mx.array | None, eps: float
) -> tuple[mx.array, mx.array]:
    """(x + residual, LayerNorm(x + residual)) in one pass: the residual stream of a pre-norm
    block and the next sublayer's input. x's buffer is donated to the sum."""
    return _layer_norm(x, residual, weight, bias, eps, keep_sum=True)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters, so checkpoints load unchanged) computed by `layer_norm`."""

    def __call__(self, x: mx.array, residual: mx.array | None = None) -> mx.array:
        """LayerNorm of `x + residual` (x alone when residual is None)."""
        return layer_norm(x, self.get("weight"), self.get("bias"), self.eps, residual=residual)


def tanh(x: mx.array) -> mx.array:
    if not _host_path(x):
        return mx.tanh(x)
    runners = _paths(None, lambda d: host_ops.apply_rows(host_ops.tanh_block, x), lambda d: mx.tanh(x))
    return op_paths.choose(_rows_class("tanh", x), [x], runners)


def sigmoid(x: mx.array) -> mx.array:
    if not _host_path(x):
        return mx.sigmoid(x)
    runners = _paths(None, lambda d: host_ops.apply_rows(host_ops.sigmoid_block, x), lambda d: mx.sigmoid(x))
    return op_paths.choose(_rows_class("sigmoid", x), [x], runners)


def _aff_blend_kernels(x: mx.array, residual: mx.array, local: mx.array, pooled: mx.array, donate: bool) -> mx.array:
    maps = [host_ops.rows_view(a) for a in (x, residual, local)]
    pooled_rows = host_ops.rows_view(pooled)
    result, out = host_ops.kernel_output(local, maps[2], donate)
    rows, cols = out.shape
    item_rows = rows // pooled_rows.shape[0]
    host_ops.split_rows(
        lambda start, stop: _kernels.aff_blend(*maps, pooled_rows, item_rows, cols, out, start, stop), rows, out.size
    )
    return host_ops.finish(result, x.shape)


def aff_blend(
    x: mx.array, residual: mx.array, local: mx.array, pooled: mx.array, *, donate: bool = False
) -> mx.array:
    """Attentional feature fusion's output 2 (residual + sigmoid(local + pooled) (x - residual)):
    x, residual and local [B, ..., C], pooled [B, 1, ..., C] (one row per item). donate: the
    result may be written over `local` (a 12 MB map at batch 8: no new pages, no copy)."""

    def blend(gate: Callable[[mx.array], mx.array]) -> mx.array:
        return 2 * (residual + gate(local + pooled) * (x - residual))

    one_row_each = pooled.shape == (x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])
    if not (x.shape == residual.shape == local.shape and one_row_each) or not all(
        _host_path(a) for a in (x, residual, local, pooled)
    ):
        return blend(mx.sigmoid)
    runners = _paths(
        lambda d: _aff_blend_kernels(x, residual, local, pooled, donate and d),
        lambda d: blend(sigmoid),
        lambda d: blend(mx.sigmoid),
    )
    return op_paths.choose(_rows_class("aff_blend", x), [x, residual, local, pooled], runners)
