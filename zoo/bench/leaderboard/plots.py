"""Plots of a leaderboard (matplotlib PNG, written with fixed metadata so the bytes are reproducible)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.bench.leaderboard.model import Leaderboard
from zoo.io import atomic_write


def plot_curves(board: Leaderboard, task: str, path: Path) -> None:
    """Mean ± std over seeds of the evaluation scores against learner steps, one line per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=100)
    try:
        for label in board.labels:
            seeds = board.curves.get(task, {}).get(label)
            if not seeds:
                continue
            common = sorted(set.intersection(*(set(dict(c)) for c in seeds)))
            if not common:
                continue
            values = np.array([[dict(c)[s] for s in common] for c in seeds], dtype=np.float64)
            mean = values.mean(axis=0)
            ax.plot(common, mean, label=f"{label} ({len(seeds)})", linewidth=1.5)
            if len(seeds) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(common, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{task} ({board.suite})", fontsize=10)
        ax.set_xlabel("learner steps")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    finally:
        plt.close(fig)
