"""Ring buffer: absolute indices, wrap-around, overwrite detection, waiting readers; resampler."""

import threading

import numpy as np
import pytest

from monitor.resample import Resampler
from monitor.ringbuffer import Overwritten, RingBuffer, StreamClock


def ramp(start, stop):
    return np.arange(start, stop, dtype=np.float32)


def test_reads_by_absolute_index_across_wrap():
    ring = RingBuffer(10)
    for start in range(0, 37, 3):
        ring.write(ramp(start, start + 3))
    assert ring.end == 39 and ring.oldest == 29
    np.testing.assert_array_equal(ring.read(29, 39), ramp(29, 39))
    np.testing.assert_array_equal(ring.read(33, 35), ramp(33, 35))


def test_block_larger_than_capacity_keeps_newest():
    ring = RingBuffer(8)
    ring.write(ramp(0, 20))
    assert ring.end == 20
    np.testing.assert_array_equal(ring.read(12, 20), ramp(12, 20))


def test_overwritten_and_unwritten_ranges_are_errors():
    ring = RingBuffer(10)
    ring.write(ramp(0, 15))
    with pytest.raises(Overwritten):
        ring.read(4, 8)
    with pytest.raises(ValueError, match="not within"):
        ring.read(10, 16)


def test_write_silence_advances_without_data():
    ring = RingBuffer(10)
    ring.write(ramp(0, 5))
    ring.write_silence(1000)
    ring.write(ramp(1005, 1007))
    assert ring.end == 1007
    np.testing.assert_array_equal(ring.read(997, 1007), np.r_[np.zeros(8, np.float32), ramp(1005, 1007)])


def test_reader_racing_a_writer_never_gets_mixed_audio():
    """Each sample holds its own index: any copy that passes the check must be exact."""
    ring = RingBuffer(4800)
    done = threading.Event()

    def writer():
        for start in range(0, 2_000_000, 480):
            ring.write(ramp(start, start + 480))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    checked = overwritten = 0
    while not done.is_set():
        end = ring.end
        # Half the ring: reading all of it fails whenever the writer has reserved its next
        # block, which in this tight loop can be every time (a flaky `checked == 0`).
        start = max(0, end - 2400)
        try:
            np.testing.assert_array_equal(ring.read(start, end), ramp(start, end))
            checked += 1
        except Overwritten:
            overwritten += 1
    thread.join()
    assert checked > 0


def test_wait_until_wakes_on_write_and_close():
    ring = RingBuffer(100)
    assert not ring.wait_until(10, timeout=0.01)
    threading.Timer(0.05, ring.write, [ramp(0, 20)]).start()
    assert ring.wait_until(10, timeout=5)
    threading.Timer(0.05, ring.close).start()
    assert not ring.wait_until(50, timeout=5) and ring.closed


def test_holds_report_the_oldest_sample_any_reader_needs():
    ring = RingBuffer(10)
    assert ring.held is None
    ring.hold("clip", 40)
    ring.hold("windower", 25)
    assert ring.held == 25
    ring.hold("windower", 50)  # a new hold replaces the owner's previous one
    assert ring.held == 40
    ring.release("clip")
    ring.release("clip")  # twice is harmless
    assert ring.held == 50
    ring.write(ramp(0, 100))  # holds pace writers that ask; the ring itself never refuses a write
    assert ring.end == 100 and ring.held == 50


def test_stream_clock_round_trips():
    clock = StreamClock(1000.0, 48000)
    assert clock.time(96000) == 1002.0 and clock.sample(1002.0) == 96000 and clock.sample(999.0) == 0


def test_streaming_resampler_matches_one_shot_and_passes_48k_through():
    rate = 16000
    signal = np.sin(2 * np.pi * 440 * np.arange(rate * 2) / rate).astype(np.float32)
    resampler = Resampler(rate)
    pieces = [resampler(signal[i : i + 1000]) for i in range(0, len(signal), 1000)]
    out = np.concatenate(pieces + [resampler(np.zeros(0, np.float32), last=True)])
    assert len(out) == pytest.approx(3 * len(signal), abs=2)
    reference = np.sin(2 * np.pi * 440 * np.arange(len(out)) / 48000)
    assert np.abs(out[4800:-4800] - reference[4800:-4800]).max() < 1e-3  # no block-edge clicks, no delay
    block = np.ones(10, np.float32)
    assert Resampler(48000)(block) is block and Resampler(16000).output_samples(160) == 480
