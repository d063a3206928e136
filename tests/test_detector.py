"""Detector with the tiny random-weight checkpoint (real model), queue and thread behaviour."""

import threading

import numpy as np
import pytest

from clap_mlx.scoring import l2_normalize
from monitor.detector import Detector, DetectorThread, WindowQueue
from monitor.windower import Window, level_dbfs

RATE = 48000
BACKGROUND = ["silence", "background noise"]


def noise_window(start: int, seconds: float = 1.0, gain: float = 0.1, seed: int = 0) -> Window:
    samples = (gain * np.random.default_rng(seed + start).standard_normal(round(seconds * RATE))).astype(np.float32)
    return Window(start, samples, level_dbfs(samples), gated=False)


def test_label_embeddings_are_renormalised_prompt_means(clap):
    detector = Detector(clap, {"dog": ["a dog barking", "a puppy yapping"], "bell": ["a bell"]}, BACKGROUND)
    background = l2_normalize(l2_normalize(clap.embed_text(BACKGROUND)).mean(axis=0))
    label_embeddings = detector.scorer.vectors + background  # a text label's vector is label - background
    assert np.linalg.norm(label_embeddings, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    np.testing.assert_allclose(label_embeddings[1], clap.embed_text(["a bell"])[0], atol=1e-6)
    mean = clap.embed_text(["a dog barking", "a puppy yapping"]).mean(axis=0)
    cos = label_embeddings[0] @ mean / np.linalg.norm(mean)
    assert cos == pytest.approx(1.0, abs=1e-5)


def test_scores_are_independent_per_label_and_batch_consistent(clap):
    waves = [noise_window(i).samples for i in range(3)]
    one = Detector(clap, {"dog": ["a dog barking"]}, BACKGROUND).score(waves)
    two = Detector(clap, {"dog": ["a dog barking"], "bell": ["a bell"]}, BACKGROUND).score(waves)
    for a, b in zip(one, two):
        assert set(b) == {"dog", "bell"} and 0 < b["bell"] < 1
        assert a["dog"] == pytest.approx(b["dog"], abs=1e-5)  # adding a label changes nothing else
    singles = [Detector(clap, {"dog": ["a dog barking"]}, BACKGROUND).score([w])[0] for w in waves]
    assert [s["dog"] for s in singles] == pytest.approx([s["dog"] for s in one], abs=1e-4)
    assert len({round(s["dog"], 6) for s in one}) > 1  # different audio, different scores


def test_queue_drops_oldest_when_full_and_blocks_in_paced_mode():
    queue = WindowQueue(limit=3)
    for i in range(5):
        queue.put(noise_window(i, seconds=0.01))
    assert queue.dropped == 2 and [w.start_sample for w in queue.take(10)] == [2, 3, 4]

    for i in range(3):
        queue.put(noise_window(i, seconds=0.01), block=True)
    blocked = threading.Thread(target=queue.put, args=(noise_window(3, seconds=0.01),), kwargs={"block": True})
    blocked.start()
    blocked.join(0.1)
    assert blocked.is_alive()  # waits for room instead of dropping
    assert [w.start_sample for w in queue.take(2)] == [0, 1]
    blocked.join(5)
    assert not blocked.is_alive() and queue.dropped == 2
    queue.close()
    assert [w.start_sample for w in queue.take(10)] == [2, 3] and queue.take(10) == []


def test_thread_batches_backlog_drops_oldest_and_passes_gated_windows(clap):
    detector = Detector(clap, {"dog": ["a dog barking"]}, BACKGROUND)
    queue = WindowQueue(limit=4)
    delivered, batches = [], []

    def on_detections(detections):
        batches.append(len(detections))
        delivered.extend(detections)

    thread = DetectorThread(detector, queue, on_detections, batch_size=4)
    thread.start()
    total = 16
    for i in range(total):  # far faster than the model: a backlog builds up
        window = noise_window(i)
        queue.put(Window(i, window.samples, -90.0, gated=True) if i % 5 == 0 else window)
    queue.close()
    thread.join(60)
    assert not thread.is_alive() and thread.error is None
    starts = [d.window.start_sample for d in delivered]
    assert starts == sorted(starts) and starts[-1] == total - 1  # in order, newest kept
    assert queue.dropped > 0 and len(delivered) + queue.dropped == total  # never a growing backlog
    assert max(batches) > 1  # the backlog was scored in batches
    for d in delivered:
        assert (d.scores is None) == (d.inference_ms is None) == d.window.gated
    assert thread.windows_scored == sum(not d.window.gated for d in delivered) and thread.busy_s > 0
    # the mean per scored window over the recent batches (here all of them: fewer than 20)
    per_window = [d.inference_ms for d in delivered if not d.window.gated]
    assert thread.inference_ms == pytest.approx(sum(per_window) / len(per_window)) and thread.inference_ms > 0
