"""The JSON log's file: whole lines, size rotation, and a full disk that costs no line and no monitoring.

Each line goes to the file in one `write` on an O_APPEND descriptor, unbuffered, so a line is
in the file entirely or not at all (a short write is cut back) and rotation, which happens
between lines, never splits one. A failed write (disk full, I/O error, a vanished directory)
prints one warning to stderr, keeps the line and those after it in memory (up to
`held_bytes`; past that the oldest are dropped and counted) and retries at most once a
second. Once a write succeeds the held lines go first, then a `log_gap` warning line with
the count of lines lost, if any, and a note on stderr.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path

HELD_BYTES = 1_000_000  # lines kept in memory while the file cannot be written
RETRY_S = 1.0


class LineFile(logging.Handler):
    """A handler writing each record's message as one line of `path`; `max_bytes` 0 or `backups` 0: no rotation."""

    def __init__(self, path: str | Path, max_bytes: int, backups: int, held_bytes: int = HELD_BYTES):
        super().__init__()
        self.path = Path(path)
        self.max_bytes, self.backups, self.held_bytes = max_bytes, backups, held_bytes
        self._fd: int | None = None
        self._size = 0
        self._held: deque[bytes] = deque()
        self._held_size = 0
        self._lost = 0
        self._failing_since: float | None = None
        self._next_try = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        line = (record.getMessage() + "\n").encode()
        if self._failing_since is None:
            try:
                return self._write(line)
            except OSError as err:
                self._fail(err)
        self._hold(line)
        if time.monotonic() >= self._next_try:
            self._resume()

    def close(self) -> None:
        with self.lock:
            if self._held:
                self._resume()
            if self._held:
                _stderr(f"{len(self._held)} lines for {self.path} could not be written and are lost")
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        super().close()

    # ---- internals (called with the handler's lock held) ----------------------------------

    def _write(self, line: bytes) -> None:
        if self._fd is None:
            self._open()
        elif self.max_bytes and self.backups and self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
        written = os.write(self._fd, line)
        if written < len(line):  # the disk filled up mid-line: a partial line would corrupt the file
            os.ftruncate(self._fd, self._size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._size += written

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = None
        for n in range(self.backups - 1, 0, -1):
            older = Path(f"{self.path}.{n}")
            if older.exists():
                older.replace(f"{self.path}.{n + 1}")
        self.path.replace(f"{self.path}.1")
        self._open()

    def _fail(self, err: OSError) -> None:
        if self._fd is not None:  # reopened on the next try: the directory may be recreated meanwhile
            os.close(self._fd)
            self._fd = None
        self._failing_since = time.time()
        self._next_try = time.monotonic() + RETRY_S
        _stderr(f"cannot write the log {self.path}: {err.strerror or err}; monitoring continues, "
                f"up to {self.held_bytes} bytes of log lines are held in memory until it can be written again")

    def _hold(self, line: bytes) -> None:
        self._held.append(line)
        self._held_size += len(line)
        while self._held_size > self.held_bytes and len(self._held) > 1:
            self._held_size -= len(self._held.popleft())
            self._lost += 1

    def _resume(self) -> None:
        """Writes the held lines, oldest first; stops at the first that fails."""
        self._next_try = time.monotonic() + RETRY_S
        written = 0
        try:
            while self._held:
                self._write(self._held[0])
                self._held_size -= len(self._held.popleft())
                written += 1
            if self._lost:
                self._write(self._gap_line())
        except OSError:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            return
        _stderr(f"the log {self.path} is writable again: {written} held lines written, {self._lost} lost")
        self._failing_since, self._lost = None, 0

    def _gap_line(self) -> bytes:
        fields = {"type": "warning", "time": time.time(), "level": "warning", "kind": "log_gap",
                  "message": f"{self._lost} log lines lost while {self.path} could not be written",
                  "lost_lines": self._lost, "since": self._failing_since}
        return (json.dumps(fields) + "\n").encode()


def _stderr(message: str) -> None:
    """Straight to stderr: the log cannot report on itself."""
    try:
        print(f"sound-monitor: warning: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed too: nothing left to tell
        pass
