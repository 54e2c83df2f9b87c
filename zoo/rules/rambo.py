"""The ``rambo`` rule: RAMBO-RL's adversarial model training and behaviour-cloning warm start (rambo.md).

Two hooks of the :class:`~zoo.protocols.Rule` protocol:

- ``before_training``: behaviour cloning of the learner's actor on the (normalised) dataset, rambo.md §4.
  Only the actor is trained, with its own Adam (the learner's ``actor_optimizer`` is left untouched, as in OLK);
  critics and α start fresh.
- ``update`` (every ``every`` policy steps): one adversarial model phase, rambo.md §3. ``adv_steps`` Adam steps
  on all model parameters of L = λ·L_adv + L_sl, where

      L_adv = mean_b( log p_El(ŷ_b | s_b, a_b) · Â_b )      (log-density under the uniform elite mixture)
      Â     = normalise( r̂ + γ(1 − d) min_j Q_j(s', π_det(s')) − min_j Q_j(s, a) )
      L_sl  = the ensemble's supervised loss (dynamics.md §5) on fresh real rows, with c_lv = ``logvar_coef``

  ŷ = (s', r̂) is drawn (without gradient) from one random elite per row; (s, a) walk ``horizon`` steps through
  the model from real start states before fresh ones are drawn.

The rule talks to the model only through the :class:`~zoo.protocols.Dynamics` protocol (``sample`` with one member
per row, ``log_prob`` for the elite mixture, ``nll`` for L_sl, ``elites``, ``forward``), so any registered dynamics
model works with it; the log-probability form (logsumexp or exp-in-float64, rambo.md §7 #5) is the model's own
``mixture_logprob`` switch. Everything in the phase loop stays on the device: the metrics are accumulated as
tensors and read by the trainer once per phase.

Choices (beyond the spec's switches):

- Â is normalised with the unbiased batch std, (Â − mean)/(std + ``adv_eps``), as ``torch.Tensor.std`` in OLK.
- ``horizon = 0`` takes the run's ``rollout.horizon`` (the task's H, rambo.md §3), or 5 outside a run.
- ``adv_stop_at_terminal = true`` keeps the batch shape: rows that reached a terminal state drop out of L_adv
  (zero weight, and out of the advantage statistics) until the next fresh start states, instead of being removed.
- λ = 0 with ``finetune_when_zero`` (OLK) runs supervised-only steps and skips the adversarial computation
  (it has no gradient then); without it (original repo) the phase is off and ``every`` is 0.
- Monitoring after each phase (rambo.md §7 #11): the per-member mean-only MSE (dynamics.md §7 metric) and the
  elite-mixture NLL on ``monitor_rows`` fixed, evenly strided real rows (the pretraining holdout indices are not
  kept by the model), and the relative L2 distance of the model parameters from the pretrained ones.
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass
from typing import Any

import torch

from zoo.config import bounded
from zoo.protocols import Batch, Context, Rule
from zoo.registry import register

BC_LOSSES = ("mse_sample", "nll")
SL_BATCHES = ("shared", "per_member")
DEFAULT_HORIZON = 5  # dynamics.md §13: the usual H when the rule runs outside a trainer


@register("rule", "rambo")
class RamboRule(Rule):
    """RAMBO-RL: adversarial model updates (rambo.md §3) and BC warm start of the actor (§4)."""

    requires = frozenset({"variance", "log_prob"})  # the adversarial likelihood term and the MLE loss
    # Populations (zoo.engine.population): each run has its own rule, model and phase optimizers. The warm start
    # trains ``learner.actor.parameters()`` with its own Adam; in a population those are every run's stacked
    # policies, of which only run k's slice gets a gradient (learner.member(k) acts with it), and Adam moves a
    # parameter with zero gradient and zero moments by exactly 0, so run k's warm start is its single run's.
    supports_population = True
    population_keys = ("adv_weight", "adv_lr", "bc_lr")

    @dataclass
    class Config:
        """Keys of rambo.md §5 and the switches of §7 (defaults: the OLK column)."""

        every: int = bounded(1000, ge=0)  # policy steps between adversarial phases ("update freq")
        adv_weight: float = bounded(3e-4, ge=0.0)  # λ, per task (rambo.md §6)
        adv_steps: int = bounded(1000, ge=0)  # model gradient steps per phase (§7 #14)
        adv_lr: float = bounded(3e-4, gt=0.0)  # the phase's own Adam over all model parameters (dynamics_adv_lr)
        batch_size: int = bounded(256, ge=2)  # rollout start states and supervised rows per step
        horizon: int = bounded(0, ge=0)  # steps per adversarial rollout; 0: the run's rollout.horizon
        include_ent_in_adv: bool = False  # V' − α log π(π_det(s')|s')
        adv_eps: float = bounded(1e-6, ge=0.0)  # advantage normalisation eps (§7 #8; 0 = original repo)
        logvar_coef: float = bounded(0.001, ge=0.0)  # c_lv of L_sl
        sl_batch: str = "shared"  # shared | per_member (§7 #4)
        finetune_when_zero: bool = True  # λ = 0: OLK still fine-tunes on L_sl (§7 #2)
        adv_stop_at_terminal: bool = False  # §7 #6
        bc_loss: str = "mse_sample"  # mse_sample (OLK) | nll (original), §4 and §7 #1
        bc_epochs: int = bounded(50, ge=0)  # 0: no warm start (AntMaze configs)
        bc_lr: float = bounded(1e-4, gt=0.0)
        bc_batch: int = bounded(256, ge=1)
        bc_shuffle: bool = True  # OLK never uses its shuffled index (a bug, §7 #1)
        bc_skip_saturated: bool = False  # original: skip batches with any |a| >= a_max
        monitor_rows: int = bounded(1000, ge=0)  # real rows for the per-phase model metrics (0: none)

    def __init__(self, cfg: Config) -> None:
        errors = []
        if cfg.every < 0 or cfg.adv_steps < 0 or cfg.bc_epochs < 0 or cfg.horizon < 0 or cfg.monitor_rows < 0:
            errors.append("every, adv_steps, bc_epochs, horizon and monitor_rows must be >= 0")
        if cfg.batch_size < 2 or cfg.bc_batch < 1:
            errors.append(f"batch_size must be >= 2 and bc_batch >= 1, got {cfg.batch_size}, {cfg.bc_batch}")
        if cfg.adv_weight < 0 or cfg.adv_lr <= 0 or cfg.bc_lr <= 0 or cfg.adv_eps < 0:
            errors.append("adv_weight and adv_eps must be >= 0, adv_lr and bc_lr > 0")
        if cfg.sl_batch not in SL_BATCHES:
            errors.append(f"sl_batch must be one of {', '.join(SL_BATCHES)}, got {cfg.sl_batch!r}")
        if cfg.bc_loss not in BC_LOSSES:
            errors.append(f"bc_loss must be one of {', '.join(BC_LOSSES)}, got {cfg.bc_loss!r}")
        if errors:
            raise ValueError("invalid rambo rule config: " + "; ".join(errors))
        self.cfg = cfg
        phase_on = cfg.adv_steps > 0 and (cfg.adv_weight > 0 or cfg.finetune_when_zero)
        self.every = int(cfg.every) if phase_on else 0
        self.optimizer: torch.optim.Optimizer | None = None
        self._params: list[torch.Tensor] | None = None
        self._reference: list[torch.Tensor] | None = None  # the pretrained parameters (for param_dist)
        self._pending: dict[str, Any] = {}  # loaded state waiting for the model (first update)
        self._nll_kwargs: dict[str, Any] | None = None
        self.phases = 0

    # ------------------------------------------------------------------------------------------
    # Behaviour cloning (rambo.md §4)
    def before_training(self, ctx: Context) -> dict[str, float]:
        """Warm-start the actor by behaviour cloning; returns bc/* metrics (one host read per epoch at most)."""
        if ctx.model is not None:
            self._bind(ctx.model)
        cfg = self.cfg
        if cfg.bc_epochs == 0:
            return {}
        start = time.time()
        learner, data, gen = ctx.learner, ctx.data, ctx.generator
        obs_all, act_all = data.obs, data.act
        n = obs_all.shape[0]
        bs = min(cfg.bc_batch, n)
        n_batches = max(1, n // bs)  # the last partial batch is dropped (OLK)
        a_max = float(ctx.spec.act_scale) if ctx.spec is not None else 1.0
        params = list(learner.actor.parameters())
        optimizer = torch.optim.Adam(params, lr=cfg.bc_lr)
        first = last = torch.zeros((), device=obs_all.device)
        steps = 0
        for epoch in range(cfg.bc_epochs):
            order = torch.randperm(n, device=obs_all.device, generator=gen) if cfg.bc_shuffle else None
            batches = range(n_batches)
            if cfg.bc_skip_saturated:
                idx = order if order is not None else torch.arange(n, device=obs_all.device)
                idx = idx[: n_batches * bs]
                saturated = (act_all[idx].abs() >= a_max).view(n_batches, bs, -1).flatten(1).any(1)
                batches = (~saturated).nonzero().flatten().tolist()  # one host read per epoch
            total = torch.zeros((), device=obs_all.device)
            for j in batches:
                rows = order[j * bs : (j + 1) * bs] if order is not None else slice(j * bs, (j + 1) * bs)
                obs, act = obs_all[rows], act_all[rows]
                if cfg.bc_loss == "mse_sample":
                    pred, _, _ = learner.act(obs, deterministic=False, generator=gen)  # reparameterised sample
                    loss = (pred - act).pow(2).mean()
                else:
                    loss = -learner.log_prob(obs, _pre_tanh(act, a_max)).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward(inputs=params)
                optimizer.step()
                total = total + loss.detach()
                steps += 1
            mean = total / max(1, len(batches))
            if epoch == 0:
                first = mean
            last = mean
        return {
            "bc/loss_first_epoch": float(first),
            "bc/loss_last_epoch": float(last),
            "bc/epochs": cfg.bc_epochs,
            "bc/steps": steps,
            "bc/wall_s": time.time() - start,
        }

    # ------------------------------------------------------------------------------------------
    # The adversarial phase (rambo.md §3)
    def update(self, ctx: Context) -> dict[str, Any]:
        """One phase of ``adv_steps`` model steps; returns rambo/* metrics as 0-d (or [E]) tensors."""
        cfg = self.cfg
        model, learner, data, gen = ctx.model, ctx.learner, ctx.data, ctx.generator
        self._bind(model)
        assert self.optimizer is not None and self._params is not None
        dev = data.obs.device
        n = data.obs.shape[0]
        bs = cfg.batch_size
        horizon = self._horizon(ctx)
        gamma = _gamma(learner)
        adversarial = cfg.adv_weight > 0
        shape = (bs,) if cfg.sl_batch == "shared" else (_members(model, data), bs)
        real_flag = torch.zeros(*shape, 1, device=dev)  # is_model of the supervised rows
        was_training = getattr(model, "training", False)
        if hasattr(model, "train"):
            model.train()

        zero = torch.zeros((), device=dev, dtype=data.obs.dtype)
        sums = {k: zero.clone() for k in ("loss", "adv_loss", "sl_loss", "log_prob", "adv_mean", "adv_std",
                                          "terminal_frac", "value_next")}
        obs = data.obs[:0]
        alive = torch.ones(bs, 1, device=dev, dtype=data.obs.dtype)
        for step in range(cfg.adv_steps):
            # supervised rows R: one shared batch, or independent rows per member ([E, B, ·])
            sl_idx = torch.randint(n, shape, device=dev, generator=gen)
            sl = Batch(
                obs=data.obs[sl_idx], act=data.act[sl_idx], reward=data.reward[sl_idx],
                next_obs=data.next_obs[sl_idx], terminal=data.terminal[sl_idx], is_model=real_flag,
            )
            sl_loss = model.nll(sl, **self._nll_kwargs)
            loss = sl_loss
            if adversarial:
                if step % horizon == 0:  # fresh real start states S
                    obs = data.obs[torch.randint(n, (bs,), device=dev, generator=gen)]
                    alive = torch.ones_like(alive)
                with torch.no_grad():
                    act, _, _ = learner.act(obs, deterministic=False, generator=gen)
                    pick = torch.randint(model.elites.numel(), (bs,), device=dev, generator=gen)
                    next_obs, reward = model.sample(obs, act, member=model.elites[pick], generator=gen)
                    done = ctx.termination(obs, act, next_obs).to(obs.dtype).view(bs, 1)
                    adv, value_next = self.advantage(learner, obs, act, next_obs, reward, done, gamma)
                    weight = alive if cfg.adv_stop_at_terminal else None
                    adv_n, adv_mean, adv_std = normalize_advantage(adv, cfg.adv_eps, weight)
                log_prob = model.log_prob(obs, act, next_obs, reward)  # [B], elite mixture, gradient w.r.t. φ
                adv_loss = adversarial_loss(log_prob, adv_n, weight)
                loss = cfg.adv_weight * adv_loss + sl_loss
                sums["adv_loss"] += adv_loss.detach()
                sums["log_prob"] += log_prob.detach().mean()
                sums["adv_mean"] += adv_mean
                sums["adv_std"] += adv_std
                sums["terminal_frac"] += done.mean()
                sums["value_next"] += value_next.mean()
                if cfg.adv_stop_at_terminal:
                    alive = alive * (1.0 - done)
                obs = next_obs  # every row continues (rambo.md §3, §7 #6)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=self._params)
            self.optimizer.step()
            sums["loss"] += loss.detach()
            sums["sl_loss"] += sl_loss.detach()

        if hasattr(model, "train"):
            model.train(was_training)
        self.phases += 1
        steps = max(1, cfg.adv_steps)
        metrics: dict[str, Any] = {f"rambo/{k}": v / steps for k, v in sums.items()}
        if not adversarial:
            for k in ("adv_loss", "log_prob", "adv_mean", "adv_std", "terminal_frac", "value_next"):
                metrics.pop(f"rambo/{k}")
        metrics["rambo/steps"] = cfg.adv_steps
        metrics["rambo/phase"] = self.phases
        metrics["rambo/param_dist"] = self.param_distance()
        metrics.update(self.monitor(ctx))
        return metrics

    @torch.no_grad()
    def advantage(
        self,
        learner: Any,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        done: torch.Tensor,
        gamma: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, V') [B, 1]: A = r̂ + γ(1 − d)V' − min_j Q_j(s, a) with the ONLINE critics (rambo.md §3, §7 #7),
        V' = min_j Q_j(s', π_det(s')) (− α log π(π_det(s')|s') with ``include_ent_in_adv``)."""
        next_act, _, next_logp = learner.act(next_obs, deterministic=True)
        value_next = learner.q(next_obs, next_act).amin(0)
        if self.cfg.include_ent_in_adv:
            value_next = value_next - learner.alpha * next_logp
        baseline = learner.q(obs, act).amin(0)
        return reward + gamma * (1.0 - done) * value_next - baseline, value_next

    # ------------------------------------------------------------------------------------------
    # Monitoring
    @torch.no_grad()
    def param_distance(self) -> torch.Tensor:
        """‖φ − φ_pretrained‖₂ / ‖φ_pretrained‖₂ over all model parameters (0-d tensor)."""
        assert self._params is not None and self._reference is not None
        diff = torch.stack([(p - r).pow(2).sum() for p, r in zip(self._params, self._reference, strict=True)])
        ref = torch.stack([r.pow(2).sum() for r in self._reference])
        return diff.sum().sqrt() / ref.sum().sqrt().clamp_min(1e-12)

    @torch.no_grad()
    def monitor(self, ctx: Context) -> dict[str, torch.Tensor]:
        """Per-member mean-only MSE (dynamics.md §7 metric) and elite-mixture NLL on fixed real rows."""
        rows = min(self.cfg.monitor_rows, ctx.data.obs.shape[0])
        if rows == 0:
            return {}
        idx = torch.linspace(0, ctx.data.obs.shape[0] - 1, rows, device=ctx.data.obs.device).long()
        d = ctx.data
        obs, act, reward, next_obs = d.obs[idx], d.act[idx], d.reward[idx], d.next_obs[idx]
        mean, _ = ctx.model.forward(obs, act)
        target = torch.cat([next_obs - obs, reward], dim=-1)
        mse = (mean - target).pow(2).mean(dim=(1, 2))
        nll = -ctx.model.log_prob(obs, act, next_obs, reward).mean()
        return {"rambo/real_mse": mse, "rambo/real_mse_elites": mse[ctx.model.elites].mean(), "rambo/real_nll": nll}

    # ------------------------------------------------------------------------------------------
    # Persistent state
    def state_dict(self) -> dict[str, Any]:
        """The phase's Adam state, the pretrained reference parameters and the phase counter."""
        if self.optimizer is None:
            return copy.deepcopy(self._pending)
        return {
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # a snapshot, not the live moment tensors
            "reference": [r.detach().cpu().clone() for r in self._reference or []],
            "phases": self.phases,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(dict(state or {}))  # the optimizer would otherwise share the caller's tensors
        self.phases = int(state.get("phases", self.phases))
        if self.optimizer is None:
            self._pending = state  # applied once the rule sees the model
            return
        self._apply(state)

    # ------------------------------------------------------------------------------------------
    # Helpers
    def _bind(self, model: Any) -> None:
        """Create the phase optimizer over the model's parameters and snapshot the reference, once."""
        if self.optimizer is not None:
            return
        if hasattr(model, "model_parameters"):
            params = [p for p in model.model_parameters() if p.requires_grad]
        else:
            params = [p for p in model.parameters() if p.requires_grad]
        self._params = params
        self.optimizer = _adam(params, self.cfg.adv_lr)
        self._reference = [p.detach().clone() for p in params]
        accepts = inspect.signature(model.nll).parameters
        self._nll_kwargs = {"logvar_coef": self.cfg.logvar_coef} if "logvar_coef" in accepts else {}
        if self._pending:
            self._apply(self._pending)
            self._pending = {}

    def _apply(self, state: dict[str, Any]) -> None:
        assert self.optimizer is not None and self._params is not None
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("reference"):
            self._reference = [r.to(p.device, p.dtype) for r, p in zip(state["reference"], self._params, strict=True)]
        self.phases = int(state.get("phases", self.phases))

    def _horizon(self, ctx: Context) -> int:
        if self.cfg.horizon > 0:
            return self.cfg.horizon
        run_cfg = (ctx.extras or {}).get("config")
        horizon = getattr(getattr(run_cfg, "rollout", None), "horizon", 0)
        return int(horizon) if horizon and horizon > 0 else DEFAULT_HORIZON


def normalize_advantage(
    adv: torch.Tensor, eps: float = 1e-6, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Â, mean, std): Â = (A − mean(A)) / (std(A) + eps), unbiased std (rambo.md §3, §7 #8).

    With ``weight`` (0/1 [B, 1]), the statistics use the weighted rows only (``adv_stop_at_terminal``).
    """
    if weight is None:
        mean, std = adv.mean(), adv.std()
    else:
        count = weight.sum()
        mean = (adv * weight).sum() / count.clamp_min(1.0)
        std = (((adv - mean) * weight).pow(2).sum() / (count - 1.0).clamp_min(1.0)).sqrt()
    return (adv - mean) / (std + eps), mean, std


def adversarial_loss(log_prob: torch.Tensor, adv: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_adv = mean_b(log p_b · Â_b) (rambo.md §3; a mean, not OLK-original's sum, §7 #9).

    ``log_prob`` is [B], ``adv`` [B, 1]; with ``weight`` the mean runs over the weighted rows only.
    """
    per = log_prob.view(-1) * adv.view(-1)
    if weight is None:
        return per.mean()
    w = weight.view(-1)
    return (per * w).sum() / w.sum().clamp_min(1.0)


def _gamma(learner: Any) -> float:
    """The learner's discount γ (SAC's ``gamma`` property, else its config's), 0.99 when it has none."""
    gamma = getattr(learner, "gamma", None)
    if gamma is None:
        gamma = getattr(getattr(learner, "cfg", None), "gamma", 0.99)
    return float(gamma)


def _members(model: Any, data: Any) -> int:
    """E, from the model's ``ensemble_size`` or from the leading axis of one forward pass."""
    size = getattr(model, "ensemble_size", None)
    if size:
        return int(size)
    with torch.no_grad():
        return int(model.forward(data.obs[:1], data.act[:1])[0].shape[0])


def _pre_tanh(act: torch.Tensor, a_max: float) -> torch.Tensor:
    """u = atanh(a / a_max) with 1 ± a/a_max clamped at 1e-6 before the log (sac.md §1)."""
    x = act / a_max
    return 0.5 * (torch.log((1.0 + x).clamp_min(1e-6)) - torch.log((1.0 - x).clamp_min(1e-6)))


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where torch supports it for these tensors, the foreach path otherwise."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)

