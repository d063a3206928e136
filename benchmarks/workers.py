"""Benchmark worker processes: one per side, driven over stdin/stdout in interleaved rounds.

Standard library and NumPy only (no clap_mlx), so a worker can run any clap_mlx revision.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident set size of this process. Linux: VmHWM, which starts afresh at exec
    (ru_maxrss would carry over the parent's peak into a benchmark subprocess)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def serve_workloads(fns: dict[str, Callable[[], np.ndarray]], names: tuple[str, ...], ready: dict | None = None,
          commands: dict[str, Callable[[Callable | None, list[str]], dict]] | None = None) -> None:
    """Answer `run I` (seconds), `save I PATH`, `rss` and any of `commands` (given workload I's
    function, or None, and the words after I) on stdin, one JSON line each, I indexing `names`."""
    print(json.dumps({"ready": True, "workloads": list(fns), "peak_rss_after_load_mb": peak_rss_mb(), **(ready or {})}),
          flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        fn = fns.get(names[int(args[0])]) if args else None
        if command == "run":
            reply = {"seconds": time_once(fn)}
        elif command == "save":
            np.save(args[1], fn())
            reply = {}
        elif commands and command in commands:
            reply = commands[command](fn, args[1:])
        else:
            reply = {"peak_rss_mb": peak_rss_mb()}
        print(json.dumps(reply), flush=True)


class Worker:
    """A worker process started from `argv`; `loaded` is its ready message."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.loaded = self._reply()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with {self.process.wait()}")
        return json.loads(line)

    def ask(self, *words: str) -> dict:
        self.process.stdin.write(" ".join(words) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


# BLAS/OpenMP pool threads spin on after a call (OpenBLAS for ~2^28 cycles, onnxruntime's until
# told not to): each timed run starts after this pause, on cores the previous side has left.
SETTLE_S = 0.3


def interleaved_rounds(
    workers: dict[str, Worker], index: int, runs: int, min_seconds: float = 0.0, max_runs: int | None = None
) -> dict[str, list[float]]:
    """Seconds per run of workload `index` on each worker after one warm-up each, the workers
    taking turns every round so load on a shared machine hits them alike: `runs` rounds, then
    more (up to `max_runs`) until every side has run `min_seconds` in all. A fast workload's
    median and fastest run otherwise rest on a few samples of this VM's minute-to-minute load."""
    for worker in workers.values():
        worker.ask("run", str(index))
    times: dict[str, list[float]] = {side: [] for side in workers}
    more_rounds(workers, index, times, runs)
    for _ in range(runs, max_runs or runs):
        if min(sum(t) for t in times.values()) >= min_seconds:
            break
        more_rounds(workers, index, times, 1)
    return times


def more_rounds(workers: dict[str, Worker], index: int, times: dict[str, list[float]], count: int) -> None:
    """`count` more interleaved rounds of workload `index`, each side's seconds appended to `times`."""
    for _ in range(count):
        for side, worker in workers.items():
            time.sleep(SETTLE_S)
            times[side].append(worker.ask("run", str(index))["seconds"])
