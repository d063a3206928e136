"""Event clips over HTTP: which ids may be served, and their spectrograms (rendered once).

An id is served only when it looks like an event id (letters, digits, '_', '-': no
dots or slashes, whatever the encoding was) and the clip sink has written its WAV. A
source name tells two sources' events of the same id apart; it is only compared with
the configured names (single-source names such as "file:x.wav" are not slug-safe).
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from .spectrogram import render_png

EVENT_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")
PNG_CACHE = 64  # spectrograms kept in memory (~20-100 kB each)


class ClipFiles:
    def __init__(self, clip_path: Callable[[str, str | None], Path | None]):
        self.clip_path = clip_path  # (event id, source or None: any source) -> the WAV
        self._png: OrderedDict[tuple, bytes] = OrderedDict()
        self._rendering: dict[tuple, asyncio.Future] = {}

    def wav(self, event_id: str, source: str | None = None) -> Path | None:
        if not EVENT_ID.fullmatch(event_id):
            return None
        path = self.clip_path(event_id, source)
        return path if path is not None and path.is_file() else None

    async def png(self, event_id: str, source: str | None = None) -> bytes | None:
        """On the server's loop: the cached image, or rendered on a worker thread; concurrent
        requests for the same clip share one rendering."""
        key = (source, event_id)
        if key in self._png:
            self._png.move_to_end(key)
            return self._png[key]
        if key not in self._rendering:
            path = self.wav(event_id, source)
            if path is None:
                return None
            self._rendering[key] = asyncio.ensure_future(asyncio.to_thread(render_png, path))
        try:
            image = await asyncio.shield(self._rendering[key])
        finally:
            self._rendering.pop(key, None)
        self._png[key] = image
        while len(self._png) > PNG_CACHE:
            self._png.popitem(last=False)
        return image
