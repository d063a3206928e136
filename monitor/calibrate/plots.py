"""`calibrate --plots DIR`: one PNG per label, background vs positive window scores with the
current and the suggested threshold (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class PlotsUnavailable(RuntimeError):
    pass


def check_available() -> None:
    """Fail before any audio is replayed when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotsUnavailable("--plots needs matplotlib: pip install 'clap-mlx[plots]' (or pip install matplotlib)") from None


def write_plot(path: Path, label: str, background: np.ndarray, positives: np.ndarray,
               current: float, suggested: float | None) -> None:
    """Histograms of the label's background and positive window scores (gated windows left out)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    bins = np.linspace(0.0, 1.0, 51)
    ax.hist(background[np.isfinite(background)], bins=bins, alpha=0.6, density=True, label=f"background ({np.isfinite(background).sum()} windows)")
    if np.isfinite(positives).any():
        ax.hist(positives[np.isfinite(positives)], bins=bins, alpha=0.6, density=True, label=f"positives ({np.isfinite(positives).sum()} windows)")
    ax.axvline(current, color="black", linestyle="--", label=f"current threshold {current:g}")
    if suggested is not None:
        ax.axvline(suggested, color="red", label=f"suggested threshold {suggested:g}")
    ax.set(title=label, xlabel="window score", ylabel="density", xlim=(0, 1))
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
