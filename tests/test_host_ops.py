"""The row splits across the cores: host_ops.split_rows (every host kernel path) and the
compiled kernels' own helper team (attention and the fused Swin stages, `unit` > 0)."""

import os
import signal
import threading
import time

import mlx.core as mx
import numpy as np
import pytest

from clap_mlx import host_ops, ops


def record_ranges():
    ranges, lock = [], threading.Lock()

    def work(start: int, stop: int) -> None:
        with lock:
            ranges.append((start, stop, threading.get_ident()))

    return ranges, work


def covered(ranges) -> list[int]:
    return sorted(row for start, stop, _ in ranges for row in range(start, stop))


@pytest.mark.parametrize("rows", [1, 5, 1000])
def test_every_row_once(rows):
    ranges, work = record_ranges()
    host_ops.split_rows(work, rows, host_ops.PARALLEL_MIN_ELEMENTS)
    assert covered(ranges) == list(range(rows))
    assert all(start < stop for start, stop, _ in ranges)


def test_small_work_stays_on_the_calling_thread():
    ranges, work = record_ranges()
    host_ops.split_rows(work, 1000, host_ops.PARALLEL_MIN_ELEMENTS - 1)
    assert ranges == [(0, 1000, threading.get_ident())]


@pytest.mark.skipif(host_ops._pool is None, reason="one core: split_rows never hands work to a helper thread")
def test_a_busy_helper_leaves_its_chunks_to_the_caller():
    # The helper threads are all blocked, so the calling thread takes every chunk and
    # returns without waiting for them.
    release = threading.Event()
    blockers = [host_ops._pool.submit(release.wait) for _ in range(host_ops._WORKERS - 1)]
    try:
        ranges, work = record_ranges()
        host_ops.split_rows(work, 1000, host_ops.PARALLEL_MIN_ELEMENTS)
        assert covered(ranges) == list(range(1000))
        assert {thread for *_, thread in ranges} == {threading.get_ident()}
        assert len(ranges) == host_ops._WORKERS * host_ops.CHUNKS_PER_CORE
    finally:
        release.set()
        for blocker in blockers:
            blocker.result()


def split_kernel_calls(rng):
    """Each split binding as call(unit) -> its output, on random inputs (dims 32, hidden 128)."""
    from clap_mlx.swin_fused import pack_panels

    kernels, rows, dims, hidden = ops._kernels, 200, 32, 128

    def floats(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def packed(out_dims, in_dims):
        return np.asarray(pack_panels(mx.array(floats(out_dims, in_dims))))

    x = floats(rows, dims)
    weights = (floats(dims), floats(dims), packed(3 * dims, dims), floats(3 * dims), packed(dims, dims), floats(dims),
               floats(dims), floats(dims), packed(hidden, dims), floats(hidden), packed(dims, hidden), floats(dims))
    attended = floats(rows, dims)
    windows = np.arange(128, dtype=np.int32).reshape(2, 64)  # two items of two 64-token windows
    qkv = floats(2 * 128, 3 * 64)

    def norm_dense(unit):
        y = np.zeros((rows, 3 * dims), np.float32)
        kernels.norm_dense(x, *weights[:2], 1e-5, *weights[2:4], y, rows, dims, 3 * dims, 0, rows, unit)
        return y

    def swin_mlp(unit):
        stream = x.copy()
        kernels.swin_mlp(weights, 1e-5, dims, hidden, stream, attended, rows, 0, rows, unit)
        return stream

    accumulated = floats(rows, hidden)

    def dense(unit):  # GELU(x W^T + b) added to what y holds (flags 1 | 2)
        y = accumulated.copy()
        kernels.dense(x, weights[8], weights[9], y, rows, dims, hidden, 3, 0, rows, unit)
        return y

    def attention(unit):
        out = np.zeros((2 * 128, 64), np.float32)
        kernels.attention(qkv, out, windows, 2, 128, None, None, 0, 0.25, 4, 4, 16, 0, 16, unit)
        return out

    return {"norm_dense": norm_dense, "swin_mlp": swin_mlp, "dense": dense, "attention": attention}


@pytest.mark.skipif(ops._kernels is None, reason="built without the C kernels")
@pytest.mark.parametrize("helpers", [0, 1, 3])
def test_kernels_split_across_their_team_match_one_thread_bit_for_bit(helpers):
    calls = split_kernel_calls(np.random.default_rng(helpers))
    alone = {name: call(0) for name, call in calls.items()}
    try:
        assert ops._kernels.team(helpers, host_ops.TEAM_SPIN_US) == helpers
        for name, call in calls.items():
            for unit in (1, 5, 12, 48, 10_000):  # 10_000: one unit, the caller's
                np.testing.assert_array_equal(call(unit), alone[name], err_msg=f"{name}, unit {unit}")
        # several Python threads at once: one job at a time shares the team, the others run alone
        results, errors = [], []

        def caller():
            try:
                results.extend((name, call(12)) for _ in range(20) for name, call in calls.items())
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=caller) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors and len(results) == 3 * 20 * len(calls)
        assert all(np.array_equal(out, alone[name]) for name, out in results)
    finally:
        ops._kernels.team(host_ops.workers() - 1, host_ops.TEAM_SPIN_US)


@pytest.mark.skipif(ops._kernels is None or not hasattr(os, "fork"), reason="needs the C kernels and os.fork")
def test_a_forked_child_runs_the_split_kernels_without_the_parents_helpers():
    calls = split_kernel_calls(np.random.default_rng(5))
    alone = {name: call(0) for name, call in calls.items()}
    calls["norm_dense"](12)  # the parent's helpers have run (and spin) when it forks
    pid = os.fork()
    if pid == 0:  # the child: its jobs run on the caller (no helper threads were forked)
        same = all(np.array_equal(call(12), alone[name]) for name, call in calls.items())
        os._exit(0 if same else 1)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in a split kernel")
    assert os.waitstatus_to_exitcode(done[1]) == 0, "the forked child's results differ from one thread's"


@pytest.mark.skipif(ops._kernels is None, reason="built without the C kernels")
def test_kernels_refuse_a_negative_unit():
    call = split_kernel_calls(np.random.default_rng(0))["norm_dense"]
    with pytest.raises(ValueError, match="unit must be >= 0, got -1"):
        call(-1)
    with pytest.raises(ValueError, match="helpers and spin_us must be >= 0"):
        ops._kernels.team(-1, 0)
