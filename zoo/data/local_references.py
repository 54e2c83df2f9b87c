"""Reference returns of the locally collected datasets (the ``quick`` suite) and how they are measured.

These sit below both ``zoo.data`` (the collector needs them to pick the ``medium`` checkpoint and to write
reference scores into a dataset's metadata) and ``zoo.tasks`` (the reference tables re-export them), so that
imports between the two packages point one way: ``zoo.tasks`` → ``zoo.data``.

Normalized score = 100 · (R − R_min) / (R_max − R_min) (evaluation.md §1) with, for Pendulum-v1:
- R_min: the mean return of uniform random actions (:func:`measure_random_return`);
- R_max: the mean return of the final policy of the behaviour run acting deterministically
  (:func:`measure_policy_return`), as D4RL's expert reference is the evaluation of its final SAC policy, not
  the return of the (sampled) expert data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Mean return of uniform random actions on Pendulum-v1 over 100 episodes, episode k reset with seed k
# (k = 0..99) and its actions drawn from numpy.random.default_rng(k); measured with
# measure_random_return("Pendulum-v1") on gymnasium 1.4.0.
PENDULUM_RANDOM_RETURN: float = -1197.1835879206956
# Mean return of the quick suite's expert policy on Pendulum-v1: the final policy of the online SAC run of
# zoo.data.behaviour (seed 0, 8000 env steps, one thread), acting deterministically for 100 episodes reset
# with seeds 0..99 (measure_policy_return); measured on torch 2.13.0 CPU, gymnasium 1.4.0, with the
# population-capable SAC of collection protocol 2 (protocol 1's SAC gave -145.12).
PENDULUM_EXPERT_RETURN: float = -143.4775695114968
PENDULUM_REFERENCE_SOURCE = (
    "zoo: R_min = measured mean return of uniform random actions (100 episodes, seeds 0-99, Pendulum-v1); "
    "R_max = measured mean return of the zoo's online-SAC expert acting deterministically (100 episodes, seeds 0-99)"
)


def _mean_return(env_id: str, episodes: int, act: Callable[[int, np.ndarray], np.ndarray], **env_kwargs: Any) -> float:
    """Mean undiscounted return over ``episodes`` episodes, episode k reset with seed k; ``act(k, obs)`` acts."""
    import gymnasium as gym

    env = gym.make(env_id, **env_kwargs)
    total = 0.0
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=k)
            ret, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(act(k, np.asarray(obs)))
                ret += float(reward)
                done = terminated or truncated
            total += ret
    finally:
        env.close()
    return total / episodes


def measure_random_return(env_id: str, episodes: int = 100, **env_kwargs: Any) -> float:
    """Mean return of uniform random actions: episode k is reset with seed k and draws its actions from
    ``numpy.random.default_rng(k)`` (k = 0 .. episodes − 1). How the Pendulum R_min was measured."""
    import gymnasium as gym

    probe = gym.make(env_id, **env_kwargs)
    space = probe.action_space
    probe.close()
    low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
    rngs: dict[int, np.random.Generator] = {}

    def act(k: int, obs: np.ndarray) -> np.ndarray:
        if k not in rngs:
            rngs[k] = np.random.default_rng(k)
        return rngs[k].uniform(low, high).astype(space.dtype)

    return _mean_return(env_id, episodes, act, **env_kwargs)


def measure_policy_return(env_id: str, policy: Any, episodes: int = 100, **env_kwargs: Any) -> float:
    """Mean return of ``policy.act`` (a batch-in, batch-out behaviour policy) over ``episodes`` episodes,
    episode k reset with seed k. With the behaviour run's final deterministic policy this is the Pendulum R_max."""
    return _mean_return(env_id, episodes, lambda k, obs: np.asarray(policy.act(obs[None]))[0], **env_kwargs)
