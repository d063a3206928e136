"""host_ops.split_rows: the row split across the cores that every host kernel path uses."""

import threading

import pytest

from clap_mlx import host_ops


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
