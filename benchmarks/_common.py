"""Shared benchmark helpers: machine description, timing, tables and JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
sys.path.insert(0, str(ROOT))  # run as `python benchmarks/x.py` from a checkout

# BENCH_ISA=avx2 on an AVX-512 machine stands in for an AVX2-only CPU: every side must run AVX2
# code, not only clap_mlx's kernels (CLAP_MLX_SIMD alone leaves torch's MKL GEMMs on AVX-512).
# Each library's own switch, set before any of them loads; onnxruntime has none (see bench_model).
ISA_SWITCHES = {
    "avx2": {
        "CLAP_MLX_SIMD": "avx2",  # clap_mlx's kernels
        "OPENBLAS_CORETYPE": "Haswell",  # MLX's matmuls and NumPy's bundled OpenBLAS
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's own loops
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # torch's GEMMs
        "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's oneDNN convolutions
        "ATEN_CPU_CAPABILITY": "avx2",  # torch's vectorised elementwise kernels
    },
}
BENCH_ISA = os.environ.get("BENCH_ISA", "").strip().lower()
if BENCH_ISA:
    if BENCH_ISA not in ISA_SWITCHES:
        raise SystemExit(f"BENCH_ISA={BENCH_ISA!r}: allowed values are {', '.join(ISA_SWITCHES)}")
    clash = {k: os.environ[k] for k, v in ISA_SWITCHES[BENCH_ISA].items() if os.environ.get(k, v) != v}
    if clash:
        raise SystemExit(f"BENCH_ISA={BENCH_ISA} sets {', '.join(clash)}, already set otherwise: {clash}")
    os.environ.update(ISA_SWITCHES[BENCH_ISA])

from clap_mlx import _blas, op_paths  # noqa: E402  (every benchmark imports this module before mlx)
from workers import peak_rss_mb, time_once  # noqa: E402, F401  (re-exported for the benchmarks)

CHECKPOINT = CACHE / "clap-htsat-fused"
LOAD_AT_START = os.getloadavg()  # other processes' load skews every timing: record it


def _cpu_ticks() -> list[int] | None:
    """/proc/stat's machine-wide CPU time (user, nice, system, idle, iowait, irq, softirq, steal), or None."""
    try:
        with open("/proc/stat") as stat:
            return [int(t) for t in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


TICKS_AT_START = _cpu_ticks()


def cpu_time_shares() -> dict | None:
    """Shares of the machine's CPU time since this process started: busy (every process of this
    machine), and stolen, the time the hypervisor ran other guests on our vCPUs. A VM whose run
    was slow and noisy shows whether its host took the cores (steal) or another process did."""
    end = _cpu_ticks()
    if TICKS_AT_START is None or end is None or len(end) < 8:
        return None
    spent = [e - s for s, e in zip(TICKS_AT_START, end)]
    total = sum(spent) or 1
    idle = spent[3] + spent[4]
    return {"busy_percent": 100 * (total - idle - spent[7]) / total, "steal_percent": 100 * spent[7] / total}


def full_checkpoint() -> Path:
    """The full-size random-weight checkpoint, generated once into benchmarks/.cache."""
    if not (CHECKPOINT / "config.json").is_file():
        from clap_mlx.testing import make_checkpoint

        print(f"generating the full-size random checkpoint in {CHECKPOINT} (about a minute)...")
        make_checkpoint(CHECKPOINT, size="full")
    return CHECKPOINT


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpuinfo() -> tuple[str, list[str]]:
    """CPU model name and feature flags from /proc/cpuinfo (empty where unavailable)."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, flags


def cpu_topology(cpu: Path = Path("/sys/devices/system/cpu/cpu0")) -> dict | None:
    """Hardware threads per core and cache sizes as the kernel reports them for CPU 0 (Linux
    /sys): two vCPUs that are one core's SMT siblings share its FMA units, which halves what
    the second thread of a forward can add; None where /sys does not say."""
    try:
        siblings = (cpu / "topology/thread_siblings_list").read_text().strip()
        caches = {}
        for index in sorted((cpu / "cache").glob("index*")):
            kind = (index / "type").read_text().strip()
            name = f"L{(index / 'level').read_text().strip()}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
            caches[name] = (index / "size").read_text().strip()
    except OSError:
        return None
    threads = sum(int(b) - int(a) + 1 if b else 1 for a, _, b in (part.partition("-") for part in siblings.split(",")))
    return {"threads_per_core": threads, "caches": caches}


def cpu_class() -> str:
    """What a speed result is valid for: "avx512", "avx2", else the architecture (e.g. "aarch64").
    A kernel variant forced below the CPU's own (CLAP_MLX_SIMD) is its own class, e.g.
    "avx512-simd-avx2", so its numbers never stand in for the machine's default path; every side
    restricted (BENCH_ISA) is "avx512-as-avx2"."""
    flags = set(_cpuinfo()[1])
    name = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else platform.machine().lower()
    if BENCH_ISA:
        if name != "avx512":
            raise SystemExit(f"BENCH_ISA={BENCH_ISA} restricts an AVX-512 CPU; this one is {name}: run without it")
        return f"{name}-as-{BENCH_ISA}"
    forced = os.environ.get("CLAP_MLX_SIMD", "").strip().lower()
    return f"{name}-simd-{forced}" if forced and forced != name else name


def results_dir() -> Path:
    """benchmarks/results/<cpu class>: each CPU class keeps its own results side by side."""
    return RESULTS / cpu_class()


def git_commit() -> str | None:
    """The checkout's commit (with "+changes" when its code differs from it; results files left
    out, a run rewrites them, and so is prose, edited while a run goes on): which code a result
    measured."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results", ":!*.md")
        return git("rev-parse", "--short", "HEAD") + ("+changes" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout


def machine_info() -> dict:
    model, flags = _cpuinfo()
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return {
        "cpu": model or platform.processor(),
        "cpu_class": cpu_class(),
        "cores": os.cpu_count(),
        "topology": cpu_topology(),
        "simd_flags": simd,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mlx": _version("mlx"),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "onnxruntime": _version("onnxruntime"),
        "openblas_loaded": _blas.loaded_blas,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "kernel_simd": op_paths.simd(),  # the clap_mlx.ops kernel variant in use
        "ops_mode": op_paths.mode(),  # CLAP_MLX_OPS: auto, kernels, numpy or mlx
        "git_commit": git_commit(),
        "isa_switches": ISA_SWITCHES.get(BENCH_ISA),  # every side held to this ISA (BENCH_ISA)
        "load_average_at_start": LOAD_AT_START,
        "load_average_at_end": os.getloadavg(),
        "cpu_time_during_run": cpu_time_shares(),
    }


def interleaved(candidates: dict[str, Callable[[], object]], runs: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per run of each candidate, alternating candidates each round so that load
    changes on a shared machine hit all of them alike."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, fn in candidates.items():
            times[name].append(time_once(fn))
    return times


def summary(seconds: list[float]) -> dict:
    return {
        "median_ms": 1e3 * statistics.median(seconds),
        "min_ms": 1e3 * min(seconds),
        "runs_ms": [round(1e3 * s, 3) for s in seconds],
    }


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def update_results(name: str, key: str, row: dict) -> Path:
    """Replaces one row of an existing results file (a row measured on its own carries its own machine)."""
    path = results_dir() / f"{name}.json"
    payload = json.loads(path.read_text())
    payload[key] = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **row}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nupdated {key} in {path.relative_to(ROOT)}")
    return path


def write_results(name: str, results: dict) -> Path:
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    payload = {"benchmark": name, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine_info(), **results}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path
