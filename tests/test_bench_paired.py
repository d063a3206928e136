"""The benchmarks' per-round ratios and the target verdicts the README's performance section prints."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from paired import interval, paired_ratio, verdict  # noqa: E402
from report import ratio_verdict  # noqa: E402


def drifting_rounds(ratio: float, rounds: int = 24) -> tuple[list[float], list[float]]:
    """Two sides whose true ratio is `ratio`, on a machine whose speed moves between rounds: the
    slow spells fall on the first rounds of one side's timings and the last of the other's ranks."""
    speed = np.r_[np.full(rounds // 3, 2.0), np.ones(rounds - rounds // 3)]  # a slow first third
    under = 100.0 * speed
    over = ratio * under
    over[-rounds // 3:] *= 1.6  # and a spell that slows the torch side alone at the end
    return list(over), list(under)


def test_per_round_ratio_cancels_what_slows_both_runs_of_a_round():
    over, under = drifting_rounds(1.5)
    paired = paired_ratio(over, under)
    assert paired["median"] == pytest.approx(1.5)
    assert paired["rounds"] == 24
    medians = float(np.median(over) / np.median(under))
    assert abs(medians - 1.5) > 0.2  # the medians' ratio keeps the drift


def test_interval_narrows_with_consistent_rounds_and_is_reproducible():
    rng = np.random.default_rng(1)
    under = 100.0 * (1 + rng.random(30))  # the machine's speed varies widely ...
    steady = paired_ratio(list(1.6 * under * (1 + 0.01 * rng.standard_normal(30))), list(under))
    noisy = paired_ratio(list(1.6 * under * (1 + 0.2 * rng.standard_normal(30))), list(under))
    low, high = steady["ci95"]
    assert low <= steady["median"] <= high and high - low < 0.03  # ... but each round's ratio does not
    assert noisy["ci95"][1] - noisy["ci95"][0] > 5 * (high - low)
    assert paired_ratio(list(1.6 * under), list(under)) == paired_ratio(list(1.6 * under), list(under))


def test_rounds_must_pair_up():
    with pytest.raises(ValueError, match="one run per side per round, got 3 and 2"):
        paired_ratio([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="got 0 and 0"):
        paired_ratio([], [])


@pytest.mark.parametrize(
    "ratio, ci95, word",
    [
        (1.55, [1.52, 1.60], "met"),
        (1.55, [1.40, 1.70], "undecided"),  # the run cannot place the ratio on either side of 1.5
        (1.45, [1.40, 1.70], "undecided"),
        (1.45, [1.51, 1.60], "undecided"),  # the rounds and the medians/fastest runs disagree
        (1.40, [1.30, 1.49], "missed"),
    ],
)
def test_verdict_needs_the_interval_to_clear_the_target(ratio, ci95, word):
    assert verdict(ratio, {"median": ratio, "ci95": ci95, "rounds": 9}, 1.5) == word


def test_verdict_without_rounds_reads_the_ratio_alone():
    assert verdict(1.5, None, 1.5) == "met"
    assert verdict(1.49, None, 1.5) == "missed"


def workload(name: str, over: list[float], under: list[float]) -> dict:
    times = {"torch": {"median_ms": float(np.median(over)), "min_ms": min(over), "runs_ms": over},
             "mlx": {"median_ms": float(np.median(under)), "min_ms": min(under), "runs_ms": under}}
    return {"workload": name, "times": times,
            "torch_over_mlx": times["torch"]["median_ms"] / times["mlx"]["median_ms"],
            "torch_over_mlx_min": times["torch"]["min_ms"] / times["mlx"]["min_ms"]}


def test_target_line_names_the_workloads_a_run_cannot_decide():
    rng = np.random.default_rng(2)
    under = list(100.0 * (1 + 0.05 * rng.random(12)))
    clear = workload("audio b1", [1.8 * u for u in under], under)
    noisy = workload("audio b8", [u * r for u, r in zip(under, 1.6 + 0.4 * rng.standard_normal(12))], under)
    assert ratio_verdict([clear], 1.5).startswith("met (")
    line = ratio_verdict([clear, noisy], 1.5)
    assert line.startswith("**undecided**")
    assert f"audio b8 {interval(paired_ratio(noisy['times']['torch']['runs_ms'], under))}" in line
    assert "audio b1 " not in line  # a workload that meets the target is not listed
    slow = workload("audio b8", [1.2 * u for u in under], under)
    assert ratio_verdict([clear, slow], 1.5).startswith("**missed**")
