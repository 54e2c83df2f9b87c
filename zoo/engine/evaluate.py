"""Parallel policy evaluation (evaluation.md §3, §4).

All episodes of one evaluation run at once in a Gymnasium ``SyncVectorEnv``; the deterministic policy
acts on the whole batch of observations. Episode k of evaluation number e of a run with seed s resets
with seed ``eval_seed(s, e, k)``. Under the ``relative_delta`` noise protocol only the observation the
policy sees is perturbed (evaluation.md §4), by ``zoo.tasks.noise.RelativeDeltaObservationNoise`` around
each env; rewards and termination come from the true env.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from zoo.engine.normalizer import ObsNormalizer
from zoo.tasks.noise import NOISE_MODES, with_observation_noise


def eval_seed(seed: int, evaluation: int, episode: int) -> int:
    """A distinct, reproducible reset seed per (run seed, evaluation index, episode)."""
    return (seed * 1_000_003 + evaluation * 1_009 + episode) % (2**31 - 1)


@dataclass
class EvalResult:
    returns: np.ndarray  # [episodes]
    lengths: np.ndarray  # [episodes]

    @property
    def return_mean(self) -> float:
        return float(self.returns.mean())

    @property
    def return_std(self) -> float:
        return float(self.returns.std())


def evaluate_policy(
    act: Callable[[torch.Tensor], torch.Tensor],
    make_env: Callable[[], gym.Env],
    episodes: int,
    seeds: list[int],
    normalizer: ObsNormalizer | None = None,
    device: torch.device | str = "cpu",
    noise: str = "none",
    noise_scale: float = 0.05,
    noise_seed: int = 0,
    max_steps: int = 100_000,
) -> EvalResult:
    """Run ``episodes`` episodes in parallel with the deterministic policy ``act`` (batch in, batch out)."""
    if len(seeds) != episodes:
        raise ValueError(f"need one seed per episode: {episodes} episodes, {len(seeds)} seeds")
    normalizer = normalizer or ObsNormalizer()
    if noise not in NOISE_MODES:
        raise ValueError(f"unknown eval noise {noise!r}; use one of {', '.join(NOISE_MODES)}")

    def make_seen_env() -> gym.Env:
        return with_observation_noise(make_env(), noise, noise_scale, noise_seed)

    envs = gym.vector.SyncVectorEnv([make_seen_env for _ in range(episodes)])
    try:
        seen, _ = envs.reset(seed=seeds)
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        active = np.ones(episodes, dtype=bool)
        for _ in range(max_steps):
            with torch.no_grad():
                obs_t = torch.as_tensor(np.asarray(seen), dtype=torch.float32, device=device)
                action = act(normalizer.normalize(obs_t)).cpu().numpy()
            obs, reward, terminated, truncated, _ = envs.step(action)
            returns += np.where(active, reward, 0.0)
            lengths += active
            active &= ~(terminated | truncated)
            if not active.any():
                break
            seen = obs
        return EvalResult(returns=returns, lengths=lengths)
    finally:
        envs.close()
