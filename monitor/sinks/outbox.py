"""Durable FIFO of outgoing MQTT messages: one SQLite database (WAL) that outlives the process.

A message is written (and synced) before it is handed to the broker and deleted once the
broker acknowledged it, so after a crash or restart the next process finds, oldest first,
everything that was not acknowledged (at least once: a message acknowledged just before
the crash may come again). The database is opened with an exclusive lock held for the
process lifetime, so two monitors never deliver the same outbox twice.

The outbox never stops the monitor: a database that cannot be created or written turns
it into a no-op for the rest of the run (a warning; the sink's queue in memory still
delivers), and a corrupt file is moved aside (kept for inspection) for a new one.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 0.5  # another monitor holding the outbox: give up quickly and run from memory
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


@dataclass(frozen=True)
class Stored:
    key: int  # row id: the order messages were written in
    topic: str
    payload: str
    retain: bool


class Outbox:
    """`path` None: memory only (every call is a no-op)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path).expanduser() if path is not None else None
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def persistent(self) -> bool:
        with self._lock:
            return self._db is not None

    def open(self) -> list[Stored]:
        """Opens or creates the database; the messages it holds, oldest first."""
        if self.path is None:
            return []
        try:
            return self._open()
        except sqlite3.DatabaseError as err:
            if "locked" in str(err):
                return self._give_up("is in use by another process", err)
            if not _is_corrupt(err):
                return self._give_up("cannot be opened", err)
            aside = self._move_aside()
            log.warning("MQTT outbox %s is corrupt (%s): moved to %s, its messages are lost; starting a new one",
                        self.path, err, aside, extra={"kind": "outbox_corrupt", "path": str(self.path)})
            try:
                return self._open()
            except (OSError, sqlite3.Error) as again:
                return self._give_up("cannot be recreated", again)
        except OSError as err:
            return self._give_up("cannot be created", err)

    def add(self, topic: str, payload: str, retain: bool) -> int | None:
        """Writes one message (durably); its key, or None when the outbox is not persistent."""
        with self._lock:
            if self._db is None:
                return None
            try:
                with self._db:
                    return self._db.execute("INSERT INTO outbox (topic, payload, retain, created) VALUES (?, ?, ?, ?)",
                                            (topic, payload, int(retain), time.time())).lastrowid
            except sqlite3.Error as err:
                self._fail("cannot be written", err)
                return None

    def remove(self, keys: list[int]) -> None:
        """Forgets acknowledged (or dropped) messages."""
        with self._lock:
            if self._db is None or not keys:
                return
            try:
                with self._db:
                    self._db.executemany("DELETE FROM outbox WHERE id = ?", [(key,) for key in keys])
            except sqlite3.Error as err:
                self._fail("cannot be written", err)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ---- internals ---------------------------------------------------------------------

    def _open(self) -> list[Stored]:
        if self.path.parent.exists() and not self.path.parent.is_dir():  # mkdir would only say "File exists"
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.path.parent))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            check = db.execute("PRAGMA quick_check").fetchone()[0]  # before anything writes to a damaged file
            if check != "ok":
                err = sqlite3.DatabaseError(f"integrity check: {check}")
                err.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
                raise err
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                raise sqlite3.OperationalError("WAL mode is not available here")
            db.execute("PRAGMA synchronous = FULL")  # an event written is on disk, not only in the page cache
            with db:  # takes (and keeps, by locking_mode) the exclusive lock
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise sqlite3.OperationalError(f"written by a newer version (schema {version})")
                db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
                           "payload TEXT NOT NULL, retain INTEGER NOT NULL, created REAL NOT NULL)")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            rows = db.execute("SELECT id, topic, payload, retain FROM outbox ORDER BY id").fetchall()
        except BaseException:
            db.close()
            raise
        with self._lock:
            self._db = db
        log.info("MQTT outbox %s: %d undelivered messages from an earlier run", self.path, len(rows))
        return [Stored(key, topic, payload, bool(retain)) for key, topic, payload, retain in rows]

    def _move_aside(self) -> Path:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.replace(Path(f"{aside}{suffix}"))
        return aside

    def _give_up(self, why: str, err: Exception) -> list[Stored]:
        log.warning("MQTT outbox %s %s (%s): messages are held in memory only and lost if the monitor stops "
                    "before delivering them", self.path, why, _reason(err),
                    extra={"kind": "outbox_unavailable", "path": str(self.path)})
        return []

    def _fail(self, why: str, err: Exception) -> None:
        """Called with the lock held: the rest of the run goes on from memory."""
        self._db.close()
        self._db = None
        self._give_up(why, err)


def _is_corrupt(err: sqlite3.DatabaseError) -> bool:
    return getattr(err, "sqlite_errorcode", None) in _CORRUPT


def _reason(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err)
