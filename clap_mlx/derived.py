"""Arrays derived once from a module's parameters (fused or packed weights, folded norms)."""

from __future__ import annotations

import mlx.core as mx


class DerivedArrays:
    """Arrays computed once from parameters, rebuilt when a source parameter is replaced
    (e.g. by `load_weights`). A plain object, so MLX never sees its arrays as parameters."""

    def __init__(self):
        self._entries: dict[str, tuple[tuple[mx.array, ...], mx.array]] = {}

    def get(self, name: str, sources: tuple[mx.array, ...], build) -> mx.array:
        entry = self._entries.get(name)
        if entry is None or any(old is not new for old, new in zip(entry[0], sources)):
            value = build(*sources)
            mx.eval(value)
            entry = self._entries[name] = (sources, value)
        return entry[1]
