"""Windower: window positions by absolute index, dBFS levels, gate, skipping when behind."""

import numpy as np
import pytest

from monitor.ringbuffer import RingBuffer
from monitor.windower import SILENCE_DBFS, Windower, level_dbfs


def test_level_dbfs_of_known_signals():
    sine = np.sin(2 * np.pi * np.arange(4800) / 48).astype(np.float32)
    assert level_dbfs(sine) == pytest.approx(-3.01, abs=0.01)
    assert level_dbfs(0.1 * np.ones(100, np.float32)) == pytest.approx(-20.0)
    assert level_dbfs(np.zeros(100, np.float32)) == SILENCE_DBFS


def test_overlapping_windows_follow_hop_and_only_complete_ones_are_emitted():
    ring = RingBuffer(100)
    windower = Windower(ring, length=10, hop=4)
    ring.write(np.arange(21, dtype=np.float32))
    windows = windower.poll()
    assert [w.start_sample for w in windows] == [0, 4, 8]
    assert all(w.end_sample - w.start_sample == 10 for w in windows)
    np.testing.assert_array_equal(windows[2].samples, np.arange(8, 18, dtype=np.float32))
    assert windower.poll() == []
    ring.write(np.arange(21, 22, dtype=np.float32))
    assert [w.start_sample for w in windower.poll()] == [12]
    assert ring.held == 16  # the windower holds its next window's audio


def test_gate_marks_quiet_windows_but_reports_their_level():
    ring = RingBuffer(100)
    windower = Windower(ring, length=10, hop=10, min_dbfs=-30)
    ring.write(np.r_[np.full(10, 0.001, np.float32), np.full(10, 0.5, np.float32)])
    quiet, loud = windower.poll()
    assert quiet.gated and quiet.level_dbfs == pytest.approx(-60)
    assert not loud.gated and loud.level_dbfs == pytest.approx(-6.02, abs=0.01)


def test_windower_behind_the_ring_skips_to_the_oldest_kept_audio():
    ring = RingBuffer(20)
    windower = Windower(ring, length=10, hop=5)
    ring.write(np.arange(50, dtype=np.float32))  # windows 0..25 are gone
    windows = windower.poll()
    assert [w.start_sample for w in windows] == [30, 35, 40]
    assert windower.skipped == 6


def test_rejects_windows_longer_than_the_ring():
    with pytest.raises(ValueError, match="ring capacity"):
        Windower(RingBuffer(5), length=10, hop=5)


def test_poll_limit_cuts_windows_one_at_a_time():
    ring = RingBuffer(100)
    windower = Windower(ring, length=10, hop=5)
    ring.write(np.zeros(30, np.float32))
    assert [w.start_sample for w in windower.poll(limit=1)] == [0] and windower.next_start == 5
    assert [w.start_sample for w in windower.poll()] == [5, 10, 15, 20]
