"""Observation noise at evaluation time as a Gymnasium wrapper (evaluation.md §4, rombrl.md §6).

The ``relative_delta`` protocol of ROMBRL: only the observation handed to the policy is perturbed; the
simulator state, the rewards and the termination stay those of the true env.

    õ_0 = s_0
    õ_{t+1} = s_{t+1} + σ · ξ_t ⊙ (s_{t+1} − õ_t),   ξ_t ~ N(0, I) per dimension, σ = 0.05 by default

The noise is re-centred on the true state every step, so it does not accumulate; its per-dimension std is
σ·|s_{t+1} − õ_t|. Which suites apply it is decided by the suite file alone (``noise``, ``noise_scale``).

Seeding (our choice; the spec leaves it open): the wrapper's generator is re-seeded from
``(noise_seed, reset seed)`` whenever ``reset`` gets a seed, so an episode's noise is a function of the run's
evaluation seeds only, independent of how many episodes run side by side in a vector env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

NOISE_MODES: tuple[str, ...] = ("none", "relative_delta")


class RelativeDeltaObservationNoise(gym.Wrapper):
    """Perturbs the observations an agent sees with the ``relative_delta`` protocol; ``info["true_obs"]`` keeps
    the clean observation. The reset observation is returned clean (õ_0 = s_0)."""

    def __init__(self, env: gym.Env, scale: float = 0.05, noise_seed: int = 0) -> None:
        super().__init__(env)
        if scale < 0:
            raise ValueError(f"noise scale must be >= 0, got {scale}")
        self.scale = float(scale)
        self.noise_seed = int(noise_seed)
        self._rng = np.random.default_rng(self.noise_seed)
        self._last: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._rng = np.random.default_rng([self.noise_seed, int(seed)])
        self._last = np.array(obs, dtype=np.float64, copy=True)
        info = dict(info, true_obs=obs)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._last is None:
            raise RuntimeError("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        true = np.asarray(obs, dtype=np.float64)
        noisy = true + self.scale * self._rng.standard_normal(true.shape) * (true - self._last)
        self._last = noisy
        info = dict(info, true_obs=obs)
        return noisy.astype(np.asarray(obs).dtype, copy=False), reward, terminated, truncated, info


def with_observation_noise(env: gym.Env, noise: str, scale: float = 0.05, noise_seed: int = 0) -> gym.Env:
    """Wrap ``env`` for the named noise protocol (``none`` returns it unchanged)."""
    if noise in ("none", "", None):
        return env
    if noise == "relative_delta":
        return RelativeDeltaObservationNoise(env, scale=scale, noise_seed=noise_seed)
    raise ValueError(f"unknown observation noise {noise!r}; use one of {', '.join(NOISE_MODES)}")
