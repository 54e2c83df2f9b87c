"""Branched model rollouts from dataset states (dynamics.md §12, mopo.md §2 step 1).

From ``batch`` start states drawn uniformly with replacement from the real data, the current policy
(stochastic, no gradient) acts in the model for ``horizon`` steps. Every transition is stored,
terminal ones included; only non-terminal branches continue. Rollout-stage penalties (MOPO's) are
subtracted from the reward when the transition is stored; a penalty with a ``halt`` method (MOReL's USAD) also
marks the rows it halts as terminal, so that their branches stop there (the absorbing HALT state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from zoo.engine.buffer import RingBuffer


class DivergenceError(RuntimeError):
    """A model rollout or the critics produced non-finite or exploding values."""


@dataclass
class RolloutStats:
    transitions: int
    mean_length: float
    reward_mean: float
    penalty_mean: float
    terminal_frac: float

    def as_dict(self) -> dict[str, float]:
        return {
            "rollout/transitions": float(self.transitions),
            "rollout/mean_length": self.mean_length,
            "rollout/reward_mean": self.reward_mean,
            "rollout/penalty_mean": self.penalty_mean,
            "rollout/terminal_frac": self.terminal_frac,
        }


@torch.no_grad()
def model_rollout(
    model: Any,
    learner: Any,
    start_obs: torch.Tensor,
    horizon: int,
    termination: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    buffer: RingBuffer,
    penalty: Any = None,
    ctx: Any = None,
    generator: torch.Generator | None = None,
) -> RolloutStats:
    """Roll the policy out in the model and append every transition to ``buffer``."""
    obs = start_obs
    stored = 0
    reward_sum = torch.zeros((), device=obs.device)
    penalty_sum = torch.zeros((), device=obs.device)
    terminal_sum = torch.zeros((), device=obs.device)
    finite = torch.ones((), dtype=torch.bool, device=obs.device)
    for _ in range(horizon):
        if obs.shape[0] == 0:
            break
        act, _, _ = learner.act(obs, deterministic=False, generator=generator)
        step = model.step(obs, act, generator=generator)
        done = termination(obs, act, step.next_obs)
        reward = step.reward
        if penalty is not None:
            if hasattr(penalty, "halt"):
                done = torch.maximum(done, penalty.halt(step, ctx))
            amount = penalty(step, ctx)
            penalty_sum += amount.sum()
            reward = reward - amount
        finite &= torch.isfinite(step.next_obs).all() & torch.isfinite(reward).all()
        buffer.add(obs=obs, act=act, reward=reward, next_obs=step.next_obs, terminal=done)
        stored += obs.shape[0]
        reward_sum += step.reward.sum()
        terminal_sum += done.sum()
        keep = done[:, 0] < 0.5
        obs = step.next_obs[keep]  # one host sync per horizon step (rollouts run every ``every`` steps)
    if not bool(finite):
        raise DivergenceError(
            "the model rollout produced non-finite next states or rewards; the ensemble has diverged "
            "(check the pretraining loss, the rule's step sizes, or lower the rollout horizon)"
        )
    n_start = max(start_obs.shape[0], 1)
    return RolloutStats(
        transitions=stored,
        mean_length=stored / n_start,
        reward_mean=float(reward_sum) / max(stored, 1),
        penalty_mean=float(penalty_sum) / max(stored, 1),
        terminal_frac=float(terminal_sum) / max(stored, 1),
    )

