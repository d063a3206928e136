"""CLAP log-mel features: a fast, deterministic equivalent of transformers' `ClapFeatureExtractor`.

Same numbers as transformers (within 1e-3 dB): periodic Hann window, centred STFT with reflect
padding, power spectrum, mel filters (HTK without norm for "fusion", Slaney with Slaney norm for
"rand_trunc"), 10*log10(max(mel, 1e-10)). Audio shorter than `max_length_s` is padded
("repeatpad": whole repeats then zeros, "repeat": repeats cut to length, "pad": zeros).

Two departures from transformers, both to make features a pure function of the audio:
- transformers picks long-audio crops with `np.random`; here they follow `CROP_RULE`.
- transformers marks a random clip `is_longer` when no clip in a batch is longer than
  `max_length_s`; here `is_longer` is True only for audio that really is longer.
So the same audio gives the same features alone or in any batch.

The STFT is a strided rfft in float64 over blocks of frames (a float32 FFT misses quiet bins
next to loud ones by several hundredths of a dB), each distinct frame once; power, mel projection
and dB run in float32 and stay within 1e-4 dB of transformers; bins outside every mel filter are
dropped right after the FFT. The mel projection runs on the compiled dense kernels when built
(`linear_ops.HostMatmul`: NumPy's matmul would leave its BLAS threads spinning on the cores the
model's forward needs next).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .audio_io import SAMPLE_RATE
from .config import known_fields
from .linear_ops import HostMatmul

CROP_RULE = (
    "Audio longer than max_length_s (10 s) is cropped deterministically: in fusion mode the "
    "front chunk starts at the first frame, the middle chunk at the midpoint of the middle third "
    "of possible chunk starts, and the back chunk ends at the last frame (next to a global view "
    "of the whole clip shrunk to 10 s); in rand_trunc mode the centred 10 s are kept."
)

TRUNCATIONS = ("fusion", "rand_trunc")
PADDINGS = ("repeatpad", "repeat", "pad")
MEL_FLOOR = 1e-10
FRAME_BLOCK = 128  # STFT frames per pass: their float64 windows and spectra are 1 MB each


@dataclass(frozen=True)
class FeatureConfig:
    sampling_rate: int = SAMPLE_RATE
    feature_size: int = 64
    fft_window_size: int = 1024
    hop_length: int = 480
    max_length_s: int = 10
    frequency_min: float = 50.0
    frequency_max: float = 14000.0
    truncation: str = "fusion"
    padding: str = "repeatpad"

    def __post_init__(self):
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {self.truncation!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FeatureConfig":
        return cls(**known_fields(cls, values))

    @classmethod
    def from_json(cls, path: str | Path) -> "FeatureConfig":
        """Read a hub `preprocessor_config.json`; keys this extractor does not use are ignored."""
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON: {e}") from None
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    @property
    def max_samples(self) -> int:
        return int(self.max_length_s * self.sampling_rate)

    @property
    def chunk_frames(self) -> int:
        return self.max_samples // self.hop_length + 1

    @property
    def num_channels(self) -> int:
        return 4 if self.truncation == "fusion" else 1


def hertz_to_mel(freq: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above
    linear = 3.0 * freq / 200.0
    log = 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(freq >= 1000.0, log, linear)


def mel_to_hertz(mels: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    linear = 200.0 * mels / 3.0
    log = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0))
    return np.where(mels >= 15.0, log, linear)


def mel_filter_bank(cfg: FeatureConfig, scale: str) -> np.ndarray:
    """Triangular filters [n_fft // 2 + 1, n_mels]; Slaney filters are area-normalised."""
    edges_mel = np.linspace(
        hertz_to_mel(np.float64(cfg.frequency_min), scale),
        hertz_to_mel(np.float64(cfg.frequency_max), scale),
        cfg.feature_size + 2,
    )
    edges = mel_to_hertz(edges_mel, scale)
    fft_freqs = np.linspace(0, cfg.sampling_rate // 2, cfg.fft_window_size // 2 + 1)
    slopes = edges[None, :] - fft_freqs[:, None]
    widths = np.diff(edges)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    if scale == "slaney":
        filters *= 2.0 / (edges[2:] - edges[:-2])
    return filters


def periodic_hann(length: int) -> np.ndarray:
    return np.hanning(length + 1)[:-1]


def fit_to_length(waveform: np.ndarray, length: int, padding: str) -> np.ndarray:
    """Pad audio shorter than `length` the way transformers does for each padding mode."""
    if len(waveform) >= length:
        return waveform
    repeats = length // len(waveform)
    if padding == "repeat":
        return np.tile(waveform, repeats + 1)[:length]
    if padding == "repeatpad":
        waveform = np.tile(waveform, repeats)
    return np.pad(waveform, (0, length - len(waveform)))


def fusion_chunk_starts(total_frames: int, chunk_frames: int) -> tuple[int, int, int]:
    """Front/middle/back chunk starts per `CROP_RULE`, within transformers' three random ranges."""
    ranges = np.array_split(np.arange(total_frames - chunk_frames + 1), 3)
    front = ranges[0][0]
    middle = ranges[1][len(ranges[1]) // 2] if len(ranges[1]) else 0  # transformers uses 0 for empty ranges
    back = ranges[2][-1] if len(ranges[2]) else 0
    return int(front), int(middle), int(back)


def resize_frames(mel: np.ndarray, frames: int) -> np.ndarray:
    """Resize [T, M] to [frames, M] like torch `F.interpolate(bilinear, align_corners=False)`.

    The mel axis keeps its size, so only time is interpolated. torch's CPU kernel works in
    float32 with fused multiply-adds (one rounding each); float64 intermediates rounded once to
    float32 reproduce it.
    """
    scale = np.float32(mel.shape[0]) / np.float32(frames)
    src = np.maximum(scale * (np.arange(frames) + 0.5) - 0.5, 0).astype(np.float32)
    lo = src.astype(np.int64)
    hi = np.minimum(lo + 1, mel.shape[0] - 1)
    weight_hi = (src - lo)[:, None].astype(np.float32)
    weight_lo = np.float32(1) - weight_hi
    return (mel[lo].astype(np.float64) * weight_lo + mel[hi] * weight_hi).astype(np.float32)


class ClapFeatureExtractor:
    def __init__(self, cfg: FeatureConfig | None = None):
        self.cfg = cfg = cfg or FeatureConfig()
        self.window = periodic_hann(cfg.fft_window_size)
        filters = mel_filter_bank(cfg, "htk" if cfg.truncation == "fusion" else "slaney")
        # Bins outside [frequency_min, frequency_max] have zero weight: skip them.
        used = np.flatnonzero(filters.any(axis=1))
        self.bins = slice(int(used[0]), int(used[-1]) + 1)
        self.filters = np.ascontiguousarray(filters[self.bins], dtype=np.float32)
        self._project = HostMatmul(self.filters)

    def log_mel(self, waveform: np.ndarray, period: int = 0) -> np.ndarray:
        """Log-mel spectrogram [1 + len // hop, n_mels] float32 in dB of one mono waveform.

        `period`: the length of a clip this waveform repeats (padded by repetition). Frames a
        whole number of hops apart that hold the same samples have the same spectrum, so each
        is computed once (half the frames of a 5-s window padded to 10 s); the samples are
        compared, so any `period` gives the same result."""
        half = self.cfg.fft_window_size // 2
        padded = np.pad(waveform, half, mode="reflect")  # in the input dtype: the window makes it float64
        frames = sliding_window_view(padded, self.cfg.fft_window_size)[:: self.cfg.hop_length]
        source = np.arange(len(frames))  # the frame whose spectrum each frame takes
        shift = period // self.cfg.hop_length if period % self.cfg.hop_length == 0 else 0
        if 0 < shift < len(frames):
            for j in np.flatnonzero((frames[shift:] == frames[:-shift]).all(axis=1)) + shift:
                source[j] = source[j - shift]
        computed = np.flatnonzero(source == np.arange(len(frames)))
        mel = np.empty((len(computed), self.filters.shape[1]), np.float32)
        # Blocks of frames, so the float64 windows and spectra stay in cache instead of ~16 MB
        # of fresh pages per clip.
        for start in range(0, len(computed), FRAME_BLOCK):
            rows = computed[start : start + FRAME_BLOCK]
            spectrum = np.fft.rfft(frames[rows] * self.window, axis=-1)[:, self.bins]
            power = np.square(spectrum.real, dtype=np.float32)
            power += np.square(spectrum.imag, dtype=np.float32)
            mel[start : start + len(rows)] = self._project(power)
        position = np.empty(len(frames), np.intp)
        position[computed] = np.arange(len(computed))
        mel = mel[position[source]]
        return np.float32(10.0) * np.log10(np.maximum(mel, np.float32(MEL_FLOOR)))

    def input_mel(self, waveform: np.ndarray) -> tuple[np.ndarray, bool]:
        """Model input [C, chunk_frames, n_mels] for one waveform and whether it is longer than max."""
        cfg = self.cfg
        if len(waveform) <= cfg.max_samples:
            mel = self.log_mel(fit_to_length(waveform, cfg.max_samples, cfg.padding), period=len(waveform))
            return np.broadcast_to(mel, (cfg.num_channels, *mel.shape)), False
        if cfg.truncation == "rand_trunc":
            start = (len(waveform) - cfg.max_samples) // 2
            return self.log_mel(waveform[start : start + cfg.max_samples])[None], True
        mel = self.log_mel(waveform)
        chunk = cfg.chunk_frames
        if len(mel) == chunk:  # less than one hop longer than max: the whole clip fits
            return np.broadcast_to(mel, (4, *mel.shape)), False
        chunks = [mel[s : s + chunk] for s in fusion_chunk_starts(len(mel), chunk)]
        return np.stack([resize_frames(mel, chunk), *chunks]), True

    def __call__(self, waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Features [B, C, chunk_frames, n_mels] float32 and is_longer [B] bool for mono waveforms."""
        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            raise ValueError("expected a list of waveforms, got one 1-D array: wrap it in a list")
        cfg = self.cfg
        features = np.empty((len(waveforms), cfg.num_channels, cfg.chunk_frames, cfg.feature_size), np.float32)
        is_longer = np.zeros(len(waveforms), dtype=np.bool_)
        for i, waveform in enumerate(waveforms):
            waveform = np.asarray(waveform)
            if waveform.ndim != 1:
                raise ValueError(f"waveform #{i}: expected mono samples of shape [n], got shape {waveform.shape}")
            if waveform.size == 0:
                raise ValueError(f"waveform #{i} is empty")
            features[i], is_longer[i] = self.input_mel(waveform)
        return features, is_longer
