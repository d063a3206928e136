"""Where the monitor keeps what must outlive a restart (the MQTT outbox).

`state_dir:` in the YAML wins; else systemd's `$STATE_DIRECTORY` (set by `StateDirectory=`
in packaging/sound-monitor.service), else `$XDG_STATE_HOME/sound-monitor`, else
`~/.local/state/sound-monitor`. Nothing is created here: the user of a path creates it
and decides what a failure means.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "sound-monitor"


def state_dir(configured: str | None) -> Path:
    if configured is not None:
        return Path(configured).expanduser()
    if os.environ.get("STATE_DIRECTORY"):  # systemd may pass several, colon-separated: the first is ours
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / APP
    return Path.home() / ".local" / "state" / APP
