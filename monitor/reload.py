"""Reload on SIGHUP: the running monitor takes a changed config's labels, rules, MQTT and clip
settings without a restart; an invalid config is rejected (logged) and the running one kept.

`Reloader` owns the signal's work: the handler only sets a flag; its thread reads and checks
the YAML and hands the merged config to `Pipeline.reload` (or `MultiPipeline.reload`, which
passes each source its part), applied on the detector thread between windows. Settings that
only a restart can change (the source, the list of sources and what each is, the model, the
windows, the ring buffer, the log, ...) are reported as such and keep their running values;
of a `sources:` entry only the labels it watches are reloaded.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Callable

from .config import MonitorConfig
from .config_loader import ConfigError, load_config

log = logging.getLogger(__name__)

RELOADABLE = ("labels", "rules", "mqtt", "clips")  # top-level sections taken as they are
# prompts and examples are re-embedded on the detector thread
DETECTOR_RELOADABLE = ("background", "background_examples", "prompt_template", "stall_s")


def restart_needed(old: MonitorConfig, new: MonitorConfig) -> list[str]:
    """Settings that differ but take effect only after a restart."""
    fields = []
    for f in dataclasses.fields(MonitorConfig):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if f.name in RELOADABLE or before == after:
            continue
        if f.name == "detector":
            fields += [f"detector.{g.name}" for g in dataclasses.fields(before)
                       if g.name not in DETECTOR_RELOADABLE and getattr(before, g.name) != getattr(after, g.name)]
        elif f.name == "sources" and [src.name for src in before] == [src.name for src in after]:
            fields += [f"sources[{i}].{g.name}" for i, (a, b) in enumerate(zip(before, after))
                       for g in dataclasses.fields(a)
                       if g.name != "labels" and getattr(a, g.name) != getattr(b, g.name)]
        else:
            fields.append(f.name)
    return fields


def merged(old: MonitorConfig, new: MonitorConfig) -> MonitorConfig:
    """`new`'s reloadable settings on top of the running `old` ones."""
    detector = dataclasses.replace(old.detector, **{k: getattr(new.detector, k) for k in DETECTOR_RELOADABLE})
    watched = {src.name: src.labels for src in new.sources}  # a source kept by name takes its new labels
    sources = tuple(dataclasses.replace(src, labels=watched.get(src.name, src.labels)) for src in old.sources)
    return dataclasses.replace(old, detector=detector, sources=sources, **{k: getattr(new, k) for k in RELOADABLE})


def sinks_changed(old: MonitorConfig, new: MonitorConfig) -> bool:
    """The configured sinks are built from these (the MQTT sink announces the labels)."""
    names = [label.name for label in old.labels] != [label.name for label in new.labels]
    return names or old.mqtt != new.mqtt or old.clips != new.clips


class Reloader:
    """`request()` is safe in a signal handler; the work happens on the reloader's own thread."""

    def __init__(self, path: str | Path, running: Callable[[], MonitorConfig], apply: Callable[[MonitorConfig], None]):
        self.path, self.running, self.apply = path, running, apply
        self._wanted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reloader", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def _run(self) -> None:
        while self._wanted.wait():
            self._wanted.clear()
            try:
                self.reload()
            except Exception:  # a reload must never take the monitor down
                log.exception("reload failed; the running configuration is kept", extra={"kind": "reload_rejected"})

    def reload(self) -> MonitorConfig | None:
        """Reads the config file again; the config now being applied, or None when rejected."""
        old = self.running()
        try:
            new = load_config(self.path)
        except ConfigError as error:
            log.error("reload rejected, the running configuration is kept: %s", error,
                      extra={"kind": "reload_rejected", "error": str(error)})
            return None
        result = merged(old, new)
        problems = [f"{field}: {message}" for field, message in result.problems()]
        if problems:  # e.g. longer clips that need a larger ring buffer, which only a restart gives
            log.error("reload rejected, the new settings do not fit the running ones (a restart would apply "
                      "them): %s", "; ".join(problems), extra={"kind": "reload_rejected", "error": "; ".join(problems)})
            return None
        later = restart_needed(old, new)
        if later:
            log.warning("reload: %s changed but take effect only after a restart", ", ".join(later),
                        extra={"kind": "reload_needs_restart", "fields": later})
        if result == old:
            log.info("reload: nothing to change", extra={"kind": "reloaded", "changed": []})
            return old
        self.apply(result)
        return result
