"""Leaderboard statistics (zoo.bench.stats): mean ± sample std, the IQM, and the stratified-bootstrap interval
checked against an exact enumeration of every bootstrap resample of a small fixed score matrix."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from zoo.bench.stats import iqm, iqm_rows, mean_std, stratified_bootstrap_iqm

# 3 tasks × 4 seeds (rows are tasks): a fixed score matrix.
SCORES = [[10.0, 20.0, 30.0, 40.0], [0.0, 50.0, 60.0, 100.0], [5.0, 15.0, 25.0, 35.0]]


def test_mean_and_sample_std() -> None:
    mean, std, n = mean_std([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4)
    assert std == pytest.approx(math.sqrt(5.0 / 3.0), rel=1e-15)  # ddof = 1
    mean, std, n = mean_std([7.0])
    assert mean == 7.0 and math.isnan(std) and n == 1
    assert mean_std([])[2] == 0


def test_iqm_is_the_25_percent_trimmed_mean_of_the_pooled_scores() -> None:
    # pooled and sorted: 0 5 10 15 20 25 30 35 40 50 60 100; floor(0.25·12) = 3 cut from each end
    assert iqm(np.array(SCORES)) == pytest.approx((15 + 20 + 25 + 30 + 35 + 40) / 6, abs=1e-12)
    # n = 10: floor(2.5) = 2 cut from each end (scipy.stats.trim_mean(x, 0.25))
    assert iqm(np.arange(1.0, 11.0)) == pytest.approx(np.mean(np.arange(3.0, 9.0)), abs=1e-12)
    # n = 3: nothing cut
    assert iqm([1.0, 2.0, 9.0]) == pytest.approx(4.0)
    rows = np.array([[4.0, 1.0, 3.0, 2.0], [10.0, 0.0, 0.0, 10.0]])
    np.testing.assert_allclose(iqm_rows(rows), [iqm(rows[0]), iqm(rows[1])], rtol=0, atol=1e-12)
    assert math.isnan(iqm([]))


def _exact_bootstrap_distribution(groups: list[list[float]]) -> np.ndarray:
    """The IQM of every stratified resample (each task's seeds drawn with replacement, ordered draws), each
    equally likely: the exact distribution that the Monte Carlo bootstrap samples from."""
    per_task = [list(itertools.product(g, repeat=len(g))) for g in groups]
    values = [iqm(np.concatenate(choice)) for choice in itertools.product(*per_task)]
    return np.sort(np.array(values))


@pytest.mark.parametrize(
    "groups",
    [
        [[10.0, 40.0, 25.0], [0.0, 90.0, 55.0]],  # 2 tasks × 3 seeds: 27² = 729 resamples
        [[12.0, 71.0, 33.0], [5.0, 64.0], [48.0, 80.0, 20.0]],  # ragged: a task with a failed seed
    ],
)
def test_bootstrap_interval_matches_the_exact_resampling_distribution(groups: list[list[float]]) -> None:
    exact = _exact_bootstrap_distribution(groups)
    iv = stratified_bootstrap_iqm(groups, reps=50_000, seed=0)
    assert iv.point == pytest.approx(iqm(np.concatenate(groups)), abs=1e-12)
    assert iv.n_tasks == len(groups) and iv.n_scores == sum(map(len, groups)) and iv.reps == 50_000
    # With 50k replicates the percentile's probability level is within ~0.07% (1 s.e.) of 2.5%: the estimate
    # must lie between the exact distribution's 2.0 and 3.0 percentiles (97.0 and 98.0 for the upper end).
    lo_band = np.percentile(exact, [2.0, 3.0])
    hi_band = np.percentile(exact, [97.0, 98.0])
    assert lo_band[0] - 1e-9 <= iv.low <= lo_band[1] + 1e-9, (iv, lo_band)
    assert hi_band[0] - 1e-9 <= iv.high <= hi_band[1] + 1e-9, (iv, hi_band)
    assert iv.low <= iv.point <= iv.high


def test_bootstrap_is_a_pure_function_of_scores_and_seed() -> None:
    a = stratified_bootstrap_iqm(SCORES, reps=4_000, seed=3)
    b = stratified_bootstrap_iqm({"t0": SCORES[0], "t1": SCORES[1], "t2": SCORES[2]}, reps=4_000, seed=3)
    assert a == b  # a dict of tasks and a list of rows are the same input
    assert stratified_bootstrap_iqm(SCORES, reps=4_000, seed=3) == a
    assert stratified_bootstrap_iqm(SCORES, reps=4_000, seed=4).point == a.point


def test_resampling_stays_within_each_task() -> None:
    # Task A's seeds are all 0 and task B's all 100: any stratified resample has six 0s and six 100s in the pool
    # of 12 (never a different mix), so the IQM is 50 in every replicate and the interval has no width.
    iv = stratified_bootstrap_iqm([[0.0] * 6, [100.0] * 6], reps=2_000)
    assert (iv.point, iv.low, iv.high) == (50.0, 50.0, 50.0)
    empty = stratified_bootstrap_iqm([], reps=10)
    assert math.isnan(empty.point) and empty.n_scores == 0
