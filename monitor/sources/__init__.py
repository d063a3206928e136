"""Audio sources: a microphone (PortAudio via sounddevice), an audio file, raw PCM on stdin, an ffmpeg stream.

Each delivers float32 mono blocks with their absolute start sample to
`on_audio` (the contract is in `base.py`). One module per job: `devices`
(PortAudio devices and streams), `clock` (live stream time), `mic`, `files`
(file and stdin readers), `ffmpeg` (a stream decoded by the ffmpeg CLI); `open_source` builds the one a config names.
"""

from __future__ import annotations

from typing import Callable

from ..config import SourceConfig
from .base import AudioSource, OnAudio, SourceError
from .devices import format_devices
from .ffmpeg import FfmpegSource
from .files import FileSource, StdinPCMSource
from .mic import MicrophoneSource

__all__ = ["AudioSource", "FfmpegSource", "FileSource", "MicrophoneSource", "OnAudio", "SourceError", "StdinPCMSource",
           "format_devices", "open_source"]


# type -> builder; a new source type is a SourceConfig.type option plus an entry here
BUILDERS: dict[str, Callable[[SourceConfig], AudioSource]] = {
    "mic": lambda cfg: MicrophoneSource(cfg.device, cfg.sample_rate, cfg.channels, cfg.name),
    "file": lambda cfg: FileSource(cfg.path, cfg.realtime, cfg.loop, cfg.name),
    "stdin": lambda cfg: StdinPCMSource(cfg.sample_rate, cfg.channels, cfg.format, name=cfg.name),
    "ffmpeg": lambda cfg: FfmpegSource(cfg.url, cfg.sample_rate or _model_rate(), cfg.args, cfg.name),
}


def _model_rate() -> int:
    """ffmpeg resamples straight to the model's rate (imported here: only `run` builds sources,
    and it loads clap_mlx anyway; check-config and devices stay free of it)."""
    from clap_mlx.audio_io import SAMPLE_RATE

    return SAMPLE_RATE


def open_source(cfg: SourceConfig) -> AudioSource:
    """Build the source a checked config describes; raises SourceError for what only opening can tell
    (no such device, an unreadable file)."""
    return BUILDERS[cfg.type](cfg)
