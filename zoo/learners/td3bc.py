"""TD3+BC (Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021).

TD3 with a behaviour-cloning term in the actor loss (their Eq. 3):

    π = argmax_π E_{(s,a)~D}[ λ Q_1(s, π(s)) − (π(s) − a)² ],   λ = α / mean_{s}|Q_1(s, π(s))|  (λ not differentiated)

Critics: N (default 2) batched Q-networks with clipped double-Q targets and target policy smoothing
(ã' = clip(π̄(s') + clip(ε, −c, c), −a_max, a_max), ε ~ N(0, σ²)); the actor and the targets are updated every
``policy_freq`` critic steps. Paper defaults: α 2.5, σ 0.2, c 0.5, delay 2, lrs 3e-4, τ 0.005, γ 0.99, 256×256
networks; the paper also normalises states (``data.normalize_obs = true`` in a recipe).

Model data goes through the same update: the critic targets take the target-stage penalty (MOBILE) and the
rollout-stage penalties have already been applied to the stored rewards. The behaviour-cloning term uses the real
rows only by default (``bc_rows = "real"``): on model rows the "behaviour" action is the policy's own rollout
action. Acting for rollouts adds Gaussian noise before the tanh (``explore_std``), TD3's exploration, with a
density so that ``log_prob`` is defined (zoo.learners.networks.TanhDeterministicActor).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from zoo.config import bounded
from zoo.learners.networks import CriticEnsemble, TanhDeterministicActor, member_noise
from zoo.learners.sac import PopulationLearner, _adam, member_penalties, per_member
from zoo.protocols import Batch, EnvSpec
from zoo.registry import register


@register("learner", "td3bc")
class TD3BC(PopulationLearner):
    """TD3+BC: clipped double-Q TD3 with a Q-normalised behaviour-cloning actor loss (Fujimoto & Gu 2021).

    Populations (zoo.engine.population), as SAC: every network stacked over the runs, one fused Adam per kind, run
    k's smoothing noise from ``generators[k]``; ``gamma`` and ``bc_alpha`` (α of λ) may differ between runs. The
    actor delay counts the population's steps, which every run shares.
    """

    supports_population = True
    population_keys = ("gamma", "bc_alpha")

    @dataclass
    class Config:
        actor_lr: float = bounded(3e-4, gt=0.0)
        critic_lr: float = bounded(3e-4, gt=0.0)
        hidden: list[int] = bounded(default_factory=lambda: [256, 256], ge=1)
        num_critics: int = bounded(2, ge=1)
        gamma: float = bounded(0.99, ge=0.0, lt=1.0)
        tau: float = bounded(0.005, gt=0.0, le=1.0)
        bc_alpha: float = bounded(2.5, ge=0.0)  # α of λ = α / mean|Q|
        policy_noise: float = bounded(0.2, ge=0.0)  # σ of the target smoothing, × a_max
        noise_clip: float = bounded(0.5, ge=0.0)  # c, × a_max
        policy_freq: int = bounded(2, ge=1)  # actor and target updates every d critic steps
        explore_std: float = bounded(0.1, gt=0.0)  # pre-tanh noise of the acting policy
        bc_rows: str = "real"  # "real" | "all": which rows the behaviour-cloning term uses
        target_min: float = -math.inf  # -inf: no clamp of the critic target

    def __init__(
        self,
        cfg: Config,
        spec: EnvSpec,
        device: torch.device | str = "cpu",
        members: list[Any] | None = None,
        generators: list[torch.Generator | None] | None = None,
    ) -> None:
        if cfg.bc_rows not in ("real", "all"):
            raise ValueError(f"learner.bc_rows must be 'real' or 'all', got {cfg.bc_rows!r}")
        if cfg.num_critics < 1 or cfg.policy_freq < 1:
            raise ValueError("learner.num_critics and learner.policy_freq must be >= 1")
        self.cfg = cfg
        self.spec = spec
        self.device = torch.device(device)
        self.member_cfgs = list(members) if members else [cfg]
        p = self.population = len(self.member_cfgs)
        self.generators: list[torch.Generator | None] = list(generators) if generators is not None else [None] * p
        hidden = list(cfg.hidden)
        self.actor = TanhDeterministicActor(
            spec.obs_dim, spec.act_dim, hidden, spec.act_scale, cfg.explore_std, p, generators
        ).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = CriticEnsemble(
            spec.obs_dim, spec.act_dim, hidden, cfg.num_critics, "linear", p, generators
        ).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = _adam(list(self.actor.parameters()), cfg.actor_lr, self.device)
        self.critic_optimizer = _adam(list(self.critic.parameters()), cfg.critic_lr, self.device)
        self.updates = 0  # critic steps taken (a host int: the delay needs no device read)
        self._actor_params = list(self.actor.parameters())
        self._last_actor_loss = torch.zeros(p, device=self.device)
        self._last_bc_loss = torch.zeros(p, device=self.device)
        self._gamma_pop = per_member([float(c.gamma) for c in self.member_cfgs], self.device)
        self._bc_alpha = torch.tensor([float(c.bc_alpha) for c in self.member_cfgs], device=self.device)

    @property
    def gamma(self) -> float:
        return self.cfg.gamma

    # -- the losses (single-run entry points: PopulationLearner) ----------------------------------
    @torch.no_grad()
    def critic_target_value_pop(
        self, batch: Batch, target_penalty: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """y = r − penalty + γ (1 − d) min_j Q̄_j(s', ã') with the smoothed target action ã' (TD3), [P, B, 1]."""
        cfg, scale = self.cfg, self.spec.act_scale
        a_next = self.actor_target.forward_pop(batch.next_obs)
        noise = member_noise(a_next.shape[1:], self.generators, a_next)
        noise = (noise * cfg.policy_noise * scale).clamp(-cfg.noise_clip * scale, cfg.noise_clip * scale)
        a_next = (a_next + noise).clamp(-scale, scale)
        v_next = self.critic_target.forward_pop(batch.next_obs, a_next).amin(1)
        reward = batch.reward
        penalty = member_penalties(self, batch, target_penalty)
        if penalty is not None:
            reward = reward - penalty
        y = reward + self._gamma_pop * (1.0 - batch.terminal) * v_next
        if cfg.target_min != -math.inf:
            y = y.clamp_min(cfg.target_min)
        return y, penalty

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per run ([P]): −λ mean Q_1(s, π(s)) + BC, and BC = mean over the chosen rows and action dims of
        (π(s) − a)², for a population batch [P, B, ·]."""
        pi = self.actor.forward_pop(batch.obs)
        q1 = self.critic.forward_pop(batch.obs, pi)[:, 0]  # [P, B, 1], the first critic as in TD3
        lam = self._bc_alpha / q1.abs().mean(dim=(1, 2)).detach().clamp_min(1e-6)
        rows = (1.0 - batch.is_model) if self.cfg.bc_rows == "real" else torch.ones_like(batch.is_model)
        sq = (pi - batch.act).square().mean(-1, keepdim=True)  # [P, B, 1]
        bc = (sq * rows).sum(dim=(1, 2)) / rows.sum(dim=(1, 2)).clamp_min(1.0)
        return -lam * q1.mean(dim=(1, 2)) + bc, bc

    # -- protocol: one gradient step ----------------------------------------------------------
    def update_pop(self, batch: Batch, target_penalty: Any = None) -> dict[str, torch.Tensor]:
        """Critic step of every run; every ``policy_freq`` steps an actor step and Polyak of actor and critic
        targets. Metrics [P]."""
        cfg = self.cfg
        y, penalty = self.critic_target_value_pop(batch, target_penalty)
        q_pred = self.critic.forward_pop(batch.obs, batch.act)  # [P, N, B, 1]
        critic_loss = (q_pred - y.unsqueeze(1)).square().mean(dim=(2, 3)).sum(1)  # [P]
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_optimizer.step()
        self.updates += 1

        if self.updates % cfg.policy_freq == 0:
            actor_loss, bc = self.actor_loss(batch)
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.sum().backward(inputs=self._actor_params)
            self.actor_optimizer.step()
            self._last_actor_loss, self._last_bc_loss = actor_loss.detach(), bc.detach()
            with torch.no_grad():
                for target, online in ((self.critic_target, self.critic), (self.actor_target, self.actor)):
                    t_params, o_params = list(target.parameters()), list(online.parameters())
                    torch._foreach_mul_(t_params, 1.0 - cfg.tau)
                    torch._foreach_add_(t_params, o_params, alpha=cfg.tau)

        q_det = q_pred.detach().flatten(1)
        metrics = {
            "critic_loss": critic_loss.detach(),
            "actor_loss": self._last_actor_loss,
            "bc_loss": self._last_bc_loss,
            "q_mean": q_det.mean(1),
            "q_max": q_det.amax(1),
        }
        if penalty is not None:
            metrics["penalty_mean"] = penalty.detach().flatten(1).mean(1)
        return metrics

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = {k: copy.deepcopy(v) if k.endswith("optimizer") else v for k, v in state.items()}
        for name in ("actor", "actor_target", "critic", "critic_target", "actor_optimizer", "critic_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        self.updates = int(state["updates"])
