"""Human-readable console lines (`log.console_format: text`).

The JSON log's line dicts in, one line out for what a person watching the terminal
needs: events, warnings and errors, and the monitor's own info lines (started,
stopped, clip written). Level reports and per-window lines stay in the JSON log.
"""

from __future__ import annotations

import logging
import math
import sys
from datetime import datetime

from ..config import LogConfig


def console_format(cfg: LogConfig) -> str:
    """'text' or 'json'; unset means text on a terminal, JSON lines for pipes and files."""
    if cfg.console_format is not None:
        return cfg.console_format
    return "text" if sys.stderr.isatty() else "json"


def _clock(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t is not None else " " * 19


def _db(value: float | None) -> str:
    return "silence" if value is None or not math.isfinite(value) else f"{value:.1f} dBFS"


def text_line(fields: dict) -> str | None:
    """One line for a JSON-log line dict, or None for lines the console leaves out."""
    kind = fields.get("type")
    if kind == "event":
        score = f"score {fields['score']:.3f}"
        if fields["phase"] != "start":
            score += f" (peak {fields['peak_score']:.3f}, {fields['duration_s']:.1f} s)"
        return (f"{_clock(fields['time'])}  {fields['source']}  {fields['label']}  {fields['phase']:<6}  "
                f"{score}  {_db(fields['level_dbfs'])}")
    if kind in ("warning", "log"):
        source = fields.get("source") or "-"
        kind, message = fields.get("kind"), fields["message"]
        what = f"{kind}: " if kind and not message.startswith(kind) else ""
        line = f"{_clock(fields['time'])}  {source}  {fields['level']:<7}  {what}{message}"
        return line + ("\n" + fields["exception"] if fields.get("exception") else "")
    return None


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return text_line(record.fields)


def console_handler(cfg: LogConfig) -> logging.Handler:
    """stderr, as the JSON log's lines or as text lines (`console_format`). The records carry
    the line's dict as `fields`."""
    handler = logging.StreamHandler(sys.stderr)
    if console_format(cfg) == "text":
        handler.setFormatter(_TextFormatter())
        handler.addFilter(lambda record: text_line(record.fields) is not None)
    return handler
