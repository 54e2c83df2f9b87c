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
from typing import Any

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
        stats[start : start + r] = iqm_rows(stratified_draws(groups, r, rng))
    low, high = percentile_interval(stats, confidence)
    return Interval(iqm(pooled), float(low), float(high), reps, len(groups), n)


def stratified_draws(groups: Sequence[np.ndarray], reps: int, rng: np.random.Generator) -> np.ndarray:
    """[reps, n] bootstrap replicates of the pooled scores: for each task in order, ``rng.integers(0, n_task,
    (reps, n_task))`` indices into that task's scores (runs resampled, tasks kept)."""
    draws = np.empty((reps, sum(g.size for g in groups)), dtype=np.float64)
    col = 0
    for g in groups:
        draws[:, col : col + g.size] = g[rng.integers(0, g.size, size=(reps, g.size))]
        col += g.size
    return draws


def percentile_interval(stats: np.ndarray, confidence: float = CONFIDENCE, axis: int = 0) -> tuple[Any, Any]:
    """The percentile-method interval of bootstrap statistics (``numpy.percentile``, linear interpolation)."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail], axis=axis)
    return low, high


# ----------------------------------------------------------------------------------------------
# Performance profiles and probability of improvement (Agarwal et al., 2021, §4.2 and §4.3; rliable's
# ``create_performance_profile`` with ``score_distributions`` and ``probability_of_improvement``)

PROFILE_REPS = 2_000  # rliable's default for performance profiles


def score_distribution(scores: Sequence[float] | np.ndarray, taus: Sequence[float] | np.ndarray) -> np.ndarray:
    """The run-score distribution at each threshold: F(τ) = fraction of (task, seed) scores strictly above τ
    (rliable's ``run_score_deviation``, every run weighted equally). Works on [..., n] scores -> [..., T]."""
    x = np.asarray(scores, dtype=np.float64)
    return (x[..., :, None] > np.asarray(taus, dtype=np.float64)).mean(axis=-2)


@dataclass(frozen=True)
class Profile:
    """A performance profile with its pointwise stratified-bootstrap band."""

    taus: np.ndarray
    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    reps: int
    n_scores: int


def performance_profile(
    scores: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    taus: Sequence[float] | np.ndarray,
    reps: int = PROFILE_REPS,
    confidence: float = CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Profile:
    """The score distribution of one algorithm (one list of per-seed scores per task) at ``taus``, with the
    percentile band of ``reps`` stratified-bootstrap replicates (:func:`stratified_draws` from
    ``numpy.random.default_rng(seed)``, all replicates in one draw)."""
    values = scores.values() if isinstance(scores, Mapping) else scores
    groups = [g for g in (np.asarray(v, dtype=np.float64).ravel() for v in values) if g.size]
    taus = np.asarray(taus, dtype=np.float64)
    if not groups:
        nan = np.full(taus.shape, np.nan)
        return Profile(taus, nan, nan, nan, reps, 0)
    pooled = np.concatenate(groups)
    curves = score_distribution(stratified_draws(groups, reps, np.random.default_rng(seed)), taus)  # [reps, T]
    low, high = percentile_interval(curves, confidence)
    return Profile(taus, score_distribution(pooled, taus), low, high, reps, pooled.size)


def win_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[n_x, n_y]: 1 where x_i > y_j, 1/2 where they tie, 0 otherwise; its mean is the Mann-Whitney U statistic
    of X over Y divided by n_x·n_y, i.e. P(X > Y) on one task."""
    return (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """[reps, n] how often each of n items was drawn in each replicate of a [reps, k] index matrix."""
    reps = idx.shape[0]
    flat = (idx + n * np.arange(reps)[:, None]).ravel()
    return np.bincount(flat, minlength=reps * n).reshape(reps, n).astype(np.float64)


def probability_of_improvement(
    x: Sequence[Sequence[float]],
    y: Sequence[Sequence[float]],
    reps: int = BOOTSTRAP_REPS,
    confidence: float = CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """P(X > Y): the mean over tasks of the per-task probability that a run of X scores above a run of Y
    (ties one half), with the percentile interval of ``reps`` stratified bootstrap replicates in which X's and
    Y's runs are resampled independently within each task (rliable's ``StratifiedIndependentBootstrap``).
    ``x[k]`` and ``y[k]`` are the per-seed scores of task k; tasks where either is empty are left out.
    Draws: ``numpy.random.default_rng(seed)``, task by task, X's ``(reps, n_x)`` indices then Y's."""

    def arr(v: Sequence[float]) -> np.ndarray:
        return np.asarray(v, dtype=np.float64).ravel()

    pairs = [(arr(a), arr(b)) for a, b in zip(x, y, strict=True)]
    pairs = [(a, b) for a, b in pairs if a.size and b.size]
    n = sum(a.size + b.size for a, b in pairs)
    if not pairs:
        return Interval(math.nan, math.nan, math.nan, reps, 0, 0)
    point = float(np.mean([win_matrix(a, b).mean() for a, b in pairs]))
    rng = np.random.default_rng(seed)
    stats = np.zeros(reps, dtype=np.float64)
    for a, b in pairs:
        # A replicate's P(X > Y) is the mean of the win matrix over its drawn (x, y) pairs: with c_x and c_y the
        # draw counts of each run, c_xᵀ W c_y / (n_x·n_y), one matrix product for all replicates.
        cx = _counts(rng.integers(0, a.size, size=(reps, a.size)), a.size)
        cy = _counts(rng.integers(0, b.size, size=(reps, b.size)), b.size)
        stats += ((cx @ win_matrix(a, b)) * cy).sum(axis=1) / (a.size * b.size)
    stats /= len(pairs)
    low, high = percentile_interval(stats, confidence)
    return Interval(point, float(low), float(high), reps, len(pairs), n)
