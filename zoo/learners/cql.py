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
from zoo.learners.sac import SAC, TargetPenalty, _adam, concat_rows, slice_rows
from zoo.protocols import Batch, EnvSpec
from zoo.registry import register

LSE_LAYOUTS = ("correct", "olk_bug")
RHO_STATES = ("mix", "model")


@register("learner", "cql")
class CQL:
    """SAC + CQL(H) conservative critic term over model and real data (COMBO, combo.md §1-§2, §5).

    Populations (zoo.engine.population): the composed SAC is a population, the conservative term is computed for
    every run at once ([P, N] terms), and β (``cql_weight``, the per-task knob of combo.md §4) may differ between
    runs, besides SAC's population keys. A single run is the population of one.
    """

    supports_population = True
    population_keys = ("tau", "gamma", "actor_lr", "critic_lr", "alpha_lr", "cql_weight")  # SAC's, and β

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

    def __init__(
        self,
        cfg: Config,
        spec: EnvSpec,
        device: torch.device | str = "cpu",
        members: list[Any] | None = None,
        generators: list[torch.Generator | None] | None = None,
    ) -> None:
        if cfg.lse_layout not in LSE_LAYOUTS:
            raise ValueError(f"learner.lse_layout must be one of {', '.join(LSE_LAYOUTS)}, got {cfg.lse_layout!r}")
        if cfg.rho not in RHO_STATES:
            raise ValueError(f"learner.rho must be one of {', '.join(RHO_STATES)}, got {cfg.rho!r}")
        if cfg.num_repeat < 1 or cfg.temperature <= 0:
            raise ValueError("learner.num_repeat must be >= 1 and learner.temperature > 0")
        self.cfg = cfg
        self.spec = spec
        self.member_cfgs = list(members) if members else [cfg]
        sac_keys = {f.name for f in dataclasses.fields(SAC.Config)}

        def sac_config(c: Any) -> SAC.Config:
            return SAC.Config(**{k: v for k, v in dataclasses.asdict(c).items() if k in sac_keys})

        self.sac = SAC(sac_config(cfg), spec, device, [sac_config(c) for c in self.member_cfgs], generators)
        self.population = self.sac.population
        self.device = self.sac.device
        self._cql_weight = torch.tensor([float(c.cql_weight) for c in self.member_cfgs], device=self.device).view(-1, 1)
        # log-density of the uniform proposal over the action box: −d_a · log(high − low) (combo.md §5 #6)
        self.uniform_log_density = -spec.act_dim * math.log(spec.act_high - spec.act_low)
        self.log_cql_alpha = nn.Parameter(torch.zeros(self.population, device=self.device), requires_grad=cfg.lagrange)
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

    def member(self, k: int) -> Any:
        """Run k's acting and evaluation methods ([B, ·] shapes); a single run is its own."""
        return self if self.population == 1 and k == 0 else self.sac.member(k)

    def set_total_epochs(self, n: int) -> None:
        self.sac.set_total_epochs(n)

    def epoch_end(self) -> None:
        self.sac.epoch_end()

    # -- the conservative term ------------------------------------------------------------------
    @torch.no_grad()
    def proposal_actions(
        self, obs: torch.Tensor, next_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """R actions per row from π(·|s), π(·|s'), U[low, high] ([P, R, B, d_a] each, for obs [P, B, d_s]) and
        their log π ([P, R, B, 1]); run k draws from its own generator, in this order."""
        r, gens = self.cfg.num_repeat, self.sac.generators
        rep_obs = obs.unsqueeze(1).expand(obs.shape[0], r, *obs.shape[1:])
        rep_next = next_obs.unsqueeze(1).expand(next_obs.shape[0], r, *next_obs.shape[1:])
        a_pi, _, logp_pi = self.sac.actor.sample_pop(rep_obs, gens)
        a_next, _, logp_next = self.sac.actor.sample_pop(rep_next, gens)
        low, high = self.spec.act_low, self.spec.act_high
        uniform = [torch.rand(a_pi.shape[1:], device=obs.device, dtype=obs.dtype, generator=g) for g in gens]
        a_unif = low + (high - low) * (uniform[0].unsqueeze(0) if len(uniform) == 1 else torch.stack(uniform))
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
        """T · logsumexp of the importance-corrected Q-values, [P, N, B, 1] ("correct": over all 3R values of a
        state) or [P, N, R, B, 1] ("olk_bug": over the 3 sources of each (state, repeat) pair)."""
        r = self.cfg.num_repeat
        rep_obs = obs.unsqueeze(1).expand(obs.shape[0], r, *obs.shape[1:])
        actions = torch.cat([a_pi, a_next, a_unif], dim=1)  # [P, 3R, B, d_a]: one pass through the critics
        q = self.sac.critic.forward_pop(rep_obs.repeat(1, 3, 1, 1), actions)  # [P, N, 3R, B, 1]
        correction = torch.cat(
            [logp_pi, logp_next, torch.full_like(logp_pi, self.uniform_log_density)], dim=1
        ).unsqueeze(1)  # [P, 1, 3R, B, 1]
        values = (q - correction) / self.cfg.temperature
        if self.cfg.lse_layout == "olk_bug":
            values = values.view(*values.shape[:2], 3, r, *values.shape[3:])  # [P, N, 3, R, B, 1]
        return self.cfg.temperature * torch.logsumexp(values, dim=2)

    def conservative_term(self, batch: Batch, q_pred: torch.Tensor) -> torch.Tensor:
        """C_j [P, N] (combo.md §2 step 4): β (mean over ρ of the log-sum-exp − mean over real rows of Q_j), for a
        population batch [P, B, ·] and its Q-values [P, N, B, 1]."""
        proposals = self.proposal_actions(batch.obs, batch.next_obs)
        lse = self.conservative_lse(batch.obs, *proposals)
        p = q_pred.shape[0]
        weight = batch.is_model if self.cfg.rho == "model" else torch.ones_like(batch.is_model)  # [P, B, 1]
        count = weight.sum(dim=(1, 2)).clamp_min(1.0)  # [P]
        if lse.dim() == 5:  # olk_bug: [P, N, R, B, 1], also averaged over the R repeats
            lse_mean = ((lse * weight.view(p, 1, 1, -1, 1)).sum(dim=(-2, -1)) / count.view(p, 1, 1)).mean(2)
        else:
            lse_mean = (lse * weight.unsqueeze(1)).sum(dim=(-2, -1)) / count.view(p, 1)
        real = 1.0 - batch.is_model
        q_data = (q_pred * real.unsqueeze(1)).sum(dim=(2, 3)) / real.sum(dim=(1, 2)).clamp_min(1.0).view(p, 1)
        return self._cql_weight * (lse_mean - q_data)

    # -- protocol: one gradient step ----------------------------------------------------------
    def update(self, batch: Batch, target_penalty: TargetPenalty | None = None) -> dict[str, torch.Tensor]:
        """One COMBO step of a single run on a batch [B, ·] (metrics 0-d)."""
        if self.population != 1:
            raise ValueError(f"a population of {self.population}: use update_pop with a batch [P, B, ...]")
        return {k: v[0] for k, v in self.update_pop(Batch.stack([batch]), target_penalty).items()}

    def update_pop(self, batch: Batch, target_penalty: Any = None) -> dict[str, torch.Tensor]:
        """One COMBO step of every run in OfflineRL-Kit's order: actor → α → critic (TD + C_j) → Polyak
        (combo.md §2), on a population batch [P, B, ·]; metrics [P]."""
        sac = self.sac
        alpha = sac._alpha
        actor_loss, logp_mean = sac.actor_step_pop(batch.obs, alpha)
        sac.alpha_step(logp_mean)

        y, penalty = sac.critic_target_value_pop(batch, target_penalty)
        q_pred = sac.critic.forward_pop(batch.obs, batch.act)  # [P, N, B, 1]
        td_loss = (q_pred - y.unsqueeze(1)).square().mean(dim=(2, 3))  # [P, N]
        conservative = self.conservative_term(batch, q_pred)  # [P, N]
        metrics: dict[str, torch.Tensor] = {}
        if self.cql_alpha_optimizer is not None:
            cql_alpha = self.log_cql_alpha.exp().clamp(0.0, self.cfg.cql_alpha_max)  # [P]
            conservative = cql_alpha.view(-1, 1) * (conservative - self.cfg.lagrange_threshold)
            cql_alpha_loss = -0.5 * conservative.sum()
            self.cql_alpha_optimizer.zero_grad(set_to_none=True)
            cql_alpha_loss.backward(inputs=[self.log_cql_alpha], retain_graph=True)
            self.cql_alpha_optimizer.step()
            metrics["cql_alpha"] = cql_alpha.detach()
        critic_loss = (td_loss + conservative).sum(1)  # [P]
        sac.critic_step(critic_loss.sum())
        sac.polyak()

        q_det = q_pred.detach().flatten(1)
        metrics.update(
            critic_loss=critic_loss.detach(),
            td_loss=td_loss.detach().sum(1),
            conservative=conservative.detach().mean(1),
            actor_loss=actor_loss,
            alpha=alpha,
            q_mean=q_det.mean(1),
            q_max=q_det.amax(1),
            log_pi=logp_mean,
        )
        if penalty is not None:
            metrics["penalty_mean"] = penalty.detach().flatten(1).mean(1)
        return metrics

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "sac": self.sac.state_dict(),
            "log_cql_alpha": self.log_cql_alpha.detach().clone(),
            "cql_alpha_optimizer": None if self.cql_alpha_optimizer is None else self.cql_alpha_optimizer.state_dict(),
        }

    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Run k's state in the format of a single run's :meth:`state_dict`."""
        state = self.state_dict()
        return {
            "sac": self.sac.member_state_dict(k),
            "log_cql_alpha": slice_rows(state["log_cql_alpha"], k, k + 1),
            "cql_alpha_optimizer": slice_rows(state["cql_alpha_optimizer"], k, k + 1),
        }

    def load_member_states(self, states: list[dict[str, Any]]) -> None:
        """Load one single-run state per member (the inverse of :meth:`member_state_dict`)."""
        self.sac.load_member_states([s["sac"] for s in states])
        with torch.no_grad():
            self.log_cql_alpha.copy_(torch.cat([s["log_cql_alpha"].reshape(-1) for s in states]))
        if self.cql_alpha_optimizer is not None and states[0].get("cql_alpha_optimizer") is not None:
            self.cql_alpha_optimizer.load_state_dict(concat_rows([s["cql_alpha_optimizer"] for s in states]))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sac.load_state_dict(state["sac"])
        with torch.no_grad():
            self.log_cql_alpha.copy_(state["log_cql_alpha"].reshape(self.log_cql_alpha.shape))
        if self.cql_alpha_optimizer is not None and state.get("cql_alpha_optimizer") is not None:
            import copy

            self.cql_alpha_optimizer.load_state_dict(copy.deepcopy(state["cql_alpha_optimizer"]))
