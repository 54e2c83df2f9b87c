"""MOReL's pessimistic MDP (Kidambi et al., NeurIPS 2020): the unknown-state detector and the HALT state.

USAD (the unknown state-action detector): a pair (s, a) is unknown when the ensemble's disagreement

    disc(s, a) = max_{i,j} ‖ŝ'_i(s, a) − ŝ'_j(s, a)‖₂        (largest pairwise distance of the members' next states)

exceeds a threshold set from its distribution over the dataset. MOReL's code sets threshold = max_D disc / p with
the pessimism coefficient p = 3 (``threshold_stat = "max"``); ``"quantile"`` takes the ``quantile``-th quantile
instead, and ``threshold > 0`` fixes it. An unknown transition goes to the absorbing HALT state: it is stored as
terminal (no bootstrapping past it, its branch stops) with reward r̂ − κ (MOReL's code adds the truncation reward
to the last reward, ``reward = "code"``) or −κ (the paper's P-MDP, ``reward = "paper"``).

Rollout stage: the trainer subtracts ``penalty(step, ctx)`` from the stored reward and ORs ``penalty.halt(step,
ctx)`` into the terminal flag (zoo.engine.rollout). It needs only the members' means, so it works with both
dynamics families. The threshold is computed once, on the first call, from the context's dataset and model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zoo.config import bounded
from zoo.penalties.rollout import max_pairwise_distance, select_members
from zoo.protocols import ModelStep
from zoo.registry import register

DATASET_CHUNK = 8192  # rows per gradient-free pass when the threshold is measured on the dataset


def usad_threshold(disagreement: torch.Tensor, stat: str, pessimism: float, quantile: float) -> torch.Tensor:
    """The USAD threshold from the dataset's disagreements [N, 1]: max / p ("max") or the q-quantile / p."""
    if stat == "max":
        value = disagreement.max()
    elif stat == "quantile":
        value = torch.quantile(disagreement.flatten(), quantile)
    else:
        raise ValueError(f"penalty.threshold_stat must be 'max' or 'quantile', got {stat!r}")
    return value / pessimism


@register("penalty", "morel")
class MorelHaltPenalty:
    """MOReL's USAD halt: disagreement above a dataset-derived threshold → absorbing HALT with reward −κ."""

    stage = "rollout"
    population_keys = ("kappa", "pessimism")  # a population calls each run's own penalty (zoo.engine.population)

    @dataclass
    class Config:
        kappa: float = bounded(0.0, ge=0.0)  # κ; MOReL's D4RL config: truncate_reward 0
        pessimism: float = bounded(3.0, gt=0.0)  # p; threshold = statistic / p
        threshold_stat: str = "max"  # "max" (MOReL's code) | "quantile"
        quantile: float = bounded(0.99, ge=0.0, le=1.0)
        threshold: float = bounded(0.0, ge=0.0)  # > 0: a fixed threshold instead
        members: str = "all"  # "all" (MOReL) | "elites"
        reward: str = "code"  # "code": r̂ − κ on the halting step; "paper": −κ

    def __init__(self, cfg: Config) -> None:
        if cfg.threshold_stat not in ("max", "quantile"):
            raise ValueError(f"penalty.threshold_stat must be 'max' or 'quantile', got {cfg.threshold_stat!r}")
        if cfg.members not in ("all", "elites"):
            raise ValueError(f"penalty.members must be 'all' or 'elites', got {cfg.members!r}")
        if cfg.reward not in ("code", "paper"):
            raise ValueError(f"penalty.reward must be 'code' or 'paper', got {cfg.reward!r}")
        self.cfg = cfg
        self.threshold: torch.Tensor | None = None

    @torch.no_grad()
    def disagreement(self, mean: torch.Tensor, ctx: Any) -> torch.Tensor:
        """disc [B, 1] from per-member predictions [E, B, D] (columns [Δs, r]; the state part is used)."""
        d_s = mean.shape[-1] - 1
        return max_pairwise_distance(select_members(mean, self.cfg.members, ctx)[..., :d_s])

    @torch.no_grad()
    def fit_threshold(self, ctx: Any) -> torch.Tensor:
        """Measure the dataset's disagreement distribution once and set the threshold (a 0-d tensor)."""
        if self.cfg.threshold > 0:
            self.threshold = torch.tensor(self.cfg.threshold, device=ctx.data.obs.device)
            return self.threshold
        obs, act = ctx.data.obs, ctx.data.act
        parts = [
            self.disagreement(ctx.model.forward(obs[i : i + DATASET_CHUNK], act[i : i + DATASET_CHUNK])[0], ctx)
            for i in range(0, obs.shape[0], DATASET_CHUNK)
        ]
        self.threshold = usad_threshold(
            torch.cat(parts), self.cfg.threshold_stat, self.cfg.pessimism, self.cfg.quantile
        )
        return self.threshold

    @torch.no_grad()
    def halt(self, step: ModelStep, ctx: Any) -> torch.Tensor:
        """1.0 where (s, a) is unknown (disc > threshold), else 0.0; [B, 1]."""
        if self.threshold is None:
            self.fit_threshold(ctx)
        assert self.threshold is not None
        return (self.disagreement(step.mean, ctx) > self.threshold).to(step.reward.dtype)

    @torch.no_grad()
    def __call__(self, step: ModelStep, ctx: Any = None) -> torch.Tensor:
        """The amount subtracted from the model reward: κ on halting rows ("paper": r̂ + κ, leaving −κ)."""
        halted = self.halt(step, ctx)
        amount = torch.full_like(step.reward, self.cfg.kappa)
        if self.cfg.reward == "paper":
            amount = amount + step.reward
        return halted * amount
