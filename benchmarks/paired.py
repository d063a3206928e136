"""Ratios from interleaved rounds, each round's two runs taken as a pair.

The two sides of a round run 0.3 s apart, so a change in the VM's speed between minutes slows
both runs of a round alike and cancels in that round's ratio; the ratio of the two medians
keeps it whenever the slow minutes fall on different ranks of the two sides (the AVX2 EPYC's
batch-1 25-s runs: medians' ratio 1.31, per-round ratios' median 1.40). A bootstrap interval of
the per-round median says how far the run pins the ratio down: when it spans a target, the run
cannot tell which side of the target the ratio lies. Plain NumPy: report.py imports this
without clap_mlx.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 10_000
SEED = 0  # a fixed resampling seed: the same runs always give the same interval


def paired_ratio(over: list[float], under: list[float]) -> dict:
    """Median of over[i] / under[i] over the rounds, with its 95 % percentile-bootstrap interval.

    `over` and `under` are one entry per round, in round order (a side's `runs_ms`)."""
    if len(over) != len(under) or not over:
        raise ValueError(f"paired runs need one run per side per round, got {len(over)} and {len(under)}")
    ratios = np.asarray(over, dtype=np.float64) / np.asarray(under, dtype=np.float64)
    picks = np.random.default_rng(SEED).integers(0, ratios.size, size=(RESAMPLES, ratios.size))
    low, high = np.percentile(np.median(ratios[picks], axis=1), [2.5, 97.5])
    return {"median": float(np.median(ratios)), "ci95": [float(low), float(high)], "rounds": int(ratios.size)}


def verdict(ratio: float, paired: dict | None, target: float) -> str:
    """'met', 'missed' or 'undecided' for `ratio` (the figure the target is read from) against
    `target`: met only when the per-round interval lies at or above it too, missed when the
    interval lies below it, undecided otherwise (the interval spans it, or it and `ratio`
    disagree). Without rounds: `ratio` alone."""
    if paired is None:
        return "met" if ratio >= target else "missed"
    low, high = paired["ci95"]
    if ratio >= target and low >= target:
        return "met"
    if high < target:
        return "missed"
    return "undecided"


def interval(paired: dict) -> str:
    """'1.56 [1.54-1.58]': the per-round median and its interval."""
    low, high = paired["ci95"]
    return f"{paired['median']:.2f} [{low:.2f}-{high:.2f}]"
