"""Plots of a leaderboard (matplotlib PNG, written with fixed metadata so the bytes are reproducible)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        _save(fig, path)
    finally:
        plt.close(fig)


def _save(fig: Any, path: Path) -> None:
    """PNG bytes that depend only on the figure (no software tag, no date), written atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))


def plot_profiles(board: Leaderboard, path: Path) -> None:
    """Performance profiles (rliable's score distributions): the fraction of (task, seed) runs scoring above τ,
    one line per column with its 95% stratified-bootstrap band (``board.profiles``, see :func:`add_aggregates`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=100)
    try:
        for label in board.labels:
            profile = board.profiles.get(label)
            if profile is None:
                continue
            line = ax.plot(profile.taus, profile.point, label=f"{label} ({profile.n_scores} runs)", linewidth=1.5)
            ax.fill_between(profile.taus, profile.low, profile.high, alpha=0.2, color=line[0].get_color())
        ax.set_title(f"performance profiles · {board.title}", fontsize=9)
        ax.set_xlabel("normalized score τ")
        ax.set_ylabel("fraction of runs with score > τ")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def plot_improvement(board: Leaderboard, path: Path) -> None:
    """P(X > Y) with its 95% interval for every pair of columns (X before Y in the table's order), as rliable
    draws it: one horizontal interval per pair on a 0-1 axis, 0.5 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(x, y) for i, x in enumerate(board.labels) for y in board.labels[i + 1 :] if (x, y) in board.improvement]
    fig, ax = plt.subplots(figsize=(5.6, 0.6 + 0.35 * max(1, len(pairs))), dpi=100)
    try:
        for k, (x, y) in enumerate(reversed(pairs)):
            iv = board.improvement[(x, y)]
            ax.plot([iv.low, iv.high], [k, k], linewidth=6, alpha=0.4, solid_capstyle="round", color="tab:blue")
            ax.plot([iv.point], [k], marker="o", markersize=5, color="black", clip_on=False, zorder=3)
        ax.set_yticks(range(len(pairs)), [f"P({x} > {y})" for x, y in reversed(pairs)], fontsize=7)
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.6, len(pairs) - 0.4)
        ax.set_xlabel("probability of improvement", fontsize=8)
        ax.set_title(f"P(X > Y) · {board.title}", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
