"""Monitor configuration: the YAML schema as typed frozen dataclasses, and every rule a config can break.

Each dataclass may define `problems()` yielding `(field, message)`: ranges,
required combinations, names that must stay distinct once they become MQTT
topics. They are the only config checks; `config_loader.load_config` builds
these classes from their type hints and turns a problem into a `ConfigError`
at that field's file and line. Sources and sinks check only runtime facts
(a device present, a file readable, an environment variable set).

A new section is a dataclass with defaults and a field on `MonitorConfig`;
the loader needs no change.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# the output sections live in config_outputs; importers take the whole schema from here
from .config_outputs import (NAME_PATTERN, ClipsConfig, DiscoveryConfig, HttpConfig, LogConfig, MqttConfig,  # noqa: F401
                             Problems, TlsConfig, slugify)
from .history import audio_history

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class SourceConfig:
    type: Literal["mic", "file", "stdin", "ffmpeg"] = "mic"
    name: str | None = None  # shown in messages; default derived by the source ("mic:<device>", "file:<name>", "stdin", "ffmpeg:<url>")
    device: str | int | None = None  # mic: PortAudio index or name substring; None = default input
    sample_rate: int | None = None  # mic: capture rate (None = device default); stdin: rate of the raw PCM (required); ffmpeg: rate it decodes to (None = the model's)
    channels: int = 1  # mic/stdin: channels captured or in the stream; mixed to mono
    path: str | None = None  # file: audio file to replay (required)
    realtime: bool = True  # file: pace at real time (live) or read as fast as the pipeline consumes
    loop: bool = False  # file: start over at the end (demos, soak tests)
    format: Literal["s16le", "f32le"] = "s16le"  # stdin: raw PCM sample format
    url: str | None = None  # ffmpeg: what ffmpeg reads (rtsp://, http://, a file...; required)
    args: tuple[str, ...] = ()  # ffmpeg: options placed before -i (input options, e.g. [-rtsp_transport, tcp])
    # in `sources:` only: what this source overrides (default: the top-level labels and windows)
    labels: tuple[str, ...] = ()  # the labels it watches
    windows: WindowsConfig | None = None
    min_dbfs: float | None = None  # its gate (overrides windows.min_dbfs)

    def problems(self) -> Problems:
        if self.type == "file" and not self.path:
            yield "path", "required when type is 'file'"
        if self.type == "ffmpeg" and not self.url:
            yield "url", "required when type is 'ffmpeg' (the stream ffmpeg reads)"
        if self.type == "stdin" and self.sample_rate is None:
            yield "sample_rate", "required when type is 'stdin' (raw PCM carries no rate)"
        if self.sample_rate is not None and not 8000 <= self.sample_rate <= 384000:
            yield "sample_rate", f"must be between 8000 and 384000 Hz, got {self.sample_rate}"
        if not 1 <= self.channels <= 64:
            yield "channels", f"must be between 1 and 64, got {self.channels}"
        if self.min_dbfs is not None and not -200 <= self.min_dbfs <= 0:
            yield "min_dbfs", f"must be between -200 and 0 dBFS, got {self.min_dbfs}"


@dataclass(frozen=True)
class BufferConfig:
    seconds: float = 30.0  # audio kept in the ring buffer (windows, clip pre-roll)

    def problems(self) -> Problems:
        if not 1 <= self.seconds <= 3600:
            yield "seconds", f"must be between 1 and 3600, got {self.seconds}"


@dataclass(frozen=True)
class WindowsConfig:
    length_s: float = 5.0
    hop_s: float = 1.0
    min_dbfs: float | None = None  # gate: quieter windows are not scored (level still reported)

    def problems(self) -> Problems:
        if not 0.1 <= self.length_s <= 60:
            yield "length_s", f"must be between 0.1 and 60 seconds, got {self.length_s}"
        if not 0 < self.hop_s <= self.length_s:
            yield "hop_s", f"must be > 0 and <= length_s ({self.length_s}), got {self.hop_s}"
        if self.min_dbfs is not None and not -200 <= self.min_dbfs <= 0:
            yield "min_dbfs", f"must be between -200 and 0 dBFS, got {self.min_dbfs}"


@dataclass(frozen=True)
class DetectorConfig:
    model: str = "clap-htsat-fused"  # registry name or local hub-layout folder
    batch_size: int = 4  # most windows scored in one model call when behind
    max_pending: int = 8  # windows queued for the detector; the oldest are dropped past it
    background: tuple[str, ...] = ("silence", "background noise", "people talking quietly")
    prompt_template: str = "the sound of {}"  # prompt for labels without prompts or examples
    # audio of what is normal here, files or folders: what labels taught by examples are contrasted
    # with (default: clap_mlx.anchors.generic_sounds(), synthetic noises and tones)
    background_examples: tuple[str, ...] = ()
    stall_s: float | None = 60.0  # `run` exits (status 3) when a waiting window goes unscored this long; null: never

    def problems(self) -> Problems:
        if self.stall_s is not None and self.stall_s < 1:
            yield "stall_s", f"must be >= 1 second (null: never), got {self.stall_s}"
        if not 1 <= self.batch_size <= 64:
            yield "batch_size", f"must be between 1 and 64, got {self.batch_size}"
        if self.max_pending < 1:
            yield "max_pending", f"must be >= 1, got {self.max_pending}"
        if not self.background:
            yield "background", "needs at least one prompt"
        if "{}" not in self.prompt_template:
            yield "prompt_template", "must contain '{}' (replaced by the label name)"
        yield from _missing_paths("background_examples", self.background_examples)


@dataclass(frozen=True)
class ScheduleConfig:
    quiet_hours: str  # "HH:MM-HH:MM" local time; may cross midnight
    days: tuple[str, ...] = DAYS  # days on which quiet hours start

    def problems(self) -> Problems:
        try:
            parse_hours(self.quiet_hours)
        except ValueError as e:
            yield "quiet_hours", str(e)
        for day in self.days:
            if day not in DAYS:
                yield "days", f"unknown day {day!r}; allowed: {', '.join(DAYS)}"


@dataclass(frozen=True)
class LabelConfig:
    name: str
    # averaged text embeddings; omitted: none when the label has examples, else prompt_template(name)
    prompts: tuple[str, ...] | None = None
    examples: tuple[str, ...] | None = None  # audio files or folders whose embeddings teach the label
    text_weight: float = 0.5  # with prompts and examples: the text margin's weight (clap_mlx.anchors)
    threshold: float = 0.5  # a window is a hit at score >= threshold
    end_threshold: float | None = None  # an event continues while score >= this (default: threshold)
    k: int = 1  # start after k hits among the last n windows
    n: int = 1
    max_not_heard: int = 2  # end after this many consecutive windows below end_threshold
    cooldown_s: float = 0.0  # no new event this long after an end
    min_dbfs: float | None = None  # windows quieter than this never count as hits
    schedule: ScheduleConfig | None = None  # quiet hours: no new events
    require: tuple[str, ...] = ()  # only when all these labels are present too
    unless: tuple[str, ...] = ()  # never while any of these labels is present

    def problems(self) -> Problems:
        if not re.fullmatch(NAME_PATTERN, self.name):
            yield "name", f"{self.name!r}: use letters, digits, '_' or '-' (it becomes an MQTT topic and entity id)"
        if not 0 < self.threshold <= 1:
            yield "threshold", f"must be in (0, 1], got {self.threshold}"
        if self.end_threshold is not None and not 0 < self.end_threshold <= self.threshold:
            yield "end_threshold", f"must be in (0, threshold={self.threshold}], got {self.end_threshold}"
        if self.n < 1:
            yield "n", f"must be >= 1, got {self.n}"
        if not 1 <= self.k <= self.n:
            yield "k", f"must be between 1 and n={self.n}, got {self.k}"
        if self.max_not_heard < 1:
            yield "max_not_heard", f"must be >= 1, got {self.max_not_heard}"
        if self.cooldown_s < 0:
            yield "cooldown_s", f"must be >= 0, got {self.cooldown_s}"
        if self.name in self.require or self.name in self.unless:
            yield "require" if self.name in self.require else "unless", "a label cannot depend on itself"
        if self.prompts == () and not self.examples:
            yield "prompts", ("is empty and the label has no examples: give prompts or examples "
                              "(or omit both for detector.prompt_template)")
        if self.examples == ():
            yield "examples", "is empty: list audio files or folders, or omit it"
        if not 0 <= self.text_weight <= 1:
            yield "text_weight", f"must be between 0 and 1, got {self.text_weight}"
        yield from _missing_paths("examples", self.examples or ())

    @property
    def stop_threshold(self) -> float:
        return self.threshold if self.end_threshold is None else self.end_threshold


@dataclass(frozen=True)
class RulesConfig:
    timezone: str | None = None  # IANA name for schedules; None = the machine's local time
    update_interval_s: float = 10.0  # an ongoing event sends an "update" at most this often

    def problems(self) -> Problems:
        if self.timezone is not None:
            try:
                import zoneinfo

                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                yield "timezone", f"unknown time zone {self.timezone!r} (IANA name like 'Europe/Berlin')"
        if self.update_interval_s <= 0:
            yield "update_interval_s", f"must be > 0, got {self.update_interval_s}"


@dataclass(frozen=True)
class MonitorConfig:
    labels: tuple[LabelConfig, ...]
    source: SourceConfig = field(default_factory=SourceConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    log: LogConfig = field(default_factory=LogConfig)
    mqtt: MqttConfig = field(default_factory=lambda: MqttConfig(enabled=False))
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    state_dir: str | None = None  # what outlives a restart (MQTT outbox); default see monitor/state.py
    sources: tuple[SourceConfig, ...] = ()  # several sources in one process (instead of `source`), see monitor/multi.py

    def problems(self) -> Problems:
        if self.state_dir is not None and not self.state_dir.strip():
            yield "state_dir", "must be a directory path (omit it for the default)"
        if not self.labels:
            yield "labels", "needs at least one label"
        names = [label.name for label in self.labels]
        for i, label in enumerate(self.labels):
            if label.name in names[:i]:
                yield f"labels[{i}].name", f"duplicate label {label.name!r}"
            for key in ("require", "unless"):
                for other in getattr(label, key):
                    if other not in names:
                        yield f"labels[{i}].{key}", f"unknown label {other!r}{did_you_mean(other, names)}"
        for j, other in enumerate(self.clips.skip_if):
            if other not in names:
                yield f"clips.skip_if[{j}]", f"unknown label {other!r}{did_you_mean(other, names)} (skip_if names configured labels)"
        if self.mqtt.enabled:
            yield from _slug_problems(names)
        for history in map(audio_history, [self.for_source(src) for src in self.sources] or [self]):
            if self.buffer.seconds < history.ring_s:
                yield "buffer.seconds", f"must be >= {history.ring_s:g} ({history.why})"
        yield from _sources_problems(self)

    def prompts(self, label: LabelConfig) -> tuple[str, ...]:
        """The label's prompts; omitted, none for a label taught by examples, else prompt_template's."""
        if label.prompts is not None or label.examples:
            return label.prompts or ()
        return (self.detector.prompt_template.format(label.name.replace("_", " ")),)

    def for_source(self, src: SourceConfig) -> MonitorConfig:
        """The one-source config an entry of `sources` runs with: its labels and windows, clips in
        `<clips.dir>/<name>`; no log file and no dashboard (the process has one of each for all sources)."""
        windows = src.windows or self.windows
        if src.min_dbfs is not None:
            windows = dataclasses.replace(windows, min_dbfs=src.min_dbfs)
        return dataclasses.replace(
            self, source=src, sources=(), windows=windows,
            labels=tuple(label for label in self.labels if not src.labels or label.name in src.labels),
            log=dataclasses.replace(self.log, path=None, console=False),
            http=dataclasses.replace(self.http, enabled=False), clips=dataclasses.replace(self.clips, dir=f"{self.clips.dir}/{src.name}"),
        )


def _sources_problems(cfg: MonitorConfig) -> Problems:
    if not cfg.sources:
        return
    if cfg.source != SourceConfig():
        yield "source", "give `source` or `sources`, not both"
    names = [label.name for label in cfg.labels]
    seen: set[str] = set()
    slugs: dict[str, str] = {}  # with MQTT, each source is a node `<node_id>_<slug>`
    for i, src in enumerate(cfg.sources):
        if src.name is None:
            yield f"sources[{i}].name", "required in `sources` (it names the source in events, logs and clip folders)"
        elif not re.fullmatch(NAME_PATTERN, src.name):
            yield f"sources[{i}].name", f"{src.name!r}: use letters, digits, '_' or '-' (it names a clip folder)"
        elif src.name in seen:
            yield f"sources[{i}].name", f"duplicate source name {src.name!r}"
        elif cfg.mqtt.enabled and slugs.setdefault(slugify(src.name), src.name) != src.name:
            yield f"sources[{i}].name", f"{slugs[slugify(src.name)]!r} and {src.name!r} map to the same MQTT node"
        seen.add(src.name or "")
        for j, other in enumerate(src.labels):
            if other not in names:
                yield f"sources[{i}].labels[{j}]", f"unknown label {other!r}{did_you_mean(other, names)}"
        watched = set(src.labels or names)
        for label in cfg.labels:
            missing = [other for other in (*label.require, *label.unless) if label.name in watched and other not in watched]
            if missing:
                yield f"sources[{i}].labels", f"{label.name!r} depends on {', '.join(map(repr, missing))}: watch those too"
        unchecked = [other for other in cfg.clips.skip_if if other not in watched] if cfg.clips.enabled else []
        if unchecked:
            yield f"sources[{i}].labels", (f"watch {', '.join(map(repr, unchecked))} too: clips.skip_if withholds clips "
                                           "by these labels' scores")


def _slug_problems(names: list[str]) -> Problems:
    """Each label's slug names its MQTT state topic and Home Assistant entity: it must exist and be its own."""
    by_slug: dict[str, str] = {}
    for i, name in enumerate(names):
        slug = slugify(name)
        if not slug:
            yield f"labels[{i}].name", f"{name!r} has no letters or digits to name its MQTT topic"
        elif slug in by_slug:
            yield f"labels[{i}].name", f"{by_slug[slug]!r} and {name!r} map to the same MQTT topic and entity '{slug}'"
        else:
            by_slug[slug] = name


def parse_hours(text: str) -> tuple[int, int]:
    """'22:00-07:00' -> (start, end) in minutes after midnight; start > end crosses midnight."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not 'HH:MM-HH:MM' (e.g. '22:00-07:00')")
    h1, m1, h2, m2 = map(int, match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"{text!r} has an invalid time of day")
    if (h1, m1) == (h2, m2):
        raise ValueError(f"{text!r} is empty (start equals end)")
    return h1 * 60 + m1, h2 * 60 + m2


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _missing_paths(field_name: str, paths: tuple[str, ...]) -> Problems:
    """Example audio paths (files or folders, relative to the working directory) that do not exist."""
    for i, path in enumerate(paths):
        if not Path(path).expanduser().exists():
            yield f"{field_name}[{i}]", f"{path!r}: no such file or folder"
