"""Performance profiles and the probability of improvement (rliable's definitions, Agarwal et al. 2021) against
direct computations on a fixed score matrix: the point values by counting, the bootstrap bands by replaying the
documented draws with plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.bench.stats import performance_profile, probability_of_improvement, score_distribution

X = [[10.0, 20.0, 30.0], [50.0, 60.0, 70.0]]  # algorithm X: task -> per-seed scores
Y = [[20.0, 20.0, 5.0], [65.0, 40.0, 90.0, 61.0]]  # Y has a fourth seed on task 2
TAUS = [0.0, 20.0, 55.0, 70.0, 100.0]


def test_score_distribution_counts_runs_strictly_above_each_threshold() -> None:
    pooled = [s for task in X for s in task]
    assert score_distribution(pooled, TAUS).tolist() == [6 / 6, 4 / 6, 2 / 6, 0.0, 0.0]
    profile = performance_profile(X, TAUS, reps=50)
    assert profile.point.tolist() == [1.0, 4 / 6, 2 / 6, 0.0, 0.0] and profile.n_scores == 6


def test_profile_band_replays_the_stratified_draws() -> None:
    reps, seed = 64, 3
    profile = performance_profile(X, TAUS, reps=reps, seed=seed)
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, len(task), size=(reps, len(task))) for task in X]  # task by task, all replicates
    curves = np.zeros((reps, len(TAUS)))
    for r in range(reps):
        draw = [X[k][i] for k in range(len(X)) for i in idx[k][r]]
        for j, tau in enumerate(TAUS):
            curves[r, j] = sum(1 for s in draw if s > tau) / len(draw)
    np.testing.assert_allclose(profile.low, np.percentile(curves, 2.5, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(profile.high, np.percentile(curves, 97.5, axis=0), rtol=0, atol=1e-12)
    assert np.all(profile.low <= profile.point) and np.all(profile.point <= profile.high)


def _p_task(x: list[float], y: list[float]) -> float:
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    return wins / (len(x) * len(y))


def test_probability_of_improvement_point_is_the_mean_over_tasks_of_mann_whitney_u() -> None:
    # Counted by hand (U / (n_x·n_y), a tie one half):
    # task 1: 10 beats 5; 20 ties 20 twice and beats 5; 30 beats all three -> 6/9
    # task 2: 50 > 40; 60 > 40; 70 > 65, 40, 61 -> 5/12
    result = probability_of_improvement(X, Y, reps=100)
    assert result.point == pytest.approx((6 / 9 + 5 / 12) / 2, abs=1e-15)
    assert (result.n_tasks, result.n_scores) == (2, 13)
    reverse = probability_of_improvement(Y, X, reps=100)
    assert result.point + reverse.point == pytest.approx(1.0, abs=1e-15)
    same = probability_of_improvement(X, X, reps=100)
    assert same.point == 0.5  # rliable's value for identical score sets


def test_probability_of_improvement_interval_replays_the_independent_draws() -> None:
    reps, seed = 80, 11
    result = probability_of_improvement(X, Y, reps=reps, seed=seed)
    rng = np.random.default_rng(seed)
    per_task = []
    for x, y in zip(X, Y, strict=True):
        xi = rng.integers(0, len(x), size=(reps, len(x)))
        yi = rng.integers(0, len(y), size=(reps, len(y)))
        per_task.append([_p_task([x[i] for i in xi[r]], [y[i] for i in yi[r]]) for r in range(reps)])
    stats = np.mean(per_task, axis=0)
    assert result.low == pytest.approx(np.percentile(stats, 2.5), abs=1e-12)
    assert result.high == pytest.approx(np.percentile(stats, 97.5), abs=1e-12)
    assert result.low <= result.point <= result.high


def test_tasks_missing_from_either_side_are_left_out() -> None:
    result = probability_of_improvement([[1.0, 2.0], []], [[0.0], [5.0]], reps=10)
    assert result.point == 1.0 and result.n_tasks == 1
