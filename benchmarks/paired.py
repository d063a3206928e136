"""Ratios from interleaved rounds, each round's two runs taken as a pair.

The two sides of a round run 0.3 s apart, so a change in the VM's speed between minutes slows
both runs of a round alike and cancels in that round's ratio; the ratio of the two medians
keeps it whenever the slow minutes fall on different ranks of the two sides (the AVX2 EPYC's
batch-1 25-s runs: medians' ratio 1.31, per-round ratios' median 1.40). A bootstrap interval of
the per-round median says how far the run pins the ratio down: when it spans a target, the run
cannot tell which side of the target the ratio lies; `until_decided` adds rounds until it can.
Plain NumPy: report.py imports this without clap_mlx.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

RESAMPLES = 10_000
SEED = 0  # a fixed resampling seed: the same runs always give the same interval
LEVEL = 0.95

# Issue 13's targets for torch / clap_mlx: every audio tower workload, and one label.
AUDIO_TARGET, TEXT_TARGET = 1.5, 1.0


def target_for(workload: str) -> float | None:
    """The torch / clap_mlx target a bench_model workload is judged by, if it has one."""
    if workload.startswith("audio"):
        return AUDIO_TARGET
    return TEXT_TARGET if workload == "text 1 label" else None


def paired_ratio(over: list[float], under: list[float], level: float = LEVEL) -> dict:
    """Median of over[i] / under[i] over the rounds, with its percentile-bootstrap interval.

    `over` and `under` are one entry per round, in round order (a side's `runs_ms`)."""
    if len(over) != len(under) or not over:
        raise ValueError(f"paired runs need one run per side per round, got {len(over)} and {len(under)}")
    ratios = np.asarray(over, dtype=np.float64) / np.asarray(under, dtype=np.float64)
    picks = np.random.default_rng(SEED).integers(0, ratios.size, size=(RESAMPLES, ratios.size))
    tail = 50 * (1 - level)
    low, high = np.percentile(np.median(ratios[picks], axis=1), [tail, 100 - tail])
    return {"median": float(np.median(ratios)), "ci": [float(low), float(high)], "level": level,
            "rounds": int(ratios.size)}


def verdict(ratio: float, paired: dict | None, target: float) -> str:
    """'met', 'missed' or 'undecided' for `ratio` (the figure the target is read from) against
    `target`: met only when the per-round interval lies at or above it too, missed when the
    interval lies below it, undecided otherwise (the interval spans it, or it and `ratio`
    disagree). Without rounds: `ratio` alone."""
    if paired is None:
        return "met" if ratio >= target else "missed"
    low, high = paired["ci"]
    if ratio >= target and low >= target:
        return "met"
    if high < target:
        return "missed"
    return "undecided"


def judge(over: list[float], under: list[float], target: float, level: float = LEVEL) -> tuple[str, dict]:
    """The verdict of paired runs against `target`, read from the lower of the medians' and the
    fastest runs' ratio (a load spike on one side moves one of them) and the per-round interval
    at `level`, undecided on too few rounds for that level; and that interval."""
    ratio = min(float(np.median(over) / np.median(under)), min(over) / min(under))
    paired = paired_ratio(over, under, level)
    if paired["rounds"] < fewest_rounds(level):
        return "undecided", paired
    return verdict(ratio, paired, target), paired


def fewest_rounds(level: float) -> int:
    """Rounds below which no interval of the median at `level` means anything: with n rounds
    all on one side of the true median with chance 2 * 0.5**n, a bootstrap of 3 rounds all
    above the target "clears" it (a sign test's bound: 6 rounds at 95 %, 8 at 99 %)."""
    return math.ceil(math.log2(2 / (1 - level)))


def interval(paired: dict) -> str:
    """'1.56 [1.54-1.58]': the per-round median and its interval (its level when not 95 %)."""
    low, high = paired["ci"]
    level = "" if paired["level"] == LEVEL else f" ({100 * paired['level']:.1f} %)"
    return f"{paired['median']:.2f} [{low:.2f}-{high:.2f}]{level}"


def until_decided(over: list[float], under: list[float], target: float, batch: int, max_rounds: int,
                  more: Callable[[int], None]) -> dict:
    """Adds rounds, `batch` at a time through `more(count)` (which appends a run to `over` and one
    to `under` per round), while the rounds cannot tell which side of `target` the ratio lies, up
    to `max_rounds` rounds in all. Every look at the rounds is a chance to stop on a wrong
    verdict, so each reads an interval of level 1 - 5 % / looks, the looks this cap allows
    (Bonferroni): the chance that any look decides wrongly stays within one 95 % interval's."""
    looks = 1 + max(0, math.ceil((max_rounds - len(under)) / batch))
    level = 1 - (1 - LEVEL) / looks
    while True:
        word, _ = judge(over, under, target, level)
        if word != "undecided" or len(under) >= max_rounds:
            return {"target": target, "verdict": word, "rounds": len(under), "interval_level": level}
        more(min(batch, max_rounds - len(under)))
