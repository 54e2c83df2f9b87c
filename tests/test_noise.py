"""The noisy-observation evaluation wrapper (evaluation.md §4, rombrl.md §6) on real Gymnasium envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from zoo.engine.evaluate import evaluate_policy
from zoo.tasks.noise import RelativeDeltaObservationNoise, with_observation_noise


def rollout(env: gym.Env, steps: int, seed: int) -> tuple[list, list, list, list]:
    """Seen observations, true observations, rewards, terminations under a fixed random action sequence."""
    actions = np.random.default_rng(123).uniform(-1, 1, size=(steps,) + env.action_space.shape)
    obs, info = env.reset(seed=seed)
    seen, true, rewards, terms = [obs], [info.get("true_obs", obs)], [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a.astype(env.action_space.dtype))
        seen.append(obs)
        true.append(info.get("true_obs", obs))
        rewards.append(r)
        terms.append(term)
        if term or trunc:
            break
    return seen, true, rewards, terms


def test_noise_has_the_relative_delta_scale_on_pendulum() -> None:
    """(õ_{t+1} − s_{t+1}) / (σ (s_{t+1} − õ_t)) is a standard normal per dimension: mean 0, std 1."""
    sigma = 0.05
    env = RelativeDeltaObservationNoise(gym.make("Pendulum-v1", max_episode_steps=100_000), sigma, noise_seed=7)
    seen, true, _, _ = rollout(env, 30_000, seed=0)
    seen, true = np.asarray(seen, dtype=np.float64), np.asarray(true, dtype=np.float64)
    assert np.array_equal(seen[0], true[0])  # õ_0 = s_0
    delta = true[1:] - seen[:-1]
    keep = np.abs(delta) > 1e-4  # avoid dividing by a vanishing step (float32 observations)
    z = ((seen[1:] - true[1:]) / (sigma * delta))[keep]
    assert z.size > 50_000
    assert abs(z.mean()) < 0.02
    assert z.std() == pytest.approx(1.0, rel=0.03)
    # and the noise really is there, about 5 % of the step, not of the state
    ratio = np.abs(seen[1:] - true[1:])[keep] / np.abs(delta)[keep]
    assert np.median(ratio) == pytest.approx(sigma * 0.6745, rel=0.05)  # median |N(0,1)| = 0.6745


def test_the_simulator_is_never_perturbed_on_mujoco() -> None:
    """Same seed and actions: the wrapped env's true observations, rewards and terminations equal the clean env's."""
    clean = rollout(gym.make("Hopper-v4"), 200, seed=3)
    noisy = rollout(RelativeDeltaObservationNoise(gym.make("Hopper-v4"), 0.05, noise_seed=1), 200, seed=3)
    np.testing.assert_array_equal(np.asarray(noisy[1]), np.asarray(clean[0]))
    assert noisy[2] == clean[2] and noisy[3] == clean[3]
    assert not np.allclose(np.asarray(noisy[0])[1:], np.asarray(clean[0])[1:])  # the policy sees something else


def test_noise_is_reproducible_per_reset_seed() -> None:
    a = rollout(RelativeDeltaObservationNoise(gym.make("Pendulum-v1"), 0.05, noise_seed=5), 50, seed=11)[0]
    b = rollout(RelativeDeltaObservationNoise(gym.make("Pendulum-v1"), 0.05, noise_seed=5), 50, seed=11)[0]
    c = rollout(RelativeDeltaObservationNoise(gym.make("Pendulum-v1"), 0.05, noise_seed=6), 50, seed=11)[0]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_unknown_noise_protocol_is_an_error() -> None:
    assert isinstance(with_observation_noise(gym.make("Pendulum-v1"), "none"), gym.Env)
    with pytest.raises(ValueError, match="relative_delta"):
        with_observation_noise(gym.make("Pendulum-v1"), "uniform")
    with pytest.raises(ValueError, match="relative_delta"):
        evaluate_policy(lambda o: o[:, :1], lambda: gym.make("Pendulum-v1"), 1, [0], noise="uniform")


def test_evaluation_under_noise_changes_what_the_policy_sees_only() -> None:
    """A policy that ignores observations gets the same returns with and without noise; one that reads them does not."""

    def blind(obs: torch.Tensor) -> torch.Tensor:
        return torch.full((obs.shape[0], 1), 0.5)

    def reader(obs: torch.Tensor) -> torch.Tensor:
        return torch.clamp(-2.0 * obs[:, 2:3], -2.0, 2.0)

    make = lambda: gym.make("Pendulum-v1")  # noqa: E731
    seeds = [1, 2, 3]
    blind_clean = evaluate_policy(blind, make, 3, seeds).returns
    blind_noisy = evaluate_policy(blind, make, 3, seeds, noise="relative_delta", noise_scale=0.5).returns
    np.testing.assert_allclose(blind_noisy, blind_clean)
    read_clean = evaluate_policy(reader, make, 3, seeds).returns
    read_noisy = evaluate_policy(reader, make, 3, seeds, noise="relative_delta", noise_scale=0.5).returns
    assert not np.allclose(read_noisy, read_clean)
