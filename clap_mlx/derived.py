"""Values derived once from a module's parameters (fused or packed weights, folded norms, a
fused stage's parameter set)."""

from __future__ import annotations

import mlx.core as mx


class DerivedArrays:
    """Arrays computed once from parameters, rebuilt when a source parameter is replaced
    (e.g. by `load_weights`). A plain object, so MLX never sees its arrays as parameters."""

    def __init__(self):
        self._entries: dict[str, tuple[tuple[mx.array, ...], mx.array]] = {}

    def get(self, name: str, sources: tuple[mx.array, ...], build, evaluate: bool = True):
        """build(*sources), kept while every source is the same array; `evaluate=False` for a
        value that is not a tree of arrays (its arrays are evaluated by its builder)."""
        entry = self._entries.get(name)
        if entry is None or len(entry[0]) != len(sources) or any(a is not b for a, b in zip(entry[0], sources)):
            value = build(*sources)
            if evaluate:
                mx.eval(value)
            entry = self._entries[name] = (sources, value)
        return entry[1]
