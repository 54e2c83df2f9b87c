"""MOBILE's Model-Bellman inconsistency penalty, a critic-target modifier (mobile.md §1-§2, §5).

Target stage: the learner calls it while building critic targets, ``y = r − β·u + γ(1 − d)V̄``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from zoo.config import bounded
from zoo.protocols import Batch
from zoo.registry import register


@register("penalty", "mobile")
class MobilePenalty:
    """β·u(s, a) with u the std over elites of the mean over N sampled next states of min_j Q̄_j(s', a').

    ``form="code"`` (default, mobile.md §1): u = Std_e( (1/N) Σ_k min_j Q̄_j(s'_{e,k}, a'_{e,k}) ).
    ``form="paper"`` (mobile.md §5 #5): u = Std_e( (1/N) Σ_k [r̂_{e,k} + γ min_j Q̄_j(s'_{e,k}, a'_{e,k})] ).
    Next states come from the model's elites (``members="elites"``) or from all members (``"all"``,
    sampled from ``forward``); next actions are stochastic samples of the current actor; values use the
    learner's target critics. Zero on real rows; no gradient.
    """

    stage = "target"
    population_keys = ("coef",)  # a population calls each run's own penalty (zoo.engine.population)

    @dataclass
    class Config:
        coef: float = bounded(1.0, ge=0.0)
        samples: int = bounded(10, ge=1)
        members: str = "elites"
        ddof: int = bounded(1, ge=0)
        form: str = "code"

    def __init__(self, cfg: Config) -> None:
        if cfg.form not in ("code", "paper"):
            raise ValueError(f"penalty.form must be 'code' or 'paper', got {cfg.form!r}")
        if cfg.members not in ("all", "elites"):
            raise ValueError(f"penalty.members must be 'all' or 'elites', got {cfg.members!r}")
        if cfg.samples < 1:
            raise ValueError(f"penalty.samples must be >= 1, got {cfg.samples}")
        self.cfg = cfg

    def _sample_next(self, obs: torch.Tensor, act: torch.Tensor, ctx: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next states [n, M, B, d_s] and, for the paper form, rewards [n, M, B, 1]."""
        n, paper = self.cfg.samples, self.cfg.form == "paper"
        generator = getattr(ctx, "generator", None)
        if self.cfg.members == "elites":
            out = ctx.model.sample_next_states(obs, act, n, generator=generator, with_reward=paper)
            return out if paper else (out, None)
        mean, logvar = ctx.model.forward(obs, act)  # every member: [E, B, D], columns [Δs, r]
        noise = torch.randn((n, *mean.shape), dtype=mean.dtype, device=mean.device, generator=generator)
        y = mean + torch.exp(0.5 * logvar) * noise
        d_s = obs.shape[-1]
        return obs + y[..., :d_s], (y[..., d_s:] if paper else None)

    @torch.no_grad()
    def uncertainty(self, batch: Batch, learner: Any, ctx: Any) -> torch.Tensor:
        """u(s, a) [B, 1] on every row (real rows included), before the coefficient."""
        next_obs, reward = self._sample_next(batch.obs, batch.act, ctx)
        n, members, b, d_s = next_obs.shape
        flat = next_obs.reshape(-1, d_s)  # one pass through the critics: n·M·B rows
        act, _, _ = learner.act(flat, deterministic=False, generator=getattr(ctx, "generator", None))
        q = learner.q(flat, act, target=True).amin(0).view(n, members, b, 1)
        if reward is not None:
            q = reward + learner.gamma * q
        return q.mean(0).std(0, correction=self.cfg.ddof)

    def __call__(self, batch: Batch, learner: Any, ctx: Any) -> torch.Tensor:
        """β·u on the model rows, zero on the real ones. When the batch says where its model rows start
        (``n_real``), u is computed on those rows only: the real rows' values would be zeroed anyway, and
        skipping them saves most of the cost with half real rows (the values of the model rows follow the same
        formula; only which random draws they use differs)."""
        start = batch.n_real or 0
        if start >= len(batch):  # no model rows
            return torch.zeros_like(batch.is_model)
        model_rows = batch.rows_from(start)  # the whole batch when n_real is not known
        penalty = self.cfg.coef * self.uncertainty(model_rows, learner, ctx) * model_rows.is_model
        return torch.cat([torch.zeros_like(batch.is_model[:start]), penalty])

    def bind(self, ctx: Any) -> Callable[[Batch, Any], torch.Tensor]:
        """The ``target_penalty`` callable ``(batch, learner) -> [B, 1]`` that ``Learner.update`` takes."""
        return lambda batch, learner: self(batch, learner, ctx)
