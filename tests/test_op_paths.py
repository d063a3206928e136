"""CLAP_MLX_OPS / CLAP_MLX_SIMD and the auto path's per-machine cache (clap_mlx.op_paths)."""

import json
import os
import subprocess
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from clap_mlx import host_ops, linear_ops, op_paths, ops


@pytest.fixture
def auto(monkeypatch, tmp_path):
    """auto mode with an empty cache folder; the in-memory choices are dropped before and after."""
    monkeypatch.setenv("CLAP_MLX_OPS", "auto")
    monkeypatch.setenv("CLAP_MLX_CACHE", str(tmp_path))
    op_paths.AUTOTUNER.forget()
    yield tmp_path / op_paths.CACHE_FILE
    op_paths.AUTOTUNER.forget()


def test_unknown_ops_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CLAP_MLX_OPS", "fastest")
    with pytest.raises(ValueError, match="CLAP_MLX_OPS='fastest' is not one of: auto, kernels, numpy, mlx"):
        ops.gelu(mx.ones((2, 3)))


def test_forcing_the_kernels_without_them_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CLAP_MLX_OPS", "kernels")
    monkeypatch.setattr(op_paths, "_kernels", None)
    with pytest.raises(ValueError, match=r"CLAP_MLX_OPS=kernels, but clap_mlx._kernels is not built.*auto, numpy, mlx"):
        ops.gelu(mx.ones((2, 3)))


def test_unknown_or_unrunnable_simd_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="CLAP_MLX_SIMD='sse9' is not one of: avx512, avx2, baseline"):
        op_paths.configure_simd("sse9")
    runnable = ops._kernels.simd_variants()
    unrunnable = [v for v in op_paths.SIMD_VARIANTS if v not in runnable]
    if not unrunnable:
        pytest.skip("this CPU runs every SIMD variant")
    with pytest.raises(ValueError, match=f"CLAP_MLX_SIMD='{unrunnable[0]}': this CPU cannot run it; allowed here: "):
        op_paths.configure_simd(unrunnable[0])


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_simd_setting_selects_the_variant_at_import():
    # the slowest variant every CPU runs, chosen over the default (the fastest)
    done = run_python("from clap_mlx import op_paths; print(op_paths.simd())", CLAP_MLX_SIMD="baseline")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "baseline"
    done = run_python("import clap_mlx", CLAP_MLX_SIMD="neon9")
    assert done.returncode != 0
    assert "CLAP_MLX_SIMD='neon9' is not one of: avx512, avx2, baseline" in done.stderr


def test_every_variant_the_cpu_runs_is_listed_fastest_first():
    runnable = ops._kernels.simd_variants()
    assert runnable[-1] == "baseline"
    assert list(runnable) == [v for v in op_paths.SIMD_VARIANTS if v in runnable]
    assert ops._kernels.simd() == runnable[0]  # the default (no CLAP_MLX_SIMD in the test run)


def test_auto_measures_once_per_shape_class_and_caches_it_per_machine(auto, monkeypatch):
    x = mx.array(np.random.default_rng(0).standard_normal((64, 384)).astype(np.float32))
    expected = np.asarray(ops.gelu(x, None))  # measured: the result is the fastest path's run
    ops.gelu(x, None)  # a choice that left the kernels' path is measured again before it is kept
    stored = json.loads(auto.read_text())
    choices = stored[op_paths.machine_key()]
    assert choices["gelu 384 x ~64"] in op_paths.PATHS
    # a second call and a fresh process state (the file only) reuse the choice: no timing
    monkeypatch.setattr(op_paths.time, "perf_counter", lambda: pytest.fail("measured again"))
    np.testing.assert_allclose(np.asarray(ops.gelu(x)), expected, atol=1e-6)
    op_paths.AUTOTUNER.forget()
    np.testing.assert_allclose(np.asarray(ops.gelu(x)), expected, atol=1e-6)


def test_auto_follows_the_cached_choice(auto, monkeypatch):
    x = mx.array(np.random.default_rng(1).standard_normal((8, 100)).astype(np.float32))
    auto.write_text(json.dumps({op_paths.machine_key(): {"sigmoid 100 x ~8": "numpy"}, "other machine": {}}))
    calls = []
    block = host_ops.sigmoid_block
    monkeypatch.setattr(host_ops, "sigmoid_block", lambda *a: calls.append(1) or block(*a))
    got = np.asarray(ops.sigmoid(x))
    assert calls, "the cached choice (numpy) was not followed"
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-np.asarray(x, np.float64))), atol=2e-7)
    # a new choice is added next to the others, other machines' entries are kept
    ops.tanh(x)
    ops.tanh(x)  # kept by this second call at the latest (a choice leaving the kernels is measured twice)
    stored = json.loads(auto.read_text())
    assert set(stored) == {op_paths.machine_key(), "other machine"}
    assert set(stored[op_paths.machine_key()]) == {"sigmoid 100 x ~8", "tanh 100 x ~8"}


def test_auto_never_donates_an_input_while_it_measures(auto):
    # every path runs on the same input while auto times them: none may write into it
    x = np.random.default_rng(2).standard_normal((4, 64, 64)).astype(np.float32)
    source = mx.array(x)
    ops.softmax(source, scale=0.5, donate=True)
    np.testing.assert_array_equal(np.asarray(source), x)


def test_auto_times_and_returns_every_output_of_an_op_with_several(auto):
    # the q/k/v projections as one op: a path's time and result are all its outputs
    layers = [nn.Linear(32, 16), nn.Linear(32, 16), nn.Linear(32, 8, bias=False)]
    x = np.random.default_rng(3).standard_normal((8, 32)).astype(np.float32)
    outputs = linear_ops.linears(mx.array(x), layers)
    for layer, got in zip(layers, outputs, strict=True):
        expected = x @ np.asarray(layer.weight).T + (np.asarray(layer.bias) if "bias" in layer else 0.0)
        np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
    assert json.loads(auto.read_text())[op_paths.machine_key()]["linear 32 -> 16+16+8 x ~8 bias"] in op_paths.PATHS


def test_a_gpu_device_always_takes_the_mlx_path_in_auto(auto, monkeypatch):
    monkeypatch.setattr(op_paths.mx, "default_device", lambda: mx.Device(mx.gpu))
    monkeypatch.setattr(host_ops, "rows_view", lambda x: pytest.fail("host path on a GPU device"))
    assert ops.gelu(mx.ones((2, 3))).shape == (2, 3)
    assert not auto.exists()  # nothing measured


def test_auto_times_a_runner_shared_by_two_paths_once_after_the_warm_path(auto, monkeypatch):
    # a fake clock, each run 1 s: with real timings of such tiny runners a hiccup made one
    # look hopeless after a round (it was then not timed again)
    clock = [0.0]
    monkeypatch.setattr(op_paths.time, "perf_counter", lambda: clock[0])
    calls = []

    def runner(name, value):
        return lambda: calls.append(name) or clock.__setitem__(0, clock[0] + 1.0) or mx.full((2,), value)

    # a fused composite: its per-op form is both the "numpy" and the "mlx" path
    op_paths.choose_composite("composite 2", [mx.ones((2,))], runner("kernels", 0.0), runner("shared", 1.0))
    assert calls[0] == "shared"  # the untimed warm run comes first
    timed = calls[1:]
    assert timed.count("kernels") == timed.count("shared") >= 3  # one timing per round each
    assert json.loads(auto.read_text())[op_paths.machine_key()]["composite 2"] in ("kernels", "numpy")


def fake_clock_runners(monkeypatch) -> tuple[dict, dict[str, float]]:
    """Runners on a fake clock that each run advances by its path's time: kernels 1 s, mlx 9 s,
    numpy what the test sets between calls. Each returns its path's mark (MARKS)."""
    clock = [0.0]
    seconds = {"kernels": 1.0, "numpy": 1.0, "mlx": 9.0}
    monkeypatch.setattr(op_paths.time, "perf_counter", lambda: clock[0])

    def runner(path):
        return lambda d: clock.__setitem__(0, clock[0] + seconds[path]) or mx.full((2,), MARKS[path])

    return {path: runner(path) for path in seconds}, seconds


MARKS = {"kernels": 0.0, "numpy": 1.0, "mlx": 2.0}


def run_marks(runners: dict, op_class: str) -> list[float]:
    return np.asarray(op_paths.choose(op_class, [mx.ones((2,))], runners)).tolist()


@pytest.mark.parametrize(("numpy_time", "chosen"), [(0.95, "kernels"), (1.05, "kernels"), (0.80, "numpy")])
def test_auto_leaves_the_first_path_only_for_a_clearly_faster_one(auto, monkeypatch, numpy_time, chosen):
    # within the margin, noise must not flip the choice away from the kernels' path
    runners, seconds = fake_clock_runners(monkeypatch)
    seconds["numpy"] = numpy_time
    for _ in range(2):  # a path that beat the first one is kept after a second measurement
        assert run_marks(runners, "timed 2") == [MARKS[chosen]] * 2  # the chosen path's own result
    assert json.loads(auto.read_text())[op_paths.machine_key()]["timed 2"] == chosen


def test_auto_keeps_a_path_that_beat_the_first_only_when_a_later_measurement_agrees(auto, monkeypatch):
    # a stolen core during one whole measurement makes the kernels look slow once: that alone
    # must not fix the slower path on this machine
    runners, seconds = fake_clock_runners(monkeypatch)

    def stored() -> dict:
        return json.loads(auto.read_text())[op_paths.machine_key()]

    seconds["numpy"] = 0.5
    assert run_marks(runners, "timed 3") == [MARKS["numpy"]] * 2
    assert stored() == {"timed 3": "numpy?"}  # held until a second measurement
    seconds["numpy"] = 1.0  # the second measurement disagrees: the first path is kept
    assert run_marks(runners, "timed 3") == [MARKS["kernels"]] * 2
    assert stored() == {"timed 3": "kernels"}
    # two agreeing measurements keep the faster path, the second in a later process (a one-shot
    # CLI call measures each class once); then it runs unmeasured
    seconds["numpy"] = 0.5
    run_marks(runners, "timed 4")
    op_paths.AUTOTUNER.forget()  # a new process: the file alone carries the first measurement
    assert run_marks(runners, "timed 4") == [MARKS["numpy"]] * 2
    assert stored() == {"timed 3": "kernels", "timed 4": "numpy"}
    monkeypatch.setattr(op_paths.time, "perf_counter", lambda: pytest.fail("measured again"))
    op_paths.AUTOTUNER.forget()
    assert run_marks(runners, "timed 4") == [MARKS["numpy"]] * 2


def test_a_timed_path_may_run_ops_that_choose_their_own(auto):
    # a composite's path (e.g. a Swin stage per op) calls ops that measure on first use
    x = mx.array(np.random.default_rng(4).standard_normal((16, 40)).astype(np.float32))
    runners = {"kernels": lambda d: ops.gelu(x), "numpy": lambda d: ops.tanh(x), "mlx": lambda d: ops.sigmoid(x)}
    for _ in range(2):  # every choice is kept by the second call
        op_paths.choose("composite 40", [x], runners)
    chosen = json.loads(auto.read_text())[op_paths.machine_key()]
    assert {"composite 40", "gelu 40 x ~16", "tanh 40 x ~16"} <= set(chosen)


def test_the_cache_keeps_the_last_saved_builds_of_each_variant(auto, monkeypatch):
    """A checkout rebuilt often must not grow the cache by an entry per build; other variants
    and machines are kept, and a build that saves again counts as recent."""
    monkeypatch.setattr(op_paths, "KEEP_BUILDS", 3)
    here = op_paths.machine_key()
    variant = op_paths._variant()
    olds = [f"{variant}clap-mlx 0.0.{i} | mlx 0 | kernels old{i}" for i in range(3)]
    other_variant = variant.replace(f"simd {op_paths.simd()}", "simd other")
    stored = {here: {"sigmoid 2 x ~1": "numpy"}, **{key: {} for key in olds}, other_variant: {}, "other machine": {}}
    auto.write_text(json.dumps(stored))
    for _ in range(2):  # equal runners: a noisy first measurement may need the second to keep a choice
        op_paths.choose("timed 2", [mx.ones((2,))], {path: (lambda d: mx.ones((2,))) for path in op_paths.PATHS})
    saved = json.loads(auto.read_text())
    assert list(saved) == [olds[1], olds[2], other_variant, "other machine", here]  # olds[0]: the least recent
    assert set(saved[here]) == {"sigmoid 2 x ~1", "timed 2"}


def test_cached_choices_belong_to_one_build_of_the_kernels(monkeypatch, tmp_path):
    """A checkout rebuilt in place keeps its version number: the kernels' own build tells its
    cached choices apart, so changed kernels are measured again."""

    class Build:
        def __init__(self, path, content: bytes):
            path.write_bytes(content)
            self.__file__ = str(path)

        def simd(self):
            return "avx2"

    keys = []
    for name, content in (("a.so", b"kernels one"), ("b.so", b"kernels two"), ("c.so", b"kernels one")):
        monkeypatch.setattr(op_paths, "_kernels", Build(tmp_path / name, content))
        op_paths._machine.cache_clear()
        keys.append(op_paths.machine_key())
    op_paths._machine.cache_clear()  # the real build's key again for the tests after this one
    assert keys[0] != keys[1] and keys[0] == keys[2]
    assert all(key.startswith(f"{op_paths._cpu_model()} | simd avx2 | clap-mlx ") for key in keys)


def test_cached_choices_belong_to_one_blas(monkeypatch):
    """The per-op paths' matmuls run on the BLAS under MLX: a Swin stage measured per op on
    OpenBLAS's SkylakeX kernels says nothing of its Haswell kernels or of MLX's own BLAS."""
    keys = []
    for loaded, coretype in (("/usr/lib/libopenblas.so.0", "SkylakeX"), ("/usr/lib/libopenblas.so.0", "Haswell"),
                             (None, "Haswell"), ("/usr/lib/libopenblas.so.0", "SkylakeX")):
        monkeypatch.setattr(op_paths._blas, "loaded_blas", loaded)
        monkeypatch.setenv("OPENBLAS_CORETYPE", coretype)
        op_paths._machine.cache_clear()
        keys.append(op_paths.machine_key())
    op_paths._machine.cache_clear()  # the real BLAS's key again for the tests after this one
    assert len(set(keys[:3])) == 3 and keys[0] == keys[3]
    assert keys[0].endswith("| blas libopenblas.so.0 SkylakeX") and keys[2].endswith("| blas mlx's own")
