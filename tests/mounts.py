"""Real small filesystems for the reliability tests: a size-limited or read-only tmpfs.

Mounting needs root (or CAP_SYS_ADMIN); elsewhere the test is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64k", read_only: bool = False):
    """A tmpfs of `size` mounted at `path` (created) for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> Path:
    """Fills the filesystem holding `path` (a directory) to the last byte with one file."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (b"\0" * 4096, b"\0"):
            with contextlib.suppress(OSError):  # ENOSPC: full at this chunk size
                while f.write(chunk):
                    pass
    return filler
