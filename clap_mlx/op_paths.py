"""Which implementation each op of clap_mlx.ops runs: the compiled kernels, NumPy, or MLX.

Every op has up to three paths: "kernels" (the fused C kernels of `_kernels`, evaluated
inputs, on the host), "numpy" (multi-pass NumPy ufuncs on the host) and "mlx" (MLX's own
ops: lazy, one graph, any device). Which is fastest depends on the CPU class and the shape
(MLX's CPU backend runs transcendental ops one scalar at a time; its matmuls are fast), so:

* `CLAP_MLX_OPS=kernels|numpy|mlx` forces one path for every op ("kernels" means the host
  path for the ops that have no kernel: NumPy);
* `CLAP_MLX_OPS=auto` (the default) picks per op and shape class by timing the paths on
  the first input of that class (the result of that first call is the measured run's): the
  kernels' path unless another is more than 10 % faster, in two measurements on separate
  calls (the next call of that class, in this process or a later one, measures again before
  such a choice is kept; until then the file holds it as "path?"), cached in
  `$CLAP_MLX_CACHE/ops_autotune.json` per CPU model, SIMD variant, library versions, build
  of the compiled kernels and BLAS under MLX's matmuls. On a GPU device auto always picks
  "mlx": a host path would stop the GPU.
* `CLAP_MLX_SIMD=avx512|avx2|baseline` picks the kernel variant (default: the fastest the
  CPU runs), e.g. to test the AVX2 code on an AVX-512 machine.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import mlx.core as mx

from . import _blas

try:
    from . import _kernels
except ImportError:  # built without a C compiler: the NumPy and MLX paths still work
    _kernels = None

PATHS = ("kernels", "numpy", "mlx")
MODES = ("auto", *PATHS)
SIMD_VARIANTS = ("avx512", "avx2", "baseline")
CACHE_FILE = "ops_autotune.json"
# Builds kept per CPU model and SIMD variant in the cache (the most recently saved): a few
# installs sharing one cache do not evict each other, and a checkout rebuilt often does not
# grow the file by an entry per rebuild.
KEEP_BUILDS = 3
# A path slower than this many times the best after a round is not timed again: MLX's
# scalar GELU on a batch-8 tensor takes seconds.
_HOPELESS = 4.0
# The first runner's path (the compiled kernels where an op has them, the fused stage) is
# left only for a path faster by more than this fraction: paths closer than that are equally
# good, and this VM-class noise otherwise flipped such choices between processes (a stage's
# fused-vs-per-op choice moved a batch-1 audio forward by ~15 %).
_MARGIN = 0.10
# Timing rounds: at least _MIN_ROUNDS, up to _MAX_ROUNDS while all of them took less than
# _BUDGET_S (fast ops get more rounds: their single timings are the noisiest).
_MIN_ROUNDS = 3
_MAX_ROUNDS = 7
_BUDGET_S = 0.05

# A path's run of the op: Runner(donate) with donate=False never modifies the inputs. It
# returns the op's array, or a list of them for an op with several outputs.
Runner = Callable[[bool], mx.array | list[mx.array]]


def mode() -> str:
    """The CLAP_MLX_OPS setting (read on every call, so a test or a user can change it)."""
    value = os.environ.get("CLAP_MLX_OPS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"CLAP_MLX_OPS={value!r} is not one of: {', '.join(MODES)}")
    if value == "kernels" and _kernels is None:
        raise ValueError(
            "CLAP_MLX_OPS=kernels, but clap_mlx._kernels is not built (pip install needs a C compiler); "
            f"allowed here: {', '.join(m for m in MODES if m != 'kernels')}"
        )
    return value


def configure_simd(value: str | None) -> None:
    """Make CLAP_MLX_SIMD's variant the active one (None or empty: the fastest the CPU runs)."""
    if not value:
        return
    name = value.strip().lower()
    if name not in SIMD_VARIANTS:
        raise ValueError(f"CLAP_MLX_SIMD={value!r} is not one of: {', '.join(SIMD_VARIANTS)}")
    if _kernels is None:
        raise ValueError(f"CLAP_MLX_SIMD={value!r}, but clap_mlx._kernels is not built (pip install needs a compiler)")
    runnable = _kernels.simd_variants()
    if name not in runnable:
        raise ValueError(f"CLAP_MLX_SIMD={name!r}: this CPU cannot run it; allowed here: {', '.join(runnable)}")
    _kernels.set_simd(name)


def simd() -> str | None:
    """The active kernel variant, None without the compiled kernels."""
    return None if _kernels is None else _kernels.simd()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _kernels_build() -> str:
    """A digest of the compiled kernels' file: a rebuild with changed kernels (a checkout
    updated in place keeps its version number) is measured again."""
    if _kernels is None:
        return "none"
    with open(_kernels.__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def _blas_in_use() -> str:
    """The BLAS under MLX's matmuls (the per-op paths' GEMMs): OpenBLAS and its kernel family
    (OPENBLAS_CORETYPE), or MLX's own."""
    if not _blas.loaded_blas:
        return "mlx's own"
    return f"{Path(_blas.loaded_blas).name} {os.environ.get('OPENBLAS_CORETYPE', 'detected')}"


@functools.cache
def _machine() -> tuple[str, str]:
    # read once: /proc/cpuinfo, package metadata and the kernels' digest take a few ms, an op
    # call must not pay that
    versions = (f"clap-mlx {_version('clap-mlx')} | mlx {_version('mlx')} | kernels {_kernels_build()} | "
                f"blas {_blas_in_use()}")
    return _cpu_model(), versions


def _variant() -> str:
    cpu, _ = _machine()
    return f"{cpu} | simd {simd()} | "


def machine_key() -> str:
    """What a cached choice is valid for: CPU model, kernel variant, library versions, the
    kernels' build and the BLAS the per-op paths' matmuls run on."""
    return _variant() + _machine()[1]


def cache_path() -> Path:
    from .loading import cache_root  # loading imports the towers, which import ops

    return cache_root() / CACHE_FILE


class Autotuner:
    """Per (op, shape class) choice of path, measured once per machine and kept on disk."""

    def __init__(self):
        # reentrant: a composite's timed path may run ops that choose their own paths
        self._lock = threading.RLock()
        self._choices: dict[str, str] | None = None
        self._key = ""
        # op class -> a path that beat the first runner's once, awaiting a second measurement
        # (in this process or a later one: kept in the file as "path?")
        self._pending: dict[str, str] = {}

    def _load(self) -> dict[str, str]:
        key = machine_key()
        if self._choices is None or key != self._key:  # the SIMD variant changed
            try:
                stored = json.loads(cache_path().read_text())
            except (OSError, ValueError):
                stored = {}
            choices = stored.get(key) if isinstance(stored, dict) else None
            choices = {k: v for k, v in (choices or {}).items() if isinstance(v, str)}
            self._choices = {k: v for k, v in choices.items() if v in PATHS}
            self._pending = {k: v[:-1] for k, v in choices.items() if v.endswith("?") and v[:-1] in PATHS}
            self._key = key
        return self._choices

    def _save(self) -> None:
        path = cache_path()
        try:
            stored = json.loads(path.read_text())
            stored = stored if isinstance(stored, dict) else {}
        except (OSError, ValueError):
            stored = {}
        stored.pop(self._key, None)  # re-inserted last: the file lists each variant's builds oldest first
        stored[self._key] = dict(sorted({**{k: f"{v}?" for k, v in self._pending.items()}, **self._choices}.items()))
        variant = _variant()
        builds = [key for key in stored if key.startswith(variant)]
        for key in builds[:-KEEP_BUILDS]:
            del stored[key]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
                json.dump(stored, f, indent=1)
            os.replace(f.name, path)  # atomic: a concurrent reader sees the old or the new file
        except OSError:
            pass  # read-only cache: the choice still holds for this process

    def forget(self) -> None:
        """Drop the in-memory choices (tests; the next call reads the cache file again)."""
        with self._lock:
            self._choices = None
            self._pending.clear()

    def run(
        self, op_class: str, inputs: list[mx.array], runners: dict[str, Runner], warm: str | None = None
    ) -> mx.array:
        """The result of the path chosen for `op_class` among `runners`, timing each on this
        input first (without donating it) if no choice is known: the first runner's path
        unless another is more than _MARGIN faster, in this measurement and in one on a later
        call."""
        with self._lock:
            chosen = self._load().get(op_class)
        if chosen in runners:
            return runners[chosen](True)
        with self._lock:  # one measurement at a time: concurrent ones would skew each other
            choices = self._load()
            mx.eval(inputs)  # their pending graph is not part of any path's time
            if warm is not None:
                mx.eval(runners[warm](False))
            # Rounds over the paths, each path once per round: a load spike from another
            # process hits one run of one path, and the minimum over rounds drops it. The
            # first round may include one-time setup; a path hopelessly slower after it is
            # not run again.
            # one path per distinct runner; a path sharing another's runner gets its timing
            timed = {path: next(p for p in runners if runners[p] is runner) for path, runner in runners.items()}
            timings = {path: float("inf") for path in runners}
            results: dict[str, mx.array] = {}
            alive, spent, rounds = [path for path in runners if timed[path] == path], 0.0, 0
            while alive and rounds < _MAX_ROUNDS and (rounds < _MIN_ROUNDS or spent < _BUDGET_S):
                # every other round in reverse: no path always runs right after another
                # (whose after-effects, e.g. BLAS's threads still spinning, it would pay)
                for path in alive if rounds % 2 == 0 else alive[::-1]:
                    start = time.perf_counter()
                    results[path] = runners[path](False)
                    mx.eval(results[path])
                    elapsed = time.perf_counter() - start
                    timings[path], spent = min(timings[path], elapsed), spent + elapsed
                best = min(timings.values())
                alive = [path for path in alive if timings[path] <= _HOPELESS * best]
                rounds += 1
            first = timed[next(iter(runners))]
            fastest = min((timed[path] for path in runners), key=timings.get)
            chosen = fastest if timings[fastest] < (1 - _MARGIN) * timings[first] else first
            # Leaving the first path takes two measurements that agree: a stolen core or a load
            # spike lasting one whole measurement (~0.1 s; seen on these VMs) slowed the fused
            # kernels 2x and kept a Swin stage per op, ~8 % of every later forward, for good.
            earlier = self._pending.pop(op_class, None)
            if chosen != first and earlier is None:
                self._pending[op_class] = chosen
                self._save()
                return results[chosen]
            if chosen != earlier:
                chosen = first
            choices[op_class] = chosen
            self._save()
            return results[chosen]


AUTOTUNER = Autotuner()


def choose(
    op_class: str, inputs: list[mx.array | None], runners: dict[str, Runner], warm: str | None = None
) -> mx.array:
    """Run `op_class` (an op and its shape class) on the path CLAP_MLX_OPS selects: forced, or
    measured (auto) on `inputs`, the op's arrays. Runners given as the same object for two
    paths are timed once. `warm`: a path run once, untimed, before a measurement (a composite
    whose own ops make their first-use choices then)."""
    setting = mode()
    if setting == "auto":
        if mx.default_device().type == mx.DeviceType.gpu:
            return runners["mlx"](True)
        return AUTOTUNER.run(op_class, [a for a in inputs if a is not None], runners, warm)
    if setting in runners:
        return runners[setting](True)
    return runners["numpy"](True)  # "kernels" for an op without a kernel: its host path


def choose_composite(
    op_class: str, inputs: list[mx.array], fused: Callable[[], mx.array], per_op: Callable[[], mx.array]
) -> mx.array:
    """A fused host composite (a Swin stage, the audio front) against its per-op form: "numpy"
    and "mlx" are both the per-op path, whose ops each choose their own; auto times it once,
    after a first untimed per-op run in which those ops make their choices."""

    def per_op_runner(_donate: bool) -> mx.array:
        return per_op()

    return choose(op_class, inputs, {"kernels": lambda _: fused(), "numpy": per_op_runner, "mlx": per_op_runner}, "numpy")


configure_simd(os.environ.get("CLAP_MLX_SIMD"))
