"""Aggregate statistics of a leaderboard (evaluation.md §5; DESIGN.md "Models to learn from": rliable).

- Per (task, algorithm): mean and sample std (ddof = 1) over seeds of the per-seed final scores.
- Across tasks and seeds: the interquartile mean (IQM) with a stratified-bootstrap 95% confidence interval,
  the statistic of rliable (Agarwal et al., 2021) computed here with numpy:

  * IQM = ``scipy.stats.trim_mean(x, 0.25)`` of every (task, seed) score pooled: sort the n values, drop
    ``floor(0.25·n)`` from each end, average the rest (rliable's ``metrics.aggregate_iqm``).
  * Stratified bootstrap (rliable's ``StratifiedBootstrap``, runs resampled, tasks kept): each replicate
    draws, for every task independently, as many seeds as that task has, uniformly with replacement from
    that task's seeds, and computes the IQM of the pooled draw.
  * Interval: the percentile method (rliable's default, through ``arch``): the 2.5 and 97.5 percentiles of
    the replicate IQMs, ``numpy.percentile`` with linear interpolation.

Why our own ~40 lines rather than the ``rliable`` package: rliable pins ``arch == 5.3.0`` (old wheels,
a compiled package) and pulls scipy and seaborn for one statistic; its bootstrap draws from numpy's global
random state, whereas leaderboards here must be byte-for-byte reproducible, so ours takes an explicit seed.
Tasks may hold different numbers of seeds (a failed run): each task resamples its own seeds, which for equal
counts is exactly rliable's scheme.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_REPS = 50_000  # rliable's default number of replicates
CONFIDENCE = 0.95
DEFAULT_SEED = 0


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof = 1, n); the std is nan for a single value (evaluation.md §5.2)."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if n > 1 else math.nan, n


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean of the pooled values: the 25% trimmed mean (scipy's ``trim_mean(x, 0.25)``)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        return math.nan
    cut = int(0.25 * n)
    return float(x[cut : n - cut].mean())


def iqm_rows(samples: np.ndarray) -> np.ndarray:
    """The IQM of every row of a [reps, n] matrix (vectorized :func:`iqm`)."""
    n = samples.shape[1]
    cut = int(0.25 * n)
    return np.sort(samples, axis=1)[:, cut : n - cut].mean(axis=1)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    point: float
    low: float
    high: float
    reps: int
    n_tasks: int
    n_scores: int


def stratified_bootstrap_iqm(
    scores: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    reps: int = BOOTSTRAP_REPS,
    confidence: float = CONFIDENCE,
    seed: int = DEFAULT_SEED,
    chunk: int = 10_000,
) -> Interval:
    """IQM of the pooled scores and its stratified-bootstrap percentile interval.

    ``scores`` holds one sequence of per-seed scores per task (a dict task -> scores, or a list). The random
    draws come from ``numpy.random.default_rng(seed)``: task by task in the given order, ``reps`` × n_task
    integer indices per chunk of replicates, so the result is a pure function of the input and the seed.
    """
    values = scores.values() if isinstance(scores, Mapping) else scores
    groups = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    groups = [g for g in groups if g.size]
    pooled = np.concatenate(groups) if groups else np.zeros(0)
    n = pooled.size
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, reps, 0, 0)
    rng = np.random.default_rng(seed)
    stats = np.empty(reps, dtype=np.float64)
    for start in range(0, reps, chunk):
        r = min(chunk, reps - start)
        draws = np.empty((r, n), dtype=np.float64)
        col = 0
        for g in groups:
            idx = rng.integers(0, g.size, size=(r, g.size))
            draws[:, col : col + g.size] = g[idx]
            col += g.size
        stats[start : start + r] = iqm_rows(draws)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return Interval(iqm(pooled), float(low), float(high), reps, len(groups), n)
