"""SAC with the CQL(H) conservative critic term, as COMBO uses it on real and model data (combo.md).

Built by composition: a :class:`~zoo.learners.sac.SAC` holds the actor, the batched N critics, their targets,
optimizers and the temperature; this learner only changes the order of one step (actor → α → critic → Polyak,
combo.md §2) and adds the conservative term to the critic loss. Acting, Q-values, schedules and persistence are
SAC's own.

The conservative term of critic j (combo.md §2 step 4):

    C_j = β · ( mean_{s ∈ ρ} T · logsumexp_{3R values}(v_j / T) − mean_{real (s,a)} Q_j(s, a) )

over R actions from each of π(·|s), π(·|s') and U[low, high]^{d_a}, each valued at s with its log-density
subtracted (the importance correction of CQL(H)).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.config import bounded
from zoo.learners.sac import SAC, TargetPenalty, _adam
from zoo.protocols import Batch, EnvSpec
from zoo.registry import register

LSE_LAYOUTS = ("correct", "olk_bug")
RHO_STATES = ("mix", "model")


@register("learner", "cql")
class CQL:
    """SAC + CQL(H) conservative critic term over model and real data (COMBO, combo.md §1-§2, §5)."""

    @dataclass
    class Config(SAC.Config):
        """SAC's keys with COMBO's defaults (combo.md §3), plus the conservative term's own keys."""

        hidden: list[int] = bounded(default_factory=lambda: [256, 256, 256], ge=1)
        alpha_max: float = bounded(math.inf, ge=0.0)  # COMBO/CQL do not clamp α (combo.md §5 #2, sac.md §6 #3)
        deterministic_backup: bool = True
        actor_schedule: str = "cosine"
        cql_weight: float = bounded(1.0, ge=0.0)  # β, per task (combo.md §4)
        temperature: float = bounded(1.0, gt=0.0)  # T
        num_repeat: int = bounded(10, ge=1)  # R actions per source and state
        rho: str = "mix"  # "mix": every batch state; "model": the model rows only (combo.md §2 step 4)
        lse_layout: str = "correct"  # "olk_bug" reproduces OfflineRL-Kit's missing reshape (combo.md §5 #1)
        lagrange: bool = False  # C_j ← α'(C_j − τ_L), α' learned (combo.md §2, optional form)
        lagrange_threshold: float = bounded(10.0, ge=0.0)  # τ_L, the allowed gap of C_j (a non-negative margin)
        cql_alpha_lr: float = bounded(3e-4, gt=0.0)
        cql_alpha_max: float = bounded(1e6, gt=0.0)

    def __init__(self, cfg: Config, spec: EnvSpec, device: torch.device | str = "cpu") -> None:
        if cfg.lse_layout not in LSE_LAYOUTS:
            raise ValueError(f"learner.lse_layout must be one of {', '.join(LSE_LAYOUTS)}, got {cfg.lse_layout!r}")
        if cfg.rho not in RHO_STATES:
            raise ValueError(f"learner.rho must be one of {', '.join(RHO_STATES)}, got {cfg.rho!r}")
        if cfg.num_repeat < 1 or cfg.temperature <= 0:
            raise ValueError("learner.num_repeat must be >= 1 and learner.temperature > 0")
        self.cfg = cfg
        self.spec = spec
        sac_keys = {f.name for f in dataclasses.fields(SAC.Config)}
        self.sac = SAC(SAC.Config(**{k: v for k, v in dataclasses.asdict(cfg).items() if k in sac_keys}), spec, device)
        self.device = self.sac.device
        # log-density of the uniform proposal over the action box: −d_a · log(high − low) (combo.md §5 #6)
        self.uniform_log_density = -spec.act_dim * math.log(spec.act_high - spec.act_low)
        self.log_cql_alpha = nn.Parameter(torch.zeros((), device=self.device), requires_grad=cfg.lagrange)
        self.cql_alpha_optimizer = _adam([self.log_cql_alpha], cfg.cql_alpha_lr, self.device) if cfg.lagrange else None

    # -- protocol: delegated to SAC -----------------------------------------------------------
    @property
    def actor(self) -> nn.Module:
        return self.sac.actor

    @property
    def actor_optimizer(self) -> torch.optim.Optimizer:
        return self.sac.actor_optimizer

    @property
    def critic(self) -> nn.Module:
        return self.sac.critic

    @property
    def generator(self) -> torch.Generator | None:
        return self.sac.generator

    @generator.setter
    def generator(self, value: torch.Generator | None) -> None:
        self.sac.generator = value

    @property
    def alpha(self) -> torch.Tensor:
        return self.sac.alpha

    @property
    def gamma(self) -> float:
        return self.sac.gamma

    def act(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sac.act(obs, deterministic, generator)

    def log_prob(self, obs: torch.Tensor, pre_tanh_action: torch.Tensor) -> torch.Tensor:
        return self.sac.log_prob(obs, pre_tanh_action)

    def q(self, obs: torch.Tensor, act: torch.Tensor, target: bool = False) -> torch.Tensor:
        return self.sac.q(obs, act, target)

    def value(self, obs: torch.Tensor, target: bool = False, action: str = "deterministic") -> torch.Tensor:
        return self.sac.value(obs, target, action)

    def set_total_epochs(self, n: int) -> None:
        self.sac.set_total_epochs(n)

    def epoch_end(self) -> None:
        self.sac.epoch_end()

    # -- the conservative term ------------------------------------------------------------------
    @torch.no_grad()
    def proposal_actions(
        self, obs: torch.Tensor, next_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """R actions per row from π(·|s), π(·|s'), U[low, high] ([R, B, d_a] each) and their log π ([R, B, 1])."""
        r, gen = self.cfg.num_repeat, self.sac.generator
        rep_obs = obs.unsqueeze(0).expand(r, *obs.shape)
        rep_next = next_obs.unsqueeze(0).expand(r, *next_obs.shape)
        a_pi, _, logp_pi = self.sac.actor.sample(rep_obs, generator=gen)
        a_next, _, logp_next = self.sac.actor.sample(rep_next, generator=gen)
        low, high = self.spec.act_low, self.spec.act_high
        a_unif = low + (high - low) * torch.rand(a_pi.shape, device=obs.device, dtype=obs.dtype, generator=gen)
        return a_pi, logp_pi, a_next, logp_next, a_unif

    def conservative_lse(
        self,
        obs: torch.Tensor,
        a_pi: torch.Tensor,
        logp_pi: torch.Tensor,
        a_next: torch.Tensor,
        logp_next: torch.Tensor,
        a_unif: torch.Tensor,
    ) -> torch.Tensor:
        """T · logsumexp of the importance-corrected Q-values, [N, B, 1] ("correct": over all 3R values of a
        state) or [N, R, B, 1] ("olk_bug": over the 3 sources of each (state, repeat) pair)."""
        r = self.cfg.num_repeat
        rep_obs = obs.unsqueeze(0).expand(r, *obs.shape)
        actions = torch.cat([a_pi, a_next, a_unif])  # [3R, B, d_a]: one pass through the critics
        q = self.sac.critic(rep_obs.repeat(3, 1, 1), actions)  # [N, 3R, B, 1]
        correction = torch.cat(
            [logp_pi, logp_next, torch.full_like(logp_pi, self.uniform_log_density)]
        )  # [3R, B, 1]
        values = (q - correction) / self.cfg.temperature
        if self.cfg.lse_layout == "olk_bug":
            values = values.view(values.shape[0], 3, r, *values.shape[2:])  # [N, 3, R, B, 1]
        return self.cfg.temperature * torch.logsumexp(values, dim=1)

    def conservative_term(self, batch: Batch, q_pred: torch.Tensor) -> torch.Tensor:
        """C_j [N] (combo.md §2 step 4): β (mean over ρ of the log-sum-exp − mean over real rows of Q_j)."""
        proposals = self.proposal_actions(batch.obs, batch.next_obs)
        lse = self.conservative_lse(batch.obs, *proposals)
        weight = batch.is_model if self.cfg.rho == "model" else torch.ones_like(batch.is_model)  # [B, 1]
        lse_mean = (lse * weight).sum(dim=(-2, -1)) / weight.sum().clamp_min(1.0)
        if lse_mean.dim() == 2:  # olk_bug: also averaged over the R repeats
            lse_mean = lse_mean.mean(1)
        real = 1.0 - batch.is_model
        q_data = (q_pred * real).sum(dim=(1, 2)) / real.sum().clamp_min(1.0)
        return self.cfg.cql_weight * (lse_mean - q_data)

    # -- protocol: one gradient step ----------------------------------------------------------
    def update(self, batch: Batch, target_penalty: TargetPenalty | None = None) -> dict[str, torch.Tensor]:
        """One COMBO step in OfflineRL-Kit's order: actor → α → critic (TD + C_j) → Polyak (combo.md §2)."""
        sac = self.sac
        alpha = sac.alpha
        actor_loss, logp_mean = sac.actor_step(batch.obs, alpha)
        sac.alpha_step(logp_mean)

        y, penalty = sac.critic_target_value(batch, target_penalty)
        q_pred = sac.critic(batch.obs, batch.act)  # [N, B, 1]
        td_loss = (q_pred - y).square().mean(dim=(1, 2))  # [N]
        conservative = self.conservative_term(batch, q_pred)  # [N]
        metrics: dict[str, torch.Tensor] = {}
        if self.cql_alpha_optimizer is not None:
            cql_alpha = self.log_cql_alpha.exp().clamp(0.0, self.cfg.cql_alpha_max)
            conservative = cql_alpha * (conservative - self.cfg.lagrange_threshold)
            cql_alpha_loss = -0.5 * conservative.sum()
            self.cql_alpha_optimizer.zero_grad(set_to_none=True)
            cql_alpha_loss.backward(inputs=[self.log_cql_alpha], retain_graph=True)
            self.cql_alpha_optimizer.step()
            metrics["cql_alpha"] = cql_alpha.detach()
        critic_loss = (td_loss + conservative).sum()
        sac.critic_step(critic_loss)
        sac.polyak()

        q_det = q_pred.detach()
        metrics.update(
            critic_loss=critic_loss.detach(),
            td_loss=td_loss.detach().sum(),
            conservative=conservative.detach().mean(),
            actor_loss=actor_loss,
            alpha=alpha,
            q_mean=q_det.mean(),
            q_max=q_det.max(),
            log_pi=logp_mean,
        )
        if penalty is not None:
            metrics["penalty_mean"] = penalty.detach().mean()
        return metrics

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "sac": self.sac.state_dict(),
            "log_cql_alpha": self.log_cql_alpha.detach().clone(),
            "cql_alpha_optimizer": None if self.cql_alpha_optimizer is None else self.cql_alpha_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sac.load_state_dict(state["sac"])
        with torch.no_grad():
            self.log_cql_alpha.copy_(state["log_cql_alpha"])
        if self.cql_alpha_optimizer is not None and state.get("cql_alpha_optimizer") is not None:
            import copy

            self.cql_alpha_optimizer.load_state_dict(copy.deepcopy(state["cql_alpha_optimizer"]))
