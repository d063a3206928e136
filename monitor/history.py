"""How much audio history the pipeline needs: one answer for the config check
(`MonitorConfig.problems`) and for what the pipeline holds in the ring buffer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import MonitorConfig

SLACK_S = 1.0  # room for the block being written while the windower cuts


@dataclass(frozen=True)
class AudioHistory:
    window_s: float  # the window being cut
    lookback_s: float  # before the newest window through the rules: k-of-n event starts and clip pre-roll
    lag_s: float  # windows between the windower and the rules when the detector is behind

    @property
    def ring_s(self) -> float:
        """The smallest ring that keeps all of it for a live source (which never waits)."""
        return self.window_s + SLACK_S + self.lag_s + self.lookback_s

    @property
    def why(self) -> str:
        parts = ["window length", f"{SLACK_S:g} s slack"]
        if self.lookback_s:
            parts += ["clip pre-roll", "(max_pending + batch_size + largest n) hops of detection lag"]
        return " + ".join(parts)


def audio_history(cfg: MonitorConfig) -> AudioHistory:
    """Windows are copies, so only clips read audio the windower has already cut: an event
    reaches the clip sink `lag_s` after its last window was cut and starts up to n hops
    (the k-of-n look-back) before that window, minus the pre-roll."""
    if not cfg.clips.enabled:
        return AudioHistory(cfg.windows.length_s, lookback_s=0.0, lag_s=0.0)
    max_n = max((label.n for label in cfg.labels), default=1)
    return AudioHistory(
        cfg.windows.length_s,
        lookback_s=max_n * cfg.windows.hop_s + cfg.clips.pre_roll_s,
        lag_s=(cfg.detector.max_pending + cfg.detector.batch_size) * cfg.windows.hop_s,
    )
