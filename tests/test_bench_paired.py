"""The benchmarks' per-round ratios and the target verdicts the README's performance section prints."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import workers  # noqa: E402
from paired import interval, judge, paired_ratio, target_for, until_decided, verdict  # noqa: E402
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
    low, high = steady["ci"]
    assert low <= steady["median"] <= high and high - low < 0.03  # ... but each round's ratio does not
    assert noisy["ci"][1] - noisy["ci"][0] > 5 * (high - low)
    assert paired_ratio(list(1.6 * under), list(under)) == paired_ratio(list(1.6 * under), list(under))


def test_rounds_must_pair_up():
    with pytest.raises(ValueError, match="one run per side per round, got 3 and 2"):
        paired_ratio([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="got 0 and 0"):
        paired_ratio([], [])


@pytest.mark.parametrize(
    "ratio, ci, word",
    [
        (1.55, [1.52, 1.60], "met"),
        (1.55, [1.40, 1.70], "undecided"),  # the run cannot place the ratio on either side of 1.5
        (1.45, [1.40, 1.70], "undecided"),
        (1.45, [1.51, 1.60], "undecided"),  # the rounds and the medians/fastest runs disagree
        (1.40, [1.30, 1.49], "missed"),
    ],
)
def test_verdict_needs_the_interval_to_clear_the_target(ratio, ci, word):
    assert verdict(ratio, {"median": ratio, "ci": ci, "level": 0.95, "rounds": 9}, 1.5) == word


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


class Machine:
    """Paired rounds of two sides whose true ratio is `ratio`, on a machine whose speed varies
    widely between rounds and each run by `noise` on its own: `more` reveals the next rounds."""

    def __init__(self, ratio: float, noise: float, seed: int, rounds: int = 60):
        rng = np.random.default_rng(seed)
        speed = 100.0 * (1 + rng.random(rounds))
        self.all_under = list(speed * (1 + noise * rng.standard_normal(rounds)))
        self.all_over = list(ratio * speed * (1 + noise * rng.standard_normal(rounds)))
        self.over: list[float] = []
        self.under: list[float] = []
        self.asked: list[int] = []

    def more(self, count: int) -> None:
        self.asked.append(count)
        done = len(self.under)
        self.over += self.all_over[done:done + count]
        self.under += self.all_under[done:done + count]


def test_until_decided_adds_rounds_in_batches_until_the_interval_clears_the_target():
    machine = Machine(1.7, 0.15, seed=3)
    machine.more(9)
    assert judge(machine.over, machine.under, 1.5)[0] == "undecided"  # 9 rounds cannot tell
    decided = until_decided(machine.over, machine.under, 1.5, 9, 45, machine.more)
    assert decided["verdict"] == "met" and 9 < decided["rounds"] < 45
    assert machine.asked[1:] == [9] * (len(machine.asked) - 1) and len(machine.under) == decided["rounds"]
    assert decided["interval_level"] == pytest.approx(0.99)  # 5 looks allowed: 1 - 5 % / 5
    assert judge(machine.over, machine.under, 1.5, decided["interval_level"])[0] == "met"
    assert judge(machine.over, machine.under, 1.5)[0] == "met"  # the narrower 95 % interval agrees


def test_until_decided_stops_at_the_cap_when_the_ratio_sits_on_the_target():
    machine = Machine(1.5, 0.15, seed=4)
    machine.more(9)
    decided = until_decided(machine.over, machine.under, 1.5, 10, 25, machine.more)
    assert decided == {"target": 1.5, "verdict": "undecided", "rounds": 25, "interval_level": pytest.approx(0.9833, abs=1e-4)}
    assert machine.asked[1:] == [10, 6]  # the last batch stops at the cap


def test_until_decided_does_not_add_rounds_to_a_decided_run():
    machine = Machine(2.0, 0.02, seed=5)
    machine.more(9)
    decided = until_decided(machine.over, machine.under, 1.5, 9, 45, machine.more)
    assert decided["verdict"] == "met" and decided["rounds"] == 9 and machine.asked == [9]


def test_until_decided_keeps_wrong_verdicts_rare_over_its_looks():
    """A ratio just under the target, noisy rounds, up to 5 looks: runs that stop on "met" stay
    within the 5 % one 95 % interval allows (each look is the first chance of a wrong stop)."""
    runs, wrong = 80, 0
    for seed in range(runs):
        machine = Machine(1.48, 0.2, seed=100 + seed)
        machine.more(9)
        wrong += until_decided(machine.over, machine.under, 1.5, 9, 45, machine.more)["verdict"] == "met"
    assert wrong <= 0.05 * runs


class Side:
    """A benchmark worker that answers every run in `seconds` and logs who ran when."""

    def __init__(self, name: str, seconds: float, log: list[str]):
        self.name, self.seconds, self.log = name, seconds, log

    def ask(self, *words: str) -> dict:
        self.log.append(self.name)
        return {"seconds": self.seconds}


def test_rounds_interleave_the_sides_and_run_on_to_min_seconds(monkeypatch):
    monkeypatch.setattr(workers, "SETTLE_S", 0.0)
    log: list[str] = []
    sides = {"mlx": Side("mlx", 0.25, log), "torch": Side("torch", 0.5, log)}
    times = workers.interleaved_rounds(sides, 0, runs=3, min_seconds=2.0, max_runs=15)
    assert times == {"mlx": [0.25] * 8, "torch": [0.5] * 8}  # mlx needed 8 runs for 2 s
    assert log == ["mlx", "torch"] * 9  # a warm-up each, then strict turns
    workers.more_rounds(sides, 0, times, 2)
    assert len(times["mlx"]) == len(times["torch"]) == 10 and log[-4:] == ["mlx", "torch"] * 2
    assert len(workers.interleaved_rounds(sides, 0, runs=3, min_seconds=100.0, max_runs=5)["mlx"]) == 5


def test_targets_are_the_issues_and_the_report_reads_a_run_at_its_looks_level():
    assert target_for("audio b8 (25 s, is_longer=True)") == 1.5 and target_for("text 1 label") == 1.0
    assert target_for("text 32 labels") is None and target_for("features 10 s") is None
    machine = Machine(1.65, 0.15, seed=6)
    machine.more(18)
    assert judge(machine.over, machine.under, 1.5)[0] == "met"
    assert judge(machine.over, machine.under, 1.5, 0.999)[0] == "undecided"
    run = workload("audio b1", machine.over, machine.under)
    assert ratio_verdict([run], 1.5).startswith("met (")
    run["until_decided"] = {"target": 1.5, "verdict": "undecided", "rounds": 18, "interval_level": 0.999}
    line = ratio_verdict([run], 1.5)
    assert line.startswith("**undecided**") and "(99.9 %)" in line


def test_too_few_rounds_decide_nothing():
    over, under = [180.0, 175.0, 190.0], [100.0, 101.0, 99.0]  # 1.8x in each of 3 rounds
    assert judge(over, under, 1.5)[0] == "undecided"  # 3 rounds above the target: chance 1 in 8
    assert judge(over * 2, under * 2, 1.5)[0] == "met"  # 6 rounds: 1 in 32, inside 95 %'s 1 in 20
    assert judge(over * 2, under * 2, 1.5, 0.99)[0] == "undecided"
    assert judge(over * 3, under * 3, 1.5, 0.99)[0] == "met"
