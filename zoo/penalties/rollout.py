"""Rollout-stage penalties: the amount subtracted from a model reward when a rollout is stored.

``none``, ``mopo`` (aleatoric, pairwise-diff, ensemble_std) and ``disagreement``; the formulas are
dynamics.md §11 and mopo.md §1. Each is computed without gradient from the per-member means and
log-variances of a :class:`~zoo.protocols.ModelStep` ([E, B, D], columns [Δs, r]) and returns [B, 1]
with the coefficient already applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zoo.config import bounded
from zoo.protocols import ModelStep
from zoo.registry import register

MOPO_MODES = ("aleatoric", "pairwise-diff", "ensemble_std")


def select_members(x: torch.Tensor, members: str, ctx: Any) -> torch.Tensor:
    """The rows of ``x`` [E, ...] of every member ("all") or of the model's elites ("elites")."""
    if members == "all":
        return x
    if members == "elites":
        elites = ctx.model.elites.to(x.device)
        return x.index_select(0, elites)
    raise ValueError(f"penalty members must be 'all' or 'elites', got {members!r}")


def max_std_norm(logvar: torch.Tensor) -> torch.Tensor:
    """max_e ‖σ_e‖₂ over the given dims, [B, 1] (the ``aleatoric`` mode)."""
    return torch.exp(0.5 * logvar).norm(dim=-1).amax(0).unsqueeze(-1)


def pairwise_diff(mean_s: torch.Tensor) -> torch.Tensor:
    """max_e ‖μ^s_e − μ̄^s‖₂ with μ̄^s the member average, [B, 1]."""
    return (mean_s - mean_s.mean(0, keepdim=True)).norm(dim=-1).amax(0).unsqueeze(-1)


def ensemble_std(mean_s: torch.Tensor) -> torch.Tensor:
    """sqrt((1/d_s) Σ_d Var_e μ^s_{e,d}) with the population variance (ddof 0), [B, 1]."""
    return mean_s.var(0, correction=0).mean(-1, keepdim=True).sqrt()


def max_pairwise_distance(mean_s: torch.Tensor) -> torch.Tensor:
    """max_{i,j} ‖μ^s_i − μ^s_j‖₂, [B, 1] (MOReL-style disagreement)."""
    per_row = mean_s.transpose(0, 1)  # [B, E, d_s]
    dist = torch.cdist(per_row, per_row, compute_mode="donot_use_mm_for_euclid_dist")
    return dist.flatten(1).amax(1, keepdim=True)


@register("penalty", "none")
class NoPenalty:
    """No penalty: zeros (rollout stage)."""

    stage = "rollout"

    def __call__(self, step: ModelStep, ctx: Any = None) -> torch.Tensor:
        return torch.zeros_like(step.reward)


@register("penalty", "mopo")
class MopoPenalty:
    """MOPO's reward penalty λ·u(s, a) (mopo.md §1, dynamics.md §11), rollout stage.

    ``mode``: aleatoric (max member std norm, default), pairwise-diff, ensemble_std. ``members``: all
    (default, mopo.md §5 #1) or elites. ``dims`` applies to the aleatoric mode: all D dims including the
    reward std (default, mopo.md §5 #2) or the state dims only; the mean-based modes always use the
    state-delta dims (dynamics.md §11).
    """

    stage = "rollout"
    population_keys = ("coef",)  # a population calls each run's own penalty (zoo.engine.population)

    @staticmethod
    def requirements(cfg: Any) -> frozenset[str]:
        """The aleatoric mode reads the members' variances; the other modes only their means."""
        return frozenset({"variance"}) if cfg.mode == "aleatoric" else frozenset({"mean"})

    @dataclass
    class Config:
        coef: float = bounded(1.0, ge=0.0)
        mode: str = "aleatoric"
        members: str = "all"
        dims: str = "all"

    def __init__(self, cfg: Config) -> None:
        if cfg.mode not in MOPO_MODES:
            raise ValueError(f"penalty.mode must be one of {', '.join(MOPO_MODES)}; got {cfg.mode!r}")
        if cfg.members not in ("all", "elites"):
            raise ValueError(f"penalty.members must be 'all' or 'elites', got {cfg.members!r}")
        if cfg.dims not in ("all", "state"):
            raise ValueError(f"penalty.dims must be 'all' or 'state', got {cfg.dims!r}")
        self.cfg = cfg

    @torch.no_grad()
    def uncertainty(self, step: ModelStep, ctx: Any = None) -> torch.Tensor:
        """u(s, a) [B, 1] before the coefficient."""
        cfg = self.cfg
        d_s = step.next_obs.shape[-1]
        if cfg.mode == "aleatoric":
            logvar = select_members(step.logvar, cfg.members, ctx)
            if cfg.dims == "state":
                logvar = logvar[..., :d_s]
            return max_std_norm(logvar)
        mean_s = select_members(step.mean, cfg.members, ctx)[..., :d_s]
        return pairwise_diff(mean_s) if cfg.mode == "pairwise-diff" else ensemble_std(mean_s)

    def __call__(self, step: ModelStep, ctx: Any = None) -> torch.Tensor:
        return self.cfg.coef * self.uncertainty(step, ctx)


@register("penalty", "disagreement")
class DisagreementPenalty:
    """coef · max_{i,j} ‖μ^s_i − μ^s_j‖₂ over the members' state-delta means (dynamics.md §11), rollout stage."""

    stage = "rollout"
    population_keys = ("coef",)  # a population calls each run's own penalty (zoo.engine.population)

    @dataclass
    class Config:
        coef: float = bounded(1.0, ge=0.0)
        members: str = "all"

    def __init__(self, cfg: Config) -> None:
        if cfg.members not in ("all", "elites"):
            raise ValueError(f"penalty.members must be 'all' or 'elites', got {cfg.members!r}")
        self.cfg = cfg

    @torch.no_grad()
    def __call__(self, step: ModelStep, ctx: Any = None) -> torch.Tensor:
        d_s = step.next_obs.shape[-1]
        mean_s = select_members(step.mean, self.cfg.members, ctx)[..., :d_s]
        return self.cfg.coef * max_pairwise_distance(mean_s)
