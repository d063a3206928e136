"""Clip retention: which clips to delete so the clip folder keeps to `clips.max_*`, oldest first.

Only the clip sink's own files count (`<label>-<start ms>.wav`, see `RulesEngine`'s event
ids); their age is the event start in the name, so copies and restores keep their place.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..config import NAME_PATTERN, ClipsConfig

log = logging.getLogger(__name__)

CLIP_NAME = re.compile(rf"(?P<label>{NAME_PATTERN})-(?P<ms>\d+)\.wav")
MB = 1_000_000


@dataclass(frozen=True)
class ClipFile:
    path: Path
    label: str
    started_at: float  # unix seconds
    size: int


def clip_files(folder: Path) -> list[ClipFile]:
    """The clips in `folder`, oldest first (files of other names are not the sink's: left alone)."""
    clips = []
    for path in folder.iterdir():
        match = CLIP_NAME.fullmatch(path.name)
        if match is None:
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # deleted meanwhile (by a user)
            continue
        clips.append(ClipFile(path, match["label"], int(match["ms"]) / 1000, size))
    return sorted(clips, key=lambda clip: (clip.started_at, clip.path.name))


def to_remove(clips: list[ClipFile], cfg: ClipsConfig, now: float) -> list[ClipFile]:
    """The clips (oldest first, as given) past the age limit, past the per-label count, then
    the oldest of the rest until their total size fits."""
    doomed: set[Path] = set()
    if cfg.max_age_days is not None:
        doomed |= {clip.path for clip in clips if clip.started_at < now - cfg.max_age_days * 86400}
    if cfg.max_per_label is not None:
        left = Counter(clip.label for clip in clips if clip.path not in doomed)
        for clip in clips:
            if clip.path not in doomed and left[clip.label] > cfg.max_per_label:
                doomed.add(clip.path)
                left[clip.label] -= 1
    if cfg.max_total_mb is not None:
        total = sum(clip.size for clip in clips if clip.path not in doomed)
        for clip in clips:
            if total <= cfg.max_total_mb * MB:
                break
            if clip.path not in doomed:
                doomed.add(clip.path)
                total -= clip.size
    return [clip for clip in clips if clip.path in doomed]


def enforce_retention(folder: Path, cfg: ClipsConfig) -> list[Path]:
    """Deletes what `to_remove` picks; returns the deleted paths. Never raises: a folder it cannot
    list or a file it cannot delete is a warning (monitoring goes on)."""
    if cfg.max_age_days is None and cfg.max_total_mb is None and cfg.max_per_label is None:
        return []
    try:
        doomed = to_remove(clip_files(folder), cfg, time.time())
    except OSError as error:
        log.warning("clip retention: cannot list %s: %s", folder, error, extra={"kind": "retention_failed"})
        return []
    removed = []
    for clip in doomed:
        try:
            clip.path.unlink(missing_ok=True)
        except OSError as error:
            log.warning("clip retention: cannot delete %s: %s", clip.path, error, extra={"kind": "retention_failed"})
            continue
        removed.append(clip.path)
    if removed:
        log.info("clip retention: deleted %d clips (%s)", len(removed), ", ".join(p.name for p in removed),
                 extra={"kind": "clips_deleted", "count": len(removed), "files": [p.name for p in removed]})
    return removed
