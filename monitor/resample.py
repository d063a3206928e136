"""Streaming resampling of source blocks to the model's 48 kHz."""

from __future__ import annotations

import numpy as np
import soxr

from clap_mlx.audio_io import SAMPLE_RATE


class Resampler:
    """Feeds consecutive blocks through one soxr stream so block edges leave no clicks."""

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE):
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = (
            soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ") if in_rate != out_rate else None
        )

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Resampled block; with `last=True` also flushes the filter's tail. Same rate: `block` itself."""
        if self._stream is None:
            return block
        return self._stream.resample_chunk(np.ascontiguousarray(block, np.float32), last=last)

    def output_samples(self, n: int) -> int:
        """How many output samples n input samples stand for (to fill gaps)."""
        return round(n * self.out_rate / self.in_rate)
