"""Rules engine: synthetic score sequences through the pure engine."""

from datetime import datetime, timezone

import pytest

from monitor.config import LabelConfig, ScheduleConfig
from monitor.rules import RulesEngine, in_quiet_hours

HOP = 1.0
LENGTH = 2.0


def run(engine, scores_per_window, level=-20.0, t0=0.0):
    """Feed one window per hop; returns [(window index, message)]."""
    out = []
    for i, scores in enumerate(scores_per_window):
        start = t0 + i * HOP
        for message in engine.process(start, start + LENGTH, level if not isinstance(level, list) else level[i], scores):
            out.append((i, message))
    return out


def dog(**kw):
    return LabelConfig(name="dog", **kw)


def seq(values, label="dog"):
    return [{label: v} for v in values]


def phases(messages):
    return [(i, m.phase) for i, m in messages]


def test_single_window_start_and_end_after_max_not_heard():
    engine = RulesEngine([dog(threshold=0.5, max_not_heard=2)], "test")
    out = run(engine, seq([0.1, 0.7, 0.9, 0.2, 0.3, 0.1]))
    assert phases(out) == [(1, "start"), (4, "end")]
    start, end = out[0][1], out[1][1]
    assert start.started_at == 1.0 and start.ended_at is None
    assert end.event_id == start.event_id and end.label == "dog" and end.source == "test"
    assert end.ended_at == 2.0 + LENGTH  # end of the last heard window
    assert end.duration_s == pytest.approx(3.0)
    assert end.peak_score == pytest.approx(0.9) and end.mean_score == pytest.approx(0.8)


def test_k_of_n_needs_k_hits_within_n_windows():
    label = dog(threshold=0.5, k=2, n=3)
    # hits 3 windows apart never share a 3-window history
    assert run(RulesEngine([label], "t"), seq([0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9])) == []
    out = run(RulesEngine([label], "t"), seq([0.9, 0.1, 0.9, 0.1]))
    assert phases(out) == [(2, "start")]
    assert out[0][1].started_at == 0.0  # the event starts at its first hit
    assert out[0][1].mean_score == pytest.approx(0.9)


def test_hysteresis_keeps_event_alive_between_end_and_start_threshold():
    label = dog(threshold=0.8, end_threshold=0.4, max_not_heard=1)
    out = run(RulesEngine([label], "t"), seq([0.9, 0.5, 0.5, 0.45, 0.3]))
    assert phases(out) == [(0, "start"), (4, "end")]
    without = run(RulesEngine([dog(threshold=0.8, max_not_heard=1)], "t"), seq([0.9, 0.5, 0.5, 0.45, 0.3]))
    assert phases(without) == [(0, "start"), (1, "end")]


def test_short_dropout_does_not_end_event():
    label = dog(threshold=0.5, max_not_heard=3)
    out = run(RulesEngine([label], "t"), seq([0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1]))
    assert phases(out) == [(0, "start"), (6, "end")]


def test_cooldown_blocks_new_start_until_it_passes():
    label = dog(threshold=0.5, max_not_heard=1, cooldown_s=5.0)
    # event heard in window 0 (ends at t=2); cooldown until t=7: windows starting before 7 cannot start one
    out = run(RulesEngine([label], "t"), seq([0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]))
    assert phases(out) == [(0, "start"), (1, "end"), (7, "start")]


def test_updates_are_rate_limited():
    engine = RulesEngine([dog(threshold=0.5)], "t", update_interval_s=3.0)
    out = run(engine, seq([0.9] * 8))
    assert phases(out) == [(0, "start"), (3, "update"), (6, "update")]
    assert out[1][1].duration_s == pytest.approx(3.0 + LENGTH)


def test_min_level_makes_quiet_windows_misses():
    label = dog(threshold=0.5, min_dbfs=-30.0, max_not_heard=1)
    out = run(RulesEngine([label], "t"), seq([0.9, 0.9, 0.9]), level=[-40.0, -25.0, -45.0])
    assert phases(out) == [(1, "start"), (2, "end")]
    assert out[0][1].level_dbfs == -25.0


def test_gated_windows_count_as_not_heard():
    engine = RulesEngine([dog(threshold=0.5, max_not_heard=2)], "t")
    out = run(engine, [{"dog": 0.9}, None, None, {"dog": 0.9}])
    assert phases(out) == [(0, "start"), (2, "end"), (3, "start")]


def test_require_and_unless_combinations():
    labels = [
        LabelConfig(name="alarm", threshold=0.5, max_not_heard=1, require=["beep"]),
        LabelConfig(name="beep", threshold=0.6, max_not_heard=1),
        LabelConfig(name="cry", threshold=0.5, max_not_heard=1, unless=["tv"]),
        LabelConfig(name="tv", threshold=0.5, max_not_heard=1),
    ]
    windows = [
        {"alarm": 0.9, "beep": 0.1, "cry": 0.9, "tv": 0.8},  # alarm lacks beep; cry vetoed by tv
        {"alarm": 0.9, "beep": 0.7, "cry": 0.1, "tv": 0.1},  # alarm+beep present
        {"alarm": 0.1, "beep": 0.1, "cry": 0.9, "tv": 0.1},  # cry without tv
    ]
    out = run(RulesEngine(labels, "t"), windows)
    starts = [(i, m.label) for i, m in out if m.phase == "start" and m.label in ("alarm", "cry")]
    assert starts == [(1, "alarm"), (2, "cry")]


def test_present_includes_labels_with_an_ongoing_event():
    labels = [
        LabelConfig(name="cry", threshold=0.5, end_threshold=0.2, max_not_heard=1, unless=["tv"]),
        LabelConfig(name="tv", threshold=0.8, end_threshold=0.3, max_not_heard=1),
    ]
    # tv's event continues at 0.4 (below its threshold): still present, so cry stays vetoed
    # until the window after the one that ends tv's event
    windows = [{"tv": 0.9, "cry": 0.1}, {"tv": 0.4, "cry": 0.9}, {"tv": 0.1, "cry": 0.9}, {"tv": 0.1, "cry": 0.9}]
    out = run(RulesEngine(labels, "t"), windows)
    assert [(i, m.label, m.phase) for i, m in out] == [(0, "tv", "start"), (2, "tv", "end"), (3, "cry", "start")]


def test_close_ends_open_events():
    engine = RulesEngine([dog(threshold=0.5)], "t")
    run(engine, seq([0.9, 0.9]))
    assert engine.active == ["dog"]
    (end,) = engine.close()
    assert end.phase == "end" and end.ended_at == 1.0 + LENGTH
    assert engine.active == [] and engine.close() == []


def ts(text):
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_quiet_hours_across_midnight_belong_to_their_start_day():
    friday_nights = ScheduleConfig(quiet_hours="22:00-07:00", days=("fri",))
    # 2026-11-27 is a Friday
    assert in_quiet_hours(friday_nights, ts("2026-11-27T23:30"), timezone.utc)
    assert in_quiet_hours(friday_nights, ts("2026-11-28T06:59"), timezone.utc)  # Saturday morning
    assert not in_quiet_hours(friday_nights, ts("2026-11-28T07:00"), timezone.utc)
    assert not in_quiet_hours(friday_nights, ts("2026-11-27T06:30"), timezone.utc)  # Thursday's night
    assert not in_quiet_hours(friday_nights, ts("2026-11-27T21:59"), timezone.utc)
    daytime = ScheduleConfig(quiet_hours="09:00-17:30")
    assert in_quiet_hours(daytime, ts("2026-11-29T17:29"), timezone.utc)
    assert not in_quiet_hours(daytime, ts("2026-11-29T17:30"), timezone.utc)


def test_quiet_hours_suppress_starts_only():
    label = dog(threshold=0.5, max_not_heard=1, schedule=ScheduleConfig(quiet_hours="22:00-07:00"))
    engine = RulesEngine([label], "t", tz=timezone.utc)
    night = run(engine, seq([0.9, 0.9]), t0=ts("2026-11-27T23:00"))
    assert night == []
    morning = run(engine, seq([0.9, 0.9]), t0=ts("2026-11-28T06:59:59"))
    assert phases(morning) == [(1, "start")]  # 06:59:59 is quiet, 07:00:00 is not


def test_states_follow_hits_events_cooldown_and_quiet_hours():
    label = dog(threshold=0.5, k=2, n=3, max_not_heard=1, cooldown_s=3.0)
    night = LabelConfig(name="owl", threshold=0.5, schedule=ScheduleConfig(quiet_hours="22:00-07:00"))
    t0 = ts("2026-11-27T12:00")
    engine = RulesEngine([label, night], "t", tz=timezone.utc)

    def after(i, scores):
        """States at the end of window i, once the engine has seen it."""
        engine.process(t0 + i * HOP, t0 + i * HOP + LENGTH, -20.0, scores)
        return engine.states(t0 + i * HOP + LENGTH)["dog"]

    assert engine.states(t0) == {"dog": "idle", "owl": "idle"}
    assert after(0, {"dog": 0.9}) == "hit"  # 1 of the 2 hits needed
    assert after(1, {"dog": 0.9}) == "event"
    assert after(2, {"dog": 0.1}) == "cooldown"  # ended; heard until t0 + 3, cooldown until t0 + 6
    assert engine.states(t0 + 5.9)["dog"] == "cooldown" and engine.states(t0 + 6.0)["dog"] == "idle"
    assert engine.states(ts("2026-11-27T23:00")) == {"dog": "idle", "owl": "quiet"}
