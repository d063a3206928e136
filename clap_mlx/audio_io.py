"""Audio input for CLAP: files or arrays -> float32 mono at 48 kHz.

Files (wav, flac, ogg, mp3, anything libsndfile reads) are decoded by `soundfile` and carry their
own sample rate. Arrays (numpy or mx.array, any floating dtype, samples in [-1, 1]) need
`sample_rate`. Channels are mixed to mono by averaging; other rates are resampled with soxr "HQ".

Array layouts: [n] mono, or 2-D with at most `MAX_CHANNELS` channels on one axis: [n, ch]
(soundfile's layout) when the second axis is the short one, [ch, n] (torchaudio's layout) when
the first is. A 2-D array whose layout cannot be told apart that way is rejected.

A WAV file cut short (its header declares more frames than it holds, e.g. a recording whose
writer died) gives the frames it holds, with a `TruncatedAudioWarning` saying how many of how many.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Sequence, Union

import mlx.core as mx
import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 48000
MAX_CHANNELS = 8

AudioInput = Union[str, Path, np.ndarray, mx.array]  # one clip: a file path or an array


class AudioInputError(ValueError):
    """Audio that cannot be used; the message names the file or array and the problem."""


class TruncatedAudioWarning(UserWarning):
    """An audio file holds fewer frames than its header declares; what it holds is used."""


# WAV formats whose every frame takes `block_align` bytes: PCM, IEEE float, A-law, mu-law, extensible.
FIXED_FRAME_WAV_FORMATS = {0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE}
# The data size streaming writers leave in place of the unknown length; readers read to the end.
UNKNOWN_WAV_DATA_SIZE = 0xFFFFFFFF


def wav_declared_frames(path: Path) -> int | None:
    """The frame count a RIFF/WAVE header declares for its data chunk; None when the file is not
    such a WAV, its format has no fixed frame size, or its writer left the length unknown."""
    with open(path, "rb") as f:
        riff, _, wave = struct.unpack("<4sI4s", f.read(12).ljust(12, b"\0"))
        if (riff, wave) != (b"RIFF", b"WAVE"):
            return None
        block_align = None
        while len(header := f.read(8)) == 8:
            chunk, size = struct.unpack("<4sI", header)
            if chunk == b"data":
                if not block_align or size == UNKNOWN_WAV_DATA_SIZE:
                    return None
                return size // block_align
            body = f.read(size + size % 2)  # chunks are padded to even sizes
            if chunk == b"fmt " and len(body) >= 14:
                tag, _, _, _, block_align = struct.unpack_from("<HHIIH", body)
                if tag not in FIXED_FRAME_WAV_FORMATS:
                    return None
    return None


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    if path.is_dir():
        raise AudioInputError(f"audio file '{path}': is a directory, not an audio file")
    if not path.exists():
        raise AudioInputError(f"audio file '{path}': no such file")
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError) as e:
        raise AudioInputError(f"audio file '{path}': cannot decode it (corrupt or unsupported format): {e}") from None
    declared = wav_declared_frames(path)
    if declared is not None and len(samples) < declared:
        warnings.warn(
            f"audio file '{path}': truncated: its header declares {declared} frames ({declared / rate:.2f} s), "
            f"the file holds {len(samples)} ({len(samples) / rate:.2f} s); using those",
            TruncatedAudioWarning,
            stacklevel=4,
        )
    return samples.mean(axis=1, dtype=np.float32), rate


def _channels_last(samples: np.ndarray, name: str) -> np.ndarray:
    """[n] or 2-D samples -> [n, ch] per the layout rule in the module docstring."""
    if samples.ndim == 1:
        return samples[:, None]
    if samples.ndim != 2:
        raise AudioInputError(f"{name}: expected shape [samples] or [samples, channels], got {samples.shape}")
    rows, cols = samples.shape
    if cols <= MAX_CHANNELS and rows > cols:
        return samples
    if rows <= MAX_CHANNELS and cols > rows:
        return samples.T
    raise AudioInputError(
        f"{name}: cannot tell samples from channels in shape {samples.shape}; "
        f"pass [samples] or [samples, channels] with at most {MAX_CHANNELS} channels"
    )


def _mix_array(source: np.ndarray | mx.array, name: str) -> np.ndarray:
    if isinstance(source, mx.array):
        # numpy has no bfloat16: widen MLX floats before the copy
        source = np.array(source.astype(mx.float32) if mx.issubdtype(source.dtype, mx.floating) else source)
    if not np.issubdtype(source.dtype, np.floating):
        hint = " (integer PCM: divide by its full scale, e.g. / 32768 for int16)" if np.issubdtype(
            source.dtype, np.integer) else ""
        raise AudioInputError(f"{name}: expected floating-point samples, got dtype {source.dtype}{hint}")
    if source.size == 0:
        return np.zeros(0, np.float32)  # reported as empty by _check_samples, whatever the shape
    return _channels_last(source, name).mean(axis=1, dtype=np.float32)


def _check_rate(sample_rate: int | None, name: str) -> int:
    if sample_rate is None:
        raise AudioInputError(f"{name}: sample_rate is required for array input")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioInputError(f"{name}: sample_rate must be an integer, got {sample_rate!r}")
    if sample_rate <= 0:
        raise AudioInputError(f"{name}: sample_rate must be positive, got {sample_rate}")
    return int(sample_rate)


def _check_samples(mono: np.ndarray, name: str):
    if mono.size == 0:
        raise AudioInputError(f"{name}: audio is empty (zero samples)")
    bad = np.flatnonzero(~np.isfinite(mono))
    if bad.size:
        raise AudioInputError(f"{name}: {bad.size} NaN/Inf sample(s), first at sample {bad[0]}")


def _load(source: AudioInput, sample_rate: int | None, name: str) -> np.ndarray:
    if isinstance(source, (str, Path)):
        name = f"audio file '{source}'"
        mono, rate = _read_file(Path(source))
    elif isinstance(source, (np.ndarray, mx.array)):
        rate = _check_rate(sample_rate, name)
        mono = _mix_array(source, name)
    else:
        raise AudioInputError(f"{name}: expected a file path, numpy array or mx.array, got {type(source).__name__}")
    _check_samples(mono, name)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_audio(source: AudioInput, sample_rate: int | None = None) -> np.ndarray:
    """Decode/convert one audio input to float32 mono at 48 kHz.

    `sample_rate` is the rate of array input; files use the rate in their header and ignore it.
    Raises `AudioInputError` naming the file or array and what is wrong with it.
    """
    return _load(source, sample_rate, "array")


def load_audio_batch(sources: Sequence[AudioInput], sample_rate: int | None = None) -> list[np.ndarray]:
    """`load_audio` for several inputs; errors name the file or "array #i"."""
    return [_load(source, sample_rate, f"array #{i}") for i, source in enumerate(sources)]
