"""Calibration: replay the recordings, sweep every label, report (see the package docstring)."""


from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import LabelConfig, MonitorConfig
from . import sweep
from .command import DEFAULT_FALSE_ALARMS_PER_HOUR
from .replay import CalibrationInputError, Progress, Recording, Replayer, ScoreStore, audio_files, duration

PERCENTILES = (50, 90, 99, 99.9)


@dataclass(frozen=True)
class LabelReport:
    label: str
    background_windows: int  # scored (ungated) background windows
    percentiles: dict[str, float | None]  # "p50", ..., "max" of the background scores
    current_threshold: float
    current_false_alarms_per_hour: float
    current_recall: float | None  # None: no positives for this label
    suggested_threshold: float | None  # None: no threshold meets the budget
    suggested_end_threshold: float | None  # the hysteresis width kept (None: the label sets none)
    suggested_false_alarms_per_hour: float | None
    suggested_recall: float | None
    positives: int


@dataclass(frozen=True)
class CalibrationReport:
    background_files: int
    background_hours: float
    false_alarms_per_hour: float  # the budget
    labels: list[LabelReport]

    def to_dict(self) -> dict:
        return asdict(self)

    def thresholds(self) -> dict[str, tuple[float, float | None]]:
        """{label: (suggested threshold, end threshold or None)} for labels that have one."""
        return {r.label: (r.suggested_threshold, r.suggested_end_threshold)
                for r in self.labels if r.suggested_threshold is not None}


def parse_positives(items: list[str], cfg: MonitorConfig) -> dict[str, list[Path]]:
    """`LABEL=PATH` items -> {label: audio files}; errors name the item."""
    names = [label.name for label in cfg.labels]
    positives: dict[str, list[str]] = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise CalibrationInputError(f"--positives {item!r}: expected LABEL=PATH (a file or a folder)")
        if label not in names:
            raise CalibrationInputError(f"--positives {item!r}: no label {label!r} in the config (labels: {', '.join(names)})")
        positives.setdefault(label, []).append(path)
    return {label: audio_files(paths, f"--positives {label}=") for label, paths in positives.items()}


def calibrate(cfg: MonitorConfig, embedder, background: list[str], positives: dict[str, list[Path]],
              per_hour: float = DEFAULT_FALSE_ALARMS_PER_HOUR, progress: bool = False) -> tuple[CalibrationReport, "Scores"]:
    """Replay, then sweep every label. Raises CalibrationInputError before replaying anything
    when an input is unusable."""
    if per_hour < 0:
        raise CalibrationInputError(f"--false-alarms-per-hour must be >= 0, got {per_hour}")
    background_files = audio_files(background, "--background")
    pad_s = cfg.windows.length_s
    total_s = sum(map(duration, background_files))
    total_s += sum(duration(f) + 2 * pad_s for files in positives.values() for f in files)
    store = ScoreStore([label.name for label in cfg.labels])
    bar = Progress(total_s, force=progress)
    replayer = Replayer(cfg, embedder, store, bar)
    try:
        recorded_background = [replayer.replay(f) for f in background_files]
        recorded_positives = {label: [replayer.replay(f, pad_s) for f in files] for label, files in positives.items()}
    finally:
        bar.close(replayer.done_s)
    scores = Scores(store, recorded_background, recorded_positives)
    hours = sum(r.seconds for r in recorded_background) / 3600
    reports = [_label_report(cfg, label, scores, hours, per_hour) for label in cfg.labels]
    return CalibrationReport(len(background_files), hours, per_hour, reports), scores


@dataclass
class Scores:
    """The replayed windows: background recordings and positive clips per label."""

    store: ScoreStore
    background: list[Recording]
    positives: dict[str, list[Recording]]

    def background_scores(self, label: str) -> np.ndarray:
        return self.store.scores(label, self.background)

    def positive_scores(self, label: str) -> np.ndarray:
        return self.store.scores(label, self.positives.get(label, []))

    def close(self) -> None:
        self.store.close()


def _label_report(cfg: MonitorConfig, label: LabelConfig, scores: Scores, hours: float, per_hour: float) -> LabelReport:
    background = scores.background_scores(label.name)
    scored = background[np.isfinite(background)]
    percentiles = {f"p{p:g}": float(np.percentile(scored, p)) if scored.size else None for p in PERCENTILES}
    percentiles["max"] = float(scored.max()) if scored.size else None
    replays = lambda: (scores.store.windows(r) for r in scores.background)  # noqa: E731  fresh per sweep step
    suggestion = sweep.suggest(list(cfg.labels), label, background, replays, hours, per_hour)

    def false_alarms(threshold: float) -> float:
        events = sweep.count_events(sweep.engine_labels(cfg.labels, label.name, threshold), label.name, replays())
        return events / hours if hours else 0.0

    def recall(threshold: float) -> float | None:
        clips = scores.positives.get(label.name, [])
        if not clips:
            return None
        engine_labels = sweep.engine_labels(cfg.labels, label.name, threshold)
        return sum(sweep.detected(engine_labels, label.name, scores.store.windows(r)) for r in clips) / len(clips)

    suggested = suggestion.threshold
    return LabelReport(
        label=label.name,
        background_windows=int(scored.size),
        percentiles=percentiles,
        current_threshold=label.threshold,
        current_false_alarms_per_hour=false_alarms(label.threshold),
        current_recall=recall(label.threshold),
        suggested_threshold=suggested,
        suggested_end_threshold=_end_threshold(label, suggested),
        suggested_false_alarms_per_hour=suggestion.per_hour if suggested is not None else None,
        suggested_recall=recall(suggested) if suggested is not None else None,
        positives=len(scores.positives.get(label.name, [])),
    )


def _end_threshold(label: LabelConfig, threshold: float | None) -> float | None:
    """As the sweep moved it, rounded for the YAML (0.524 - 0.1 is 0.42400000000000004 in floats)."""
    end = sweep.with_threshold(label, threshold).end_threshold if threshold is not None else None
    return None if end is None else round(end, 9)


def format_report(report: CalibrationReport) -> str:
    lines = [
        f"background: {report.background_files} file(s), {report.background_hours * 60:.1f} min; "
        f"budget {report.false_alarms_per_hour:g} false alarms per hour",
        "",
    ]
    header = ["label", "windows", *report.labels[0].percentiles, "threshold", "FA/h", "recall", "suggested", "FA/h", "recall"]
    rows = []
    for r in report.labels:
        rows.append([
            r.label, str(r.background_windows), *(_num(v) for v in r.percentiles.values()),
            f"{r.current_threshold:g}", f"{r.current_false_alarms_per_hour:.2f}", _share(r.current_recall, r.positives),
            "none" if r.suggested_threshold is None else f"{r.suggested_threshold:g}",
            _num(r.suggested_false_alarms_per_hour, ".2f"), _share(r.suggested_recall, r.positives),
        ])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.append("")
    lines.append("percentiles: background window scores; threshold/FA/h/recall: current config; suggested: the lowest "
                 "threshold from which on false alarms stay within the budget; recall: positive clips with an event")
    if any(r.suggested_threshold is None for r in report.labels):
        lines.append("none: even a threshold of 1 gives more false alarms than the budget (the label scores 1.0 on background)")
    return "\n".join(lines)


def _num(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _share(value: float | None, n: int) -> str:
    return "-" if value is None else f"{value:.2f} ({round(value * n)}/{n})"
