"""The console: human lines for events and warnings (`log.console_format: text`), the JSON
lines unchanged with `json`, and the JSON log file the same either way."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime


from monitor.config import LogConfig
from monitor.events import EventMessage, LevelReport, WindowReport
from monitor.sinks.jsonlog import JsonLogSink

T0 = 1_800_000_000.0
CLOCK = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def message(phase: str, score: float, ended: float | None = None) -> EventMessage:
    return EventMessage(phase=phase, event_id="dog_bark-1", label="dog_bark", score=score, peak_score=0.91,
                        mean_score=0.8, started_at=T0, ended_at=ended, duration_s=(ended or T0 + 10) - T0,
                        level_dbfs=-21.34, source="mic:default")


def run_sink(tmp_path, capsys, console_format: str | None) -> list[str]:
    """Feeds one of everything through a JsonLogSink; returns the console lines."""
    sink = JsonLogSink(LogConfig(path=str(tmp_path / "log.jsonl"), console=True, console_format=console_format))
    sink.start()
    try:
        sink.handle_event(message("start", 0.713))
        sink.handle_event(message("update", 0.8))
        sink.handle_event(message("end", 0.512, ended=T0 + 5))
        sink.handle_level(LevelReport(timestamp=T0, source="mic:default", level_dbfs=-30.0, windows_scored=5,
                                      windows_dropped=0, overflows=0, realtime_factor=9.0, scores={"dog_bark": 0.1}))
        sink.handle_window(WindowReport("mic:default", T0, T0 + 1, -30.0, {"dog_bark": 0.1}, 3.0))
        logging.getLogger("monitor.pipeline").warning("%s: %s", "source_gap", {"gap_s": 0.5},
                                                      extra={"kind": "source_gap", "source": "mic:default", "gap_s": 0.5})
        logging.getLogger("monitor.sinks.mqtt").warning("broker unreachable", extra={"kind": "mqtt_disconnected"})
    finally:
        sink.close()
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_text_lines_for_events_and_warnings(tmp_path, capsys):
    before = datetime.now().replace(microsecond=0)
    lines = run_sink(tmp_path, capsys, "text")
    assert len(lines) == 5, lines  # no level report, no window line
    assert re.fullmatch(rf"{CLOCK}  mic:default  dog_bark  start   score 0\.713  -21\.3 dBFS", lines[0])
    assert re.fullmatch(rf"{CLOCK}  mic:default  dog_bark  update  score 0\.800 \(peak 0\.910, 10\.0 s\)  -21\.3 dBFS",
                        lines[1])
    assert re.fullmatch(rf"{CLOCK}  mic:default  dog_bark  end     score 0\.512 \(peak 0\.910, 5\.0 s\)  -21\.3 dBFS",
                        lines[2])
    assert re.fullmatch(rf"{CLOCK}  mic:default  warning  source_gap: \{{'gap_s': 0\.5\}}", lines[3])
    assert re.fullmatch(rf"{CLOCK}  -  warning  mqtt_disconnected: broker unreachable", lines[4])
    logged = datetime.strptime(lines[0][:19], "%Y-%m-%d %H:%M:%S")  # local time of logging
    assert before <= logged <= datetime.now()
    # the file keeps every JSON line
    kinds = [json.loads(line)["type"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert kinds == ["event", "event", "event", "level", "warning", "warning"]  # windows only at debug


def test_json_console_is_the_log_file(tmp_path, capsys):
    lines = run_sink(tmp_path, capsys, "json")
    assert lines == (tmp_path / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["phase"] == "start" and json.loads(lines[0])["level_dbfs"] == -21.34


def test_unset_format_is_json_when_stderr_is_no_terminal(tmp_path, capsys):
    assert run_sink(tmp_path, capsys, None) == (tmp_path / "log.jsonl").read_text().splitlines()
