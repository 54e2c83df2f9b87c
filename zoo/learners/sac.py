"""SAC with N critics: the policy learner of MOPO, MOBILE, RAMBO, ROMI and ROMBRL (sac.md).

One ``update`` is one gradient step in the order critic → actor → α → Polyak (sac.md §2). Everything
stays on the learner's device; metrics come back as detached 0-d tensors (no host sync inside a step).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.config import bounded
from zoo.learners.networks import CriticEnsemble, TanhGaussianActor
from zoo.protocols import Batch, EnvSpec
from zoo.registry import register

TargetPenalty = Callable[[Batch, Any], torch.Tensor]


def _adam(params: list[nn.Parameter] | list[torch.Tensor], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel where the device supports it, the foreach path otherwise."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


class RunRates:
    """Learning rates per run for one Adam over P runs' stacked parameters.

    Adam's step is elementwise, so one (fused) Adam over stacked parameters is P independent Adams, but it has one
    learning rate. When the runs' rates differ, the optimizer runs at rate 1 (times its schedule) and each run's
    change is scaled by its own rate afterwards: θ ← θ_old + η_k (θ_Adam(1) − θ_old), three extra foreach ops per
    step. With equal rates (every single run) nothing changes: the optimizer has the rate itself.
    """

    def __init__(self, params: list[torch.Tensor], rates: list[float], unit: int, device: torch.device) -> None:
        self.rates = [float(r) for r in rates]
        self.uniform = len(set(self.rates)) == 1
        self.base = self.rates[0] if self.uniform else 1.0  # the optimizer's own learning rate
        self.params = params
        self.weights: list[torch.Tensor] | None = None
        if not self.uniform:
            per_row = torch.tensor(self.rates, device=device).repeat_interleave(unit)
            self.weights = [per_row.view(-1, *([1] * (p.dim() - 1))) for p in params]

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.weights is None:
            optimizer.step()
            return
        with torch.no_grad():
            values = [p.detach() for p in self.params]
            before = [v.clone() for v in values]
            optimizer.step()
            torch._foreach_lerp_(before, values, self.weights)
            torch._foreach_copy_(values, before)

    def member_groups(self, state: dict[str, Any], k: int) -> dict[str, Any]:
        """Run k's optimizer state with its own rate in the param groups (the single-run format)."""
        if not self.uniform:
            for group in state["param_groups"]:
                for key in ("lr", "initial_lr"):
                    if key in group:
                        group[key] = group[key] * self.rates[k]
        return state

    def population_groups(self, state: dict[str, Any], first: int = 0) -> dict[str, Any]:
        """The inverse of :meth:`member_groups` for a state whose groups carry run ``first``'s rate."""
        if not self.uniform:
            for group in state["param_groups"]:
                for key in ("lr", "initial_lr"):
                    if key in group:
                        group[key] = group[key] / self.rates[first]
        return state


class _CosineFactor:
    """lr factor ½(1 + cos(π e / T_max)) after e completed epochs, 0 beyond T_max (sac.md §4)."""

    def __init__(self, total_epochs: int) -> None:
        self.total_epochs = int(total_epochs)

    def __call__(self, epoch: int) -> float:
        e = min(epoch, self.total_epochs)
        return 0.5 * (1.0 + math.cos(math.pi * e / self.total_epochs))


class ActorCriticAccess:
    """The Learner protocol's acting and evaluation methods over an ``actor`` (``sample``, ``log_prob``), batched
    ``critic``/``critic_target`` ([N, B, 1]) and a ``generator``: one definition for SAC and TD3+BC."""

    actor: Any
    critic: Any
    critic_target: Any
    generator: torch.Generator | None

    def act(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action, pre_tanh_action, log_prob [B, 1]); deterministic = a_max · tanh(μ(s)) (sac.md §1)."""
        return self.actor.sample(obs, deterministic, generator)

    def log_prob(self, obs: torch.Tensor, pre_tanh_action: torch.Tensor) -> torch.Tensor:
        """log π(a_max tanh(u)|s), [B, 1], differentiable in the actor's parameters (sac.md §1)."""
        return self.actor.log_prob(obs, pre_tanh_action)

    def q(self, obs: torch.Tensor, act: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Q-values [N, B, 1] of the online (or target) critics; differentiable w.r.t. obs and act."""
        return (self.critic_target if target else self.critic)(obs, act)

    def value(self, obs: torch.Tensor, target: bool = False, action: str = "deterministic") -> torch.Tensor:
        """min_j Q_j(s, a) at the deterministic or a sampled action, [B, 1]; no entropy term."""
        if action not in ("deterministic", "sample"):
            raise ValueError(f"action must be 'deterministic' or 'sample', got {action!r}")
        a, _, _ = self.actor.sample(obs, deterministic=action == "deterministic", generator=self.generator)
        return self.q(obs, a, target=target).amin(0)


def slice_rows(tree: Any, start: int, stop: int) -> Any:
    """Rows [start, stop) of every tensor of a state tree that has rows (dim >= 1); 0-d tensors and other values
    are kept. One run's share of a population's state (its optimizer moments have the shapes of its weights)."""
    if isinstance(tree, torch.Tensor):
        return tree[start:stop].clone() if tree.dim() >= 1 else tree.clone()
    if isinstance(tree, dict):
        return {k: slice_rows(v, start, stop) for k, v in tree.items()}
    if isinstance(tree, list):
        return [slice_rows(v, start, stop) for v in tree]
    return copy.deepcopy(tree)


def member_slice(state: dict[str, Any], k: int, num_critics: int, critic_keys: tuple[str, ...]) -> dict[str, Any]:
    """Run k's share of a learner population's ``state_dict``: N rows of the entries in ``critic_keys`` (critic
    sets, their targets and optimizer), one row of every other entry with rows."""
    out = {}
    for key, value in state.items():
        unit = num_critics if key in critic_keys else 1
        out[key] = slice_rows(value, k * unit, (k + 1) * unit)
    return out


def concat_rows(trees: list[Any]) -> Any:
    """The inverse of :func:`slice_rows` over members: tensors with rows are concatenated in member order; 0-d
    tensors and other values are taken from the first member (they are equal across a population: the optimizer
    step counts and settings)."""
    first = trees[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(trees) if first.dim() >= 1 else first.clone()
    if isinstance(first, dict):
        return {k: concat_rows([t[k] for t in trees]) for k in first}
    if isinstance(first, list):
        return [concat_rows([t[i] for t in trees]) for i in range(len(first))]
    return copy.deepcopy(first)


def member_penalties(learner: Any, batch: Batch, target_penalty: Any) -> torch.Tensor | None:
    """The target-stage penalty of every run, [P, B, 1], or None. ``target_penalty`` is one callable
    ``(batch, learner) -> [B, 1]`` per run (a list), or one callable for a single run; each gets its run's rows
    and its run's view of the learner."""
    if target_penalty is None:
        return None
    penalties = target_penalty if isinstance(target_penalty, list) else [target_penalty]
    return torch.stack([fn(batch.member(k), learner.member(k)) for k, fn in enumerate(penalties)])


def per_member(values: list[float], device: torch.device) -> float | torch.Tensor:
    """A per-run scalar: a float when every run has the same value, else a tensor [P, 1, 1]."""
    if len(set(values)) == 1:
        return values[0]
    return torch.tensor(values, device=device).view(-1, 1, 1)


class PopulationLearner(ActorCriticAccess):
    """What every learner population shares (SAC, TD3+BC; zoo.engine.population): one noise generator per run,
    run k's view (:meth:`member`), the single-run entry points over the population ones (``update`` and
    ``critic_target_value`` on [B, ·] add and remove the population axis), and run k's checkpoint in the
    single-run format. A subclass has ``population``, ``generators``, ``cfg.num_critics``, ``update_pop``,
    ``critic_target_value_pop``, ``state_dict``/``load_state_dict`` and lists its critic-shaped state entries in
    ``_CRITIC_KEYS``; optimizers with per-run learning rates come from :meth:`_rates`."""

    population: int
    generators: list[torch.Generator | None]
    cfg: Any
    _CRITIC_KEYS = ("critic", "critic_target", "critic_optimizer")

    @property
    def generator(self) -> torch.Generator | None:  # type: ignore[override]
        """The noise source of a single run (P = 1)."""
        return self.generators[0]

    @generator.setter
    def generator(self, value: torch.Generator | None) -> None:
        if self.population != 1:
            raise ValueError("a population has one generator per member; set learner.generators")
        self.generators = [value]

    def member(self, k: int) -> Any:
        """Run k's Learner protocol ([B, ·] shapes) for the trainer's per-run work; a single run is its own."""
        return self if self.population == 1 and k == 0 else MemberView(self, k)

    @torch.no_grad()
    def critic_target_value(
        self, batch: Batch, target_penalty: TargetPenalty | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The critic target y [B, 1] and the penalty (or None) of a single run (``critic_target_value_pop``)."""
        y, penalty = self.critic_target_value_pop(Batch.stack([batch]), target_penalty)  # type: ignore[attr-defined]
        return y[0], None if penalty is None else penalty[0]

    def update(self, batch: Batch, target_penalty: TargetPenalty | None = None) -> dict[str, torch.Tensor]:
        """One step of a single run on a batch [B, ·] (``update_pop``); metrics are detached 0-d tensors."""
        if self.population != 1:
            raise ValueError(f"a population of {self.population}: use update_pop with a batch [P, B, ...]")
        metrics = self.update_pop(Batch.stack([batch]), target_penalty)  # type: ignore[attr-defined]
        return {k: v[0] for k, v in metrics.items()}

    def _rates(self) -> dict[str, RunRates]:
        """The optimizers (state entries) whose runs may have their own learning rates."""
        return {}

    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Run k's state in the format of a single run's ``state_dict`` (its checkpoint), its own rates included."""
        state = member_slice(self.state_dict(), k, self.cfg.num_critics, self._CRITIC_KEYS)  # type: ignore[attr-defined]
        for key, rates in self._rates().items():
            if state.get(key) is not None:
                state[key] = rates.member_groups(state[key], k)
        return state

    def load_member_states(self, states: list[dict[str, Any]]) -> None:
        """Load one single-run state per member (the inverse of :meth:`member_state_dict`)."""
        if len(states) != self.population:
            raise ValueError(f"{len(states)} member states for a population of {self.population}")
        state = {key: concat_rows([s[key] for s in states]) for key in states[0]}
        for key, rates in self._rates().items():
            if state.get(key) is not None:
                state[key] = rates.population_groups(state[key])
        self.load_state_dict(state)  # type: ignore[attr-defined]


@register("learner", "sac")
class SAC(PopulationLearner):
    """Soft actor-critic with N batched critics, tanh-Gaussian actor and clamped auto-α (sac.md §1-§2, §4).

    **Populations** (issue 15, DESIGN.md "Performance rules"). ``members`` (one config per run) builds P runs of
    SAC as one batched program: every network is stacked over the population axis (the actor as P policies, the
    critics as P·N networks), one fused Adam steps all P runs' parameters of a kind at once (Adam is elementwise,
    so that is P independent Adams), α is a vector [P], and every random draw of run k comes from
    ``generators[k]``. :meth:`update_pop` takes a batch [P, B, ·] and returns metrics [P]. A single run is the
    population of one through the same code: :meth:`update` on a batch [B, ·] adds the axis and removes it.

    What may differ between the runs of one population (``population_keys``): ``tau``, ``gamma`` and the three
    learning rates (:class:`RunRates`); everything else (sizes, the schedule, the fixed α) splits populations.
    :meth:`member` gives run k's acting and evaluation methods (the Learner protocol, [B, ·] shapes) for the
    per-run work of the trainer: rollouts, evaluation, rules and penalties.
    """

    supports_population = True
    population_keys = ("tau", "gamma", "actor_lr", "critic_lr", "alpha_lr")

    @dataclass
    class Config:
        actor_lr: float = bounded(1e-4, gt=0.0)
        critic_lr: float = bounded(3e-4, gt=0.0)
        alpha_lr: float = bounded(1e-4, gt=0.0)
        hidden: list[int] = bounded(default_factory=lambda: [256, 256], ge=1)
        num_critics: int = bounded(2, ge=1)
        gamma: float = bounded(0.99, ge=0.0, lt=1.0)
        tau: float = bounded(0.005, gt=0.0, le=1.0)
        alpha: float = bounded(0.2, ge=0.0)  # the fixed α when auto_alpha is off
        auto_alpha: bool = True
        target_entropy: float | str = "auto"  # "auto" = -d_a
        alpha_max: float = bounded(1.0, ge=0.0)  # inf: no clamp (sac.md §6 #2, #3)
        deterministic_backup: bool = False
        target_min: float = -math.inf  # -inf: off; MOBILE/ROMBRL use 0.0
        max_q_backup: bool = False
        max_q_samples: int = bounded(10, ge=1)
        actor_schedule: str = "none"  # "none" | "cosine"
        critic_init: str = "linear"  # "linear" | "dynamics" (sac.md §6 #7)
        log_std_min: float = -5.0
        log_std_max: float = 2.0

    def __init__(
        self,
        cfg: Config,
        spec: EnvSpec,
        device: torch.device | str = "cpu",
        members: list[Any] | None = None,
        generators: list[torch.Generator | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.spec = spec
        self.device = torch.device(device)
        self.member_cfgs = list(members) if members else [cfg]
        p = self.population = len(self.member_cfgs)
        if generators is not None and len(generators) != p:
            raise ValueError(f"{p} population members but {len(generators)} generators")
        if cfg.actor_schedule not in ("none", "cosine"):
            raise ValueError(f"learner.actor_schedule must be 'none' or 'cosine', got {cfg.actor_schedule!r}")
        if cfg.num_critics < 1:
            raise ValueError(f"learner.num_critics must be >= 1, got {cfg.num_critics}")
        hidden = list(cfg.hidden)
        # Noise sources of the update, one per run (None: torch's global generator). The trainer passes seeded ones.
        self.generators: list[torch.Generator | None] = list(generators) if generators is not None else [None] * p
        init_gens = generators  # None: the global generator, drawn in construction order
        self.actor = TanhGaussianActor(
            spec.obs_dim, spec.act_dim, hidden, spec.act_scale, cfg.log_std_min, cfg.log_std_max, p, init_gens
        ).to(self.device)
        self.critic = CriticEnsemble(
            spec.obs_dim, spec.act_dim, hidden, cfg.num_critics, cfg.critic_init, p, init_gens
        ).to(self.device)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        n = cfg.num_critics
        rates = {key: [getattr(c, key) for c in self.member_cfgs] for key in ("actor_lr", "critic_lr", "alpha_lr")}
        self._actor_rates = RunRates(list(self.actor.parameters()), rates["actor_lr"], 1, self.device)
        self._critic_rates = RunRates(list(self.critic.parameters()), rates["critic_lr"], n, self.device)
        self.actor_optimizer = _adam(list(self.actor.parameters()), self._actor_rates.base, self.device)
        self.critic_optimizer = _adam(list(self.critic.parameters()), self._critic_rates.base, self.device)
        self.actor_scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.total_epochs: int | None = None

        if isinstance(cfg.target_entropy, str):
            if cfg.target_entropy != "auto":
                raise ValueError(f"learner.target_entropy must be a number or 'auto', got {cfg.target_entropy!r}")
            self.target_entropy = -float(spec.act_dim)
        else:
            self.target_entropy = float(cfg.target_entropy)
        self.log_alpha = nn.Parameter(torch.zeros(p, device=self.device), requires_grad=cfg.auto_alpha)
        self._alpha_rates = RunRates([self.log_alpha], rates["alpha_lr"], 1, self.device)
        self.alpha_optimizer = _adam([self.log_alpha], self._alpha_rates.base, self.device) if cfg.auto_alpha else None
        self._alpha = self._current_alpha()
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self._actor_params = list(self.actor.parameters())
        self._gamma_pop, self._tau_weights = self._per_member_scalars()

    def _per_member_scalars(self) -> tuple[float | torch.Tensor, list[torch.Tensor] | None]:
        """γ as a float, or [P, 1, 1] when the runs differ; τ as None (the cfg's float), or one weight per
        critic parameter ([P·N, 1, 1]) when they differ."""
        gamma = per_member([float(c.gamma) for c in self.member_cfgs], self.device)
        taus = [float(c.tau) for c in self.member_cfgs]
        tau_weights = None
        if len(set(taus)) > 1:
            per_critic = torch.tensor(taus, device=self.device).repeat_interleave(self.cfg.num_critics)
            tau_weights = [per_critic.view(-1, *([1] * (p.dim() - 1))) for p in self._critic_params]
        return gamma, tau_weights

    # -- a single run's view: the classic protocol ----------------------------------------------
    @property
    def alpha(self) -> torch.Tensor:
        """The α used in the losses (0-d for a single run, [P] for a population; exp(log α) clamped at
        alpha_max when auto)."""
        return self._alpha[0] if self.population == 1 else self._alpha

    @property
    def gamma(self) -> float:
        return self.cfg.gamma

    def _current_alpha(self) -> torch.Tensor:
        if not self.cfg.auto_alpha:
            return torch.tensor([float(c.alpha) for c in self.member_cfgs], device=self.device)
        return self.log_alpha.detach().exp().clamp(max=self.cfg.alpha_max)

    # -- protocol: one gradient step (single-run entry points: PopulationLearner) ---------------------
    @torch.no_grad()
    def critic_target_value_pop(
        self, batch: Batch, target_penalty: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """y [P, B, 1] for a population batch [P, B, ·] (sac.md §2.1). ``target_penalty``: one callable
        ``(batch, learner) -> [B, 1]`` per run (a list), or one callable for a single run."""
        cfg = self.cfg
        next_obs = batch.next_obs
        if cfg.max_q_backup:
            m = cfg.max_q_samples
            rep = next_obs.unsqueeze(1).expand(next_obs.shape[0], m, *next_obs.shape[1:])
            a_next, _, _ = self.actor.sample_pop(rep, self.generators)
            v_next = self.critic_target.forward_pop(rep, a_next).amax(2).amin(1)  # [P, N, m, B, 1] -> max_m, min_j
        else:
            a_next, _, logp_next = self.actor.sample_pop(next_obs, self.generators)
            v_next = self.critic_target.forward_pop(next_obs, a_next).amin(1)
            if not cfg.deterministic_backup:
                v_next = v_next - self._alpha.view(-1, 1, 1) * logp_next
        reward = batch.reward
        penalty = member_penalties(self, batch, target_penalty)
        if penalty is not None:
            reward = reward - penalty
        y = reward + self._gamma_pop * (1.0 - batch.terminal) * v_next
        if cfg.target_min != -math.inf:
            y = y.clamp_min(cfg.target_min)
        return y, penalty

    def update_pop(self, batch: Batch, target_penalty: Any = None) -> dict[str, torch.Tensor]:
        """One SAC step of every run on a population batch [P, B, ·] (sac.md §2); metrics are detached [P]."""
        alpha = self._alpha

        # 1-2. critic: one Adam over every run's ensemble, loss = Σ_runs Σ_j mean_b (Q_j(s,a) − y)²
        y, penalty = self.critic_target_value_pop(batch, target_penalty)
        q_pred = self.critic.forward_pop(batch.obs, batch.act)  # [P, N, B, 1]
        critic_loss = (q_pred - y.unsqueeze(1)).square().mean(dim=(2, 3)).sum(1)  # [P]
        self.critic_step(critic_loss.sum())

        # 3. actor, against the updated online critics; 4. temperature; 5. Polyak
        actor_loss, logp_mean = self.actor_step_pop(batch.obs, alpha)
        self.alpha_step(logp_mean)
        self.polyak()

        q_det = q_pred.detach().flatten(1)
        metrics = {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss,
            "alpha": alpha,
            "q_mean": q_det.mean(1),
            "q_max": q_det.amax(1),
            "log_pi": logp_mean,
        }
        if penalty is not None:
            metrics["penalty_mean"] = penalty.detach().flatten(1).mean(1)
        return metrics

    # -- the pieces of a step, shared with the learners built on SAC (cql) ------------------------
    def critic_step(self, critic_loss: torch.Tensor) -> None:
        """One Adam step of the critic ensemble on ``critic_loss`` (a sum over critics)."""
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self._critic_rates.step(self.critic_optimizer)

    def actor_step(self, obs: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L_π = mean[α log π(ã|s) − min_j Q_j(s, ã)], one Adam step of a single run's actor (sac.md §2.3).

        Returns the detached loss and the detached mean log π (for the temperature step)."""
        loss, logp_mean = self.actor_step_pop(obs.unsqueeze(0), alpha.reshape(1))
        return loss[0], logp_mean[0]

    def actor_step_pop(self, obs: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor step of every run, obs [P, B, d_s], α [P]; returns the losses and mean log π, each [P]."""
        a_pi, _, logp_pi = self.actor.sample_pop(obs, self.generators)
        q_pi = self.critic.forward_pop(obs, a_pi).amin(1)  # [P, B, 1]
        actor_loss = (alpha.view(-1, 1, 1) * logp_pi - q_pi).mean(dim=(1, 2))  # [P]
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.sum().backward(inputs=self._actor_params)
        self._actor_rates.step(self.actor_optimizer)
        return actor_loss.detach(), logp_pi.detach().mean(dim=(1, 2))

    def alpha_step(self, logp_mean: torch.Tensor) -> None:
        """Temperature step, then α = min(exp(log α), alpha_max) from the next use on (sac.md §2.4)."""
        if self.alpha_optimizer is None:
            return
        alpha_loss = -(self.log_alpha * (logp_mean.reshape(-1) + self.target_entropy)).sum()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self._alpha_rates.step(self.alpha_optimizer)
        self._alpha = self._current_alpha()

    @torch.no_grad()
    def polyak(self) -> None:
        """θ̄ ← (1 − τ) θ̄ + τ θ for every target critic (sac.md §2.5); a per-run τ when the runs differ."""
        if self._tau_weights is None:
            torch._foreach_mul_(self._target_params, 1.0 - self.cfg.tau)
            torch._foreach_add_(self._target_params, self._critic_params, alpha=self.cfg.tau)
        else:
            keep = [1.0 - w for w in self._tau_weights]
            torch._foreach_mul_(self._target_params, keep)
            torch._foreach_addcmul_(self._target_params, self._critic_params, self._tau_weights)

    # -- learning-rate schedule (sac.md §4) -----------------------------------------------------
    def set_total_epochs(self, n: int) -> None:
        """Create the actor's cosine schedule (T_max = n epochs, η_min = 0) when actor_schedule is cosine."""
        self.total_epochs = int(n)
        if self.cfg.actor_schedule != "cosine":
            return
        if n < 1:
            raise ValueError(f"total epochs must be >= 1, got {n}")
        for group in self.actor_optimizer.param_groups:  # a fresh schedule starts from the base lr
            group["lr"] = group.get("initial_lr", group["lr"])
        self.actor_scheduler = torch.optim.lr_scheduler.LambdaLR(self.actor_optimizer, _CosineFactor(n))

    def epoch_end(self) -> None:
        """Step the actor schedule once per epoch (after the epoch's updates, before evaluation)."""
        if self.actor_scheduler is not None:
            self.actor_scheduler.step()

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "alpha_optimizer": None if self.alpha_optimizer is None else self.alpha_optimizer.state_dict(),
            "total_epochs": self.total_epochs,
            "actor_scheduler": None if self.actor_scheduler is None else self.actor_scheduler.state_dict(),
        }

    def _rates(self) -> dict[str, RunRates]:
        return {
            "actor_optimizer": self._actor_rates,
            "critic_optimizer": self._critic_rates,
            "alpha_optimizer": self._alpha_rates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Optimizers keep the loaded state tensors by reference: copy them so two learners never share state.
        state = {k: copy.deepcopy(v) if k.endswith("optimizer") else v for k, v in state.items()}
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"].reshape(self.log_alpha.shape))
        if self.alpha_optimizer is not None and state.get("alpha_optimizer") is not None:
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self._alpha = self._current_alpha()
        self.actor_scheduler = None
        self.total_epochs = state.get("total_epochs")
        if state.get("actor_scheduler") is not None and self.cfg.actor_schedule == "cosine":
            assert self.total_epochs is not None
            lrs = [g["lr"] for g in self.actor_optimizer.param_groups]
            self.actor_scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.actor_optimizer, _CosineFactor(self.total_epochs)
            )
            self.actor_scheduler.load_state_dict(state["actor_scheduler"])
            for group, lr in zip(self.actor_optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr  # the restored optimizer already carries the scheduled lr


class MemberView(ActorCriticAccess):
    """Run k of a learner population (SAC, TD3+BC) through the single-run Learner protocol ([B, ·] shapes): what
    rollouts, evaluation, rules and target penalties of that run see. Acting and evaluating only; the population's
    ``update_pop`` trains."""

    def __init__(self, population: SAC, k: int) -> None:
        self.pop, self.k = population, k
        self.spec = population.spec
        self.device = population.device
        self.cfg = population.member_cfgs[k]

    @property
    def generator(self) -> torch.Generator | None:  # type: ignore[override]
        return self.pop.generators[self.k]

    @property
    def alpha(self) -> torch.Tensor:
        return self.pop._alpha[self.k]  # SAC's temperature (a learner without one has no alpha)

    @property
    def gamma(self) -> float:
        return float(self.cfg.gamma)

    @property
    def actor(self) -> Any:
        """The population's actor module: its parameters are every run's stacked policies (a rule that trains
        them, RAMBO's warm start, gives gradient to run k's slice only, through this view's ``act``)."""
        return self.pop.actor

    def act(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.pop.actor.sample(obs, deterministic, generator, member=self.k)

    def log_prob(self, obs: torch.Tensor, pre_tanh_action: torch.Tensor) -> torch.Tensor:
        return self.pop.actor.log_prob(obs, pre_tanh_action, member=self.k)

    def q(self, obs: torch.Tensor, act: torch.Tensor, target: bool = False) -> torch.Tensor:
        return (self.pop.critic_target if target else self.pop.critic)(obs, act, member=self.k)

    def value(self, obs: torch.Tensor, target: bool = False, action: str = "deterministic") -> torch.Tensor:
        if action not in ("deterministic", "sample"):
            raise ValueError(f"action must be 'deterministic' or 'sample', got {action!r}")
        a, _, _ = self.act(obs, deterministic=action == "deterministic", generator=self.generator)
        return self.q(obs, a, target=target).amin(0)

    def state_dict(self) -> dict[str, Any]:
        return self.pop.member_state_dict(self.k)
