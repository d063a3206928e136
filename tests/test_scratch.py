"""The host scratch pool the fused Swin stages borrow their buffers from (clap_mlx/scratch.py)."""

import threading

import numpy as np

from clap_mlx.scratch import ScratchPool


def test_arrays_have_the_asked_shapes_and_never_overlap_within_a_block():
    pool = ScratchPool()
    with pool.lend() as scratch:
        arrays = [scratch(6, 4), scratch(3), scratch(2, 2, 5)]
        assert [a.shape for a in arrays] == [(6, 4), (3,), (2, 2, 5)]
        assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)
        for i, a in enumerate(arrays):
            for b in arrays[i + 1 :]:
                assert not np.shares_memory(a, b)


def test_the_next_block_reuses_the_buffers_smallest_fitting_first():
    pool = ScratchPool()
    with pool.lend() as scratch:
        big, small = scratch(100), scratch(10)
    with pool.lend() as scratch:
        again_small, again_big = scratch(8), scratch(90)
    assert np.shares_memory(again_small, small) and np.shares_memory(again_big, big)


def test_a_block_running_in_another_thread_gets_its_own_buffers():
    pool = ScratchPool()
    with pool.lend() as scratch:
        scratch(50)  # leaves one free buffer behind
    inside, release, mine = threading.Event(), threading.Event(), []

    def borrower():
        with pool.lend() as scratch:
            mine.append(scratch(50))
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=borrower)
    thread.start()
    assert inside.wait(10)
    with pool.lend() as scratch:
        ours = scratch(50)  # the free one is lent out: a new buffer
        assert not np.shares_memory(ours, mine[0])
    release.set()
    thread.join(10)


def test_growing_requests_replace_free_buffers_instead_of_piling_them_up():
    pool = ScratchPool()
    for size in (10, 20, 40, 80, 160):
        with pool.lend() as scratch:
            scratch(size)
            scratch(size // 2)
    assert sorted(b.size for b in pool._free) == [80, 160]


def test_the_pool_keeps_the_largest_buffers_that_fit_in_its_budget():
    pool = ScratchPool(keep_bytes=4 * 100)
    with pool.lend() as scratch:
        sizes = (70, 50, 40, 30, 10)
        lent = [scratch(n) for n in sizes]
    # 70 + 30 fit in 100 floats; 50 and 40 do not fit next to 70, 10 not next to 70 + 30
    assert sorted(b.size for b in pool._free) == [30, 70]
    with pool.lend() as scratch:
        assert np.shares_memory(scratch(60), lent[0])
