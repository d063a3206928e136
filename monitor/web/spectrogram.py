"""A clip's spectrogram as a PNG: mel-spaced rows, 80 dB range, a magma-like palette.

Rendered by the web server's worker threads on a clip's first request (the clip
is on disk by then), never by the audio or detector threads.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

FFT, HOP = 2048, 480  # 10 ms columns at 48 kHz
ROWS = 128
RANGE_DB = 80.0
MAX_COLUMNS = 1200  # long clips are pooled down to this width
# dark -> purple -> orange -> pale yellow
PALETTE = np.array([(0, 0, 4), (80, 18, 123), (182, 54, 121), (251, 136, 97), (252, 253, 191)], np.float32)


def _mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_columns(audio: np.ndarray, rate: int) -> np.ndarray:
    """[columns, ROWS] power in dB at mel-spaced frequencies (20 Hz to Nyquist), computed in
    chunks and max-pooled to at most MAX_COLUMNS columns (short sounds stay visible), so a
    long clip never needs more than one chunk of FFT frames in memory."""
    audio = np.pad(audio, (FFT // 2, FFT // 2))
    frames = 1 + max(0, len(audio) - FFT) // HOP
    step = -(-frames // MAX_COLUMNS)
    chunk = step * max(1, 256 // step)
    position = 700.0 * (10 ** (np.linspace(_mel(20.0), _mel(rate / 2), ROWS) / 2595.0) - 1) * FFT / rate
    low = np.minimum(position.astype(int), FFT // 2 - 1)
    frac = (position - low).astype(np.float32)
    window = np.hanning(FFT).astype(np.float32)
    columns = []
    for first in range(0, frames, chunk):
        index = np.arange(FFT)[None, :] + HOP * np.arange(first, min(frames, first + chunk))[:, None]
        power = np.abs(np.fft.rfft(audio[index] * window, axis=1)) ** 2
        rows = power[:, low] * (1 - frac) + power[:, low + 1] * frac
        rows = np.pad(rows, ((0, -len(rows) % step), (0, 0)))
        columns.append(rows.reshape(-1, step, ROWS).max(axis=1))
    return 10 * np.log10(np.maximum(np.concatenate(columns), 1e-12))


def spectrogram(audio: np.ndarray, rate: int) -> np.ndarray:
    """[ROWS, columns, 3] uint8 RGB, low frequencies at the bottom."""
    rows = _mel_columns(audio.astype(np.float32), rate).T[::-1]
    level = np.clip((rows - (rows.max() - RANGE_DB)) / RANGE_DB, 0, 1) * (len(PALETTE) - 1)
    low = np.minimum(level.astype(int), len(PALETTE) - 2)
    frac = (level - low)[..., None]
    return (PALETTE[low] * (1 - frac) + PALETTE[low + 1] * frac).astype(np.uint8)


def render_png(path: Path) -> bytes:
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    image = Image.fromarray(spectrogram(audio.mean(axis=1), rate), "RGB")
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()
