"""Audio sources: a microphone (PortAudio via sounddevice), an audio file, raw PCM on stdin.

Each delivers float32 mono blocks with their absolute start sample to
`on_audio` (the contract is in `base.py`). One module per job: `devices`
(PortAudio devices and streams), `clock` (live stream time), `mic`, `files`
(file and stdin readers); `open_source` builds the one a config names.
"""

from __future__ import annotations

from ..config import SourceConfig
from .base import AudioSource, OnAudio, SourceError
from .devices import format_devices
from .files import FileSource, StdinPCMSource
from .mic import MicrophoneSource

__all__ = ["AudioSource", "FileSource", "MicrophoneSource", "OnAudio", "SourceError", "StdinPCMSource",
           "format_devices", "open_source"]


def open_source(cfg: SourceConfig) -> AudioSource:
    """Build the source the config describes; raises SourceError naming what is wrong."""
    if cfg.type == "mic":
        return MicrophoneSource(cfg.device, cfg.sample_rate, cfg.channels, cfg.name)
    if cfg.type == "file":
        if not cfg.path:
            raise SourceError("source.type 'file' needs source.path")
        return FileSource(cfg.path, cfg.realtime, cfg.loop, cfg.name)
    if cfg.type == "stdin":
        return StdinPCMSource(cfg.sample_rate, cfg.channels, cfg.format, name=cfg.name)
    raise SourceError(f"unknown source.type {cfg.type!r}; use mic, file or stdin")
