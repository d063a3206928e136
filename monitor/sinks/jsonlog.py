"""JSON-lines log: one object per line for events, level reports, windows (at debug level) and warnings.

Besides events and level reports it takes over the `monitor` logger tree, so any
module's `log.warning(..., extra={"kind": ...})` (overflows, dropped windows,
source gaps, MQTT trouble) lands in the same file as `{"type": "warning", ...}`.
The file is a `LineFile` (whole lines, rotation, a full disk held in memory and
reported on stderr); writes happen on the detector thread, never on the audio callback.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from ..config import LogConfig
from ..events import EventMessage, LevelReport, WindowReport
from .base import Sink, SinkError
from .console import console_handler
from .logfile import LineFile

_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _finite(value):
    """JSON has no -inf/NaN: silence levels and missing numbers become null."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _line(fields: dict) -> str:
    return json.dumps({k: _finite(v) for k, v in fields.items()}, default=str)


class JsonLogSink(Sink):
    name = "log"

    def __init__(self, cfg: LogConfig, logger_name: str = "monitor"):
        self.cfg = cfg
        self.level = getattr(logging, cfg.level.upper())
        self._handlers: list[logging.Handler] = []
        if cfg.path:
            try:  # a folder that cannot exist is a setting to fix; a full disk later only a warning
                Path(cfg.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SinkError(f"log.path: cannot create the folder of {cfg.path}: {err.strerror}") from None
            self._handlers.append(LineFile(cfg.path, cfg.max_bytes, cfg.backups))
        if cfg.console:
            self._handlers.append(console_handler(cfg))  # JSON lines or text lines
        self._bridge = _LogBridge(self)
        self._logger = logging.getLogger(logger_name)
        self._previous_level = self._logger.level

    def start(self) -> None:
        self._logger.addHandler(self._bridge)
        if self._logger.getEffectiveLevel() > self.level:
            self._logger.setLevel(self.level)

    def handle_event(self, event: EventMessage) -> None:
        self.write(logging.INFO, {"type": "event", "time": time.time(), **event.to_dict()})

    def handle_level(self, report: LevelReport) -> None:
        self.write(logging.INFO, {"type": "level", **report.to_dict()})

    def handle_window(self, report: WindowReport) -> None:
        self.write(logging.DEBUG, {"type": "window", **report.to_dict()})

    def status(self) -> dict:
        return {"path": self.cfg.path}

    def write(self, level: int, fields: dict) -> None:
        """One JSON line, if `level` passes the configured log level."""
        if level < self.level:
            return
        record = logging.makeLogRecord({"msg": _line(fields), "levelno": level, "levelname": logging.getLevelName(level),
                                        "fields": fields})
        for handler in self._handlers:
            handler.handle(record)

    def close(self) -> None:
        self._logger.removeHandler(self._bridge)
        self._logger.setLevel(self._previous_level)
        for handler in self._handlers:
            handler.close()


class _LogBridge(logging.Handler):
    """Turns log records of the monitor's modules into JSON lines of the sink."""

    def __init__(self, sink: JsonLogSink):
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        fields = {
            "type": "warning" if record.levelno >= logging.WARNING else "log",
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields.update((k, v) for k, v in vars(record).items() if k not in _RECORD_FIELDS)
        if record.exc_info:
            fields["exception"] = logging.Formatter().formatException(record.exc_info)
        self.sink.write(record.levelno, fields)
