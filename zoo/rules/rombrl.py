"""The ``rombrl`` rule: policy-driven world-model adaptation by a constrained Stackelberg game (rombrl.md).

ROMBRL builds on MOBILE-SAC (the recipe ``configs/algos/rombrl.toml``): the learner makes a MOBILE-penalised SAC
step on every batch, whose model rows this rule first re-simulates with the current model (``on_batch``, §3 step 2).
Every ``every`` = 1000 steps, ``update`` plays one Stackelberg round (§4):

1. §4.1 on-policy rollout of N trajectories × H steps in the model (random elite per row, restarts from dataset
   states at terminals), storing the actor's and the model's old log-probabilities, V (one fresh action) and Q
   (the taken action) from the online critics;
2. §4.2 dual GAE: the policy advantage Â from V and the model advantage Â^Q from Q;
3. §4.3/§4.4 ``actor_epochs`` leader steps on the shared actor optimiser: the PPO-clip-masked, γ^t-weighted
   policy gradient g_θ (grad_mode 1; odd epochs in every mode), and on every ``implicit_every``-th epoch in grad
   modes 2 and 3 the total derivative Δ_θ = g_θ − κ·Wᵀ(U ĥ), with ĥ = A⁻¹∇_φJ (Eq. 8) or its KKT/Schur form
   (Eq. 9), A the Fisher-type Hessian c·I − XᵀY + ZᵀZ + UᵀV inverted by the Woodbury chain
   (:mod:`zoo.rules.rombrl_linalg`), or with ``hessian = "exact"`` the exact second derivatives applied by
   Hessian-vector products and inverted iteratively (conjugate gradient / GMRES);
4. §4.5 ``follower_epochs`` adversarial model epochs: the PPO-clipped surrogate of J in φ divided by λ plus the
   data NLL, on the rule's own persistent Adam, global grad-norm clip 1.0.

Choices (each a config key; defaults reproduce the official D4RL script, rombrl.md §7–§8):

- Wᵀ(U ĥ) is computed as one vector-Jacobian product, ∇_θ Σ_i (Uĥ)_i·s_i(θ)/√m with s_i = Σ_t M_{t,i} log π_θ:
  the same vector as forming the m×q matrix W, without m backward passes.
- U and V are per-trajectory gradients (Σ_t γ^t Â^Q g_t and Σ_t g_t); only Y (X is Y scaled) and Z need single-
  sample gradients: m + 2m + m·h gradient rows in all (:mod:`zoo.rules.rombrl_scores`, ``per_sample_grads``:
  ``structured`` outer products by default, ``vmap`` = torch.func vmap over grad, ``loop`` = one backward pass per
  row; 80 rows of a 9e5-parameter model took 0.28 s / 1.1 s / 1.1 s on one CPU thread).
- Every random choice (start states, I, τ_i, real rows and their elites, minibatch orders) comes from
  ``ctx.generator``.
- Advantages are normalised with the unbiased std (torch's default, as in the official code); a minibatch of one
  trajectory or transition uses the biased std instead of dividing by zero.
- The |S| < 1e-8 guard of Eq. (9) drops the Schur term (ĥ = A⁻¹∇_φJ) and counts it in ``rombrl/schur_skipped``.
  A Woodbury or CG result that is not finite drops the implicit term of that step (``rombrl/implicit_failed``).
- ``hessian = "exact"`` replaces each Fisher-type piece by its exact second derivative on the same samples: −XᵀY by
  the Hessian of (1/(m·h))Σ_{i∈I,t<h} γ^t Â^Q log P (the expectation of what X, Y estimate), ZᵀZ by λ times the
  Hessian of the mean NLL of the same m·h real rows; c·I and the cross-time product UᵀV (exact already) stay.
  A is then not symmetric: restarted GMRES (``exact_solver``; or CG on the normal equations) solves it
  (:class:`~zoo.rules.rombrl_linalg.ExactOperator`).
- ``leader_objective = "ppo_clip"`` replaces M·Â·log π by PPO's min(ρÂ, clip(ρ)Â) inside the same γ^t-weighted
  sum (gradient: the masked policy gradient with the ρ factor); W keeps the masked score rows.
- ``sac_actor_updates = false`` gates the learner's own actor-optimiser steps (only the leader steps then move the
  actor); it wraps the optimiser's ``step`` on the instance.
- ``budget_ref = "mle_ratio"`` measures C as E_D[log P_φ̄ − log P_φ] − ε with φ̄ a frozen copy of the model taken
  before the first round (the pretrained MLE model); gradients are those of ``raw_nll``, only C (and so S) moves.
- ``dual_ascent = true`` updates λ ← max(λ + lambda_lr·C, 1e-3) over ``lambda_epochs`` fresh real batches at the
  start of a round and applies it after the round (the commented-out code's placement).

Not covered: the Fusion/tokamak variant (recurrent model, §7) and per-task values (not public, §8 #15).

Metrics (``rombrl/…``, one record per round): per leader step, ``implicit_ratio_steps`` = κ‖Wᵀ(U ĥ)‖/‖g_θ‖ (0 on
steps without the implicit term), with its mean and max over implicit steps; the mask ratio, J, ∇ norms, the
follower's losses and grad norm, the real-data NLL of the adapted model, λ, and the wall time of each phase.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from zoo.config import bounded
from zoo.device import synchronize
from zoo.engine.rollout import DivergenceError
from zoo.protocols import Batch, Context, Rule
from zoo.registry import register
from zoo.rules.rombrl_linalg import ExactOperator, WoodburyInverse, flatten, kkt_direction, unflatten
from zoo.rules.rombrl_scores import SCORE_MODES, ModelScores, gaussian_log_prob

TANH_EPS = 1e-6  # clamp of 1 ± a/a_max before the log in the atanh recovery (sac.md §1)


# --------------------------------------------------------------------------------------------------------------------
# Pure pieces (rombrl.md §4.2, §4.3): tested on their own
def gae(
    reward: torch.Tensor,
    value: torch.Tensor,
    start: torch.Tensor,
    last_value: torch.Tensor,
    last_done: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """GAE(λ) backwards over t for [H, N] arrays (rombrl.md §4.2).

    nt_t = 1 − start_{t+1} (= 1 − d_t), and 1 − d_last at t = H−1 with the bootstrap ``last_value``;
    δ_t = r_t + γ·nt_t·V_{t+1} − V_t, Â_t = δ_t + γλ·nt_t·Â_{t+1}.
    """
    horizon = reward.shape[0]
    adv = torch.empty_like(reward)
    running = torch.zeros_like(last_value)
    for t in reversed(range(horizon)):
        if t == horizon - 1:
            nt, nxt = 1.0 - last_done, last_value
        else:
            nt, nxt = 1.0 - start[t + 1], value[t + 1]
        delta = reward[t] + gamma * nt * nxt - value[t]
        running = delta + gamma * lam * nt * running
        adv[t] = running
    return adv


def dual_gae(
    reward: torch.Tensor,
    value: torch.Tensor,
    q_value: torch.Tensor,
    start: torch.Tensor,
    last_value: torch.Tensor,
    last_q: torch.Tensor,
    last_done: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Â, Â^Q): the policy advantage from V and the model advantage from Q (SARSA-style), rombrl.md §4.2."""
    return (
        gae(reward, value, start, last_value, last_done, gamma, lam),
        gae(reward, q_value, start, last_q, last_done, gamma, lam),
    )


def ppo_clip_mask(adv: torch.Tensor, ratio: torch.Tensor, clip: float) -> torch.Tensor:
    """M = 1[Â·ρ ≤ Â·clip(ρ, 1−ε, 1+ε)] (detached), rombrl.md §4.3 step 3: 0 exactly where PPO's clipped surrogate
    has zero gradient (Â > 0 with ρ > 1+ε, or Â < 0 with ρ < 1−ε)."""
    ratio = ratio.detach()
    return (adv * ratio <= adv * ratio.clamp(1.0 - clip, 1.0 + clip)).to(adv.dtype)


def normalize(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """(x − mean)/(std + 1e-8) over ``dim`` (all entries when None), unbiased std; biased for a single entry."""
    n = x.numel() if dim is None else x.shape[dim]
    correction = 1 if n > 1 else 0
    if dim is None:
        return (x - x.mean()) / (x.std(correction=correction) + 1e-8)
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, keepdim=True, correction=correction) + 1e-8)


def discount_weights(start: torch.Tensor, gamma: float, reset: bool) -> torch.Tensor:
    """[H, N] weights γ^t of the leader's sum (rombrl.md §4.3 step 4).

    ``reset=False`` (D4RL code): t is the rollout index. ``reset=True`` (Fusion code): t counts from the latest
    restart of the column (start_flag = 1 marks a fresh dataset state).
    """
    horizon, n = start.shape
    if not reset:
        t = torch.arange(horizon, dtype=start.dtype, device=start.device).unsqueeze(1).expand(horizon, n)
        return gamma**t
    since = torch.zeros(n, dtype=start.dtype, device=start.device)
    rows = []
    for t in range(horizon):
        if t > 0:
            since = (since + 1.0) * (1.0 - start[t])
        rows.append(since.clone())
    return gamma ** torch.stack(rows)


def squashed_to_pre_tanh(action: torch.Tensor, act_scale: float) -> torch.Tensor:
    """u = atanh(a/a_max) with 1 ± a/a_max clamped at 1e-6 before the log (sac.md §1; rombrl.md §8 #12)."""
    x = action / act_scale
    return 0.5 * (torch.log((1.0 + x).clamp_min(TANH_EPS)) - torch.log((1.0 - x).clamp_min(TANH_EPS)))


@dataclass
class Trajectories:
    """One round's on-policy model rollout, every field [H, N, ...] (rombrl.md §4.1)."""

    obs: torch.Tensor  # [H, N, d_s]
    act: torch.Tensor  # [H, N, d_a] squashed (the model's input)
    pre_tanh: torch.Tensor  # [H, N, d_a] the sampled u (a = a_max·tanh u)
    reward: torch.Tensor  # [H, N] raw model reward, no penalty
    start: torch.Tensor  # [H, N] 1 where the state is a fresh dataset start after a terminal
    value: torch.Tensor  # [H, N] V_t = min_j Q_j(s, ã), one fresh action
    q_value: torch.Tensor  # [H, N] Q_t = min_j Q_j(s, a), the taken action
    logp_old: torch.Tensor  # [H, N] log π_old(a|s)
    dyn_logp_old: torch.Tensor  # [H, N] log P_old(y|s,a) under member k
    sample: torch.Tensor  # [H, N, D] y = (Δs, r)
    member: torch.Tensor  # [H, N] long
    last_value: torch.Tensor  # [N]
    last_q: torch.Tensor  # [N]
    last_done: torch.Tensor  # [N]
    adv: torch.Tensor | None = None  # [H, N] Â
    dyn_adv: torch.Tensor | None = None  # [H, N] Â^Q

    @property
    def horizon(self) -> int:
        return self.obs.shape[0]

    @property
    def num(self) -> int:
        return self.obs.shape[1]


@dataclass
class LeaderStep:
    """One leader step's direction and what it was made of (for metrics and exact checks)."""

    direction: torch.Tensor  # Δ_θ [q] (the actor takes an Adam step on −Δ_θ)
    grad_theta: torch.Tensor  # g_θ [q]
    objective: float  # J_θ
    mask_ratio: float
    implicit: bool = False
    implicit_ratio: float = 0.0  # κ‖Wᵀ(Uĥ)‖/‖g_θ‖
    extras: dict[str, Any] = field(default_factory=dict)


class _ActorGate:
    """Wraps the actor optimiser's ``step`` on the instance: closed, the learner's own steps do nothing."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.open = False
        self.inner = optimizer.step
        gate = self

        def step(*args: Any, **kwargs: Any) -> Any:
            return gate.inner(*args, **kwargs) if gate.open else None

        optimizer.step = step  # type: ignore[method-assign]


@register("rule", "rombrl")
class RombrlRule(Rule):
    """ROMBRL Stackelberg rounds (leader: the actor; follower: the model) and re-simulated model rows."""

    @dataclass
    class Config:
        """Keys of rombrl.md §7 (script defaults) and the §8 switches."""

        every: int = bounded(1000, ge=0)  # policy steps between rounds
        num_rollouts: int = bounded(250, ge=1)  # N
        rollout_horizon: int = bounded(100, ge=1)  # H
        gamma: float = bounded(0.99, ge=0.0, lt=1.0)
        gae_lambda: float = bounded(0.95, ge=0.0, le=1.0)
        clip: float = bounded(0.2, gt=0.0, lt=1.0)
        actor_epochs: int = bounded(10, ge=0)
        follower_epochs: int = bounded(10, ge=0)
        traj_minibatch: int = bounded(256, ge=1)  # trajectories per leader minibatch
        follower_minibatch: int = bounded(256, ge=1)  # transitions per follower minibatch
        grad_mode: int = 1  # 1: Eq. (7); 2: Eq. (8); 3: Eq. (9)  (§8 #1)
        implicit_every: int = bounded(2, ge=1)  # implicit term on epochs 0, k, 2k, …  (§8 #3)
        kappa: float = bounded(1e-8, ge=0.0)  # weight of the implicit term (§8 #2)
        damping: float = bounded(5.0, ge=0.0)  # c (I_coe), > 0 for the Woodbury chain (§8 #7)
        score_horizon: int = bounded(10, ge=1)  # h (§8 #4)
        down_sample: int = bounded(8, ge=1)  # m (§8 #4)
        epsilon: float = bounded(10.0, ge=0.0)  # likelihood budget ε
        sl_weight: float = bounded(3000.0, gt=0.0)  # λ
        dual_ascent: bool = False  # (§8 #5)
        lambda_lr: float = bounded(1e-3, gt=0.0)
        lambda_epochs: int = bounded(1, ge=1)
        budget_ref: str = "raw_nll"  # raw_nll | mle_ratio (§8 #6)
        hessian: str = "fisher"  # fisher (Woodbury) | exact (HVP + CG)
        hessian_transpose: bool = False  # apply A⁻ᵀ instead of A⁻¹ (§8 #8)
        schur_guard: float = bounded(1e-8, ge=0.0)
        cg_iters: int = bounded(100, ge=1)  # products per exact solve (hessian = "exact")
        cg_tol: float = bounded(1e-10, gt=0.0)
        exact_solver: str = "gmres"  # gmres | cgnr: the non-symmetric exact A (rombrl_linalg.ExactOperator)
        pg_discount_reset: bool = False  # (§8 #9)
        sac_actor_updates: bool = True  # (§8 #10)
        resimulate_model_rows: bool = True  # (§8 #11)
        store_raw_actions: bool = True  # (§8 #12)
        leader_objective: str = "masked_pg"  # masked_pg | ppo_clip (§8 #13)
        real_batch: int = bounded(256, ge=1)  # real rows for Z, B, C and the follower's NLL
        follower_lr: float = bounded(3e-4, gt=0.0)
        follower_grad_clip: float = bounded(1.0, gt=0.0)
        logvar_coef: float = bounded(0.001, ge=0.0)  # c_lv of the follower's NLL
        per_sample_grads: str = "structured"  # structured | vmap | loop

    def __init__(self, cfg: Config | None = None) -> None:
        cfg = cfg or self.Config()
        _validate(cfg)
        self.cfg = cfg
        self.every = int(cfg.every)
        self.lam = float(cfg.sl_weight)
        self.rounds = 0
        self._follower_opt: torch.optim.Optimizer | None = None
        self._pending_follower_state: dict[str, Any] | None = None
        self._reference: Any = None
        self._reference_scores: ModelScores | None = None
        self._pending_reference: dict[str, Any] | None = None
        self._gate: _ActorGate | None = None
        self._scores: ModelScores | None = None
        self._model_id: int | None = None

    # ----------------------------------------------------------------------------------------------------------------
    # Setup (lazy: ``before_training`` is not called on resume)
    def _setup(self, ctx: Context) -> None:
        model = ctx.model
        if model is None:
            raise ValueError("rule rombrl needs a dynamics model (rollout.horizon > 0 or a model-based recipe)")
        if self._model_id != id(model):
            self._model_id = id(model)
            self._scores = ModelScores(model, self.cfg.per_sample_grads)
            self._follower_opt = None
        if self._follower_opt is None:
            self._follower_opt = _adam(self._scores.params, self.cfg.follower_lr)
            if self._pending_follower_state is not None:
                self._follower_opt.load_state_dict(copy.deepcopy(self._pending_follower_state))
                self._pending_follower_state = None
        if self.cfg.budget_ref == "mle_ratio" and self._reference is None:
            self._reference = copy.deepcopy(model)
            self._reference.requires_grad_(False)
            if self._pending_reference is not None:
                self._reference.load_state_dict(self._pending_reference)
                self._pending_reference = None
            self._reference_scores = ModelScores(self._reference, "loop")
        if not self.cfg.sac_actor_updates and self._gate is None:
            self._gate = _ActorGate(ctx.learner.actor_optimizer)

    def before_training(self, ctx: Context) -> dict[str, float]:
        self._setup(ctx)
        return {"rombrl/model_params": float(self._scores.num_params)} if self._scores is not None else {}

    # ----------------------------------------------------------------------------------------------------------------
    # §3 step 2: re-simulated model rows
    def on_batch(self, batch: Batch, ctx: Context) -> Batch:
        """Keep (s, a) of the model rows; regenerate (s', r, d) with the current model (rombrl.md §3 step 2)."""
        if not self.cfg.resimulate_model_rows or ctx.model is None:
            return batch
        if self._gate is None and not self.cfg.sac_actor_updates:
            self._setup(ctx)
        with torch.no_grad():
            step = ctx.model.step(batch.obs, batch.act, generator=ctx.generator)
            terminal = ctx.termination(batch.obs, batch.act, step.next_obs).to(batch.terminal.dtype)
        rows = batch.is_model > 0.5
        return batch.replace(
            next_obs=torch.where(rows, step.next_obs.to(batch.next_obs.dtype), batch.next_obs),
            reward=torch.where(rows, step.reward.to(batch.reward.dtype), batch.reward),
            terminal=torch.where(rows, terminal, batch.terminal),
        )

    # ----------------------------------------------------------------------------------------------------------------
    # §4: one Stackelberg round
    def update(self, ctx: Context) -> dict[str, Any]:
        self._setup(ctx)
        cfg = self.cfg
        timer = _Timer(ctx.device)
        metrics: dict[str, Any] = {}
        lam_next = self._dual_ascent(ctx) if cfg.dual_ascent else self.lam

        traj = self.collect(ctx)
        metrics["rombrl/rollout_reward_mean"] = float(traj.reward.mean())
        metrics["rombrl/rollout_restart_frac"] = float(traj.start[1:].mean()) if traj.horizon > 1 else 0.0
        metrics["rombrl/time_rollout"] = timer.lap()

        metrics.update(self.leader(traj, ctx))
        metrics["rombrl/time_leader"] = timer.lap()

        metrics.update(self.follower(traj, ctx))
        metrics["rombrl/time_follower"] = timer.lap()

        metrics["rombrl/lambda"] = self.lam
        self.lam = lam_next
        self.rounds += 1
        with torch.no_grad():
            metrics["rombrl/real_nll"] = float(-self._real_log_prob(ctx, cfg.real_batch)[0].mean())
        metrics["rombrl/rounds"] = self.rounds
        return metrics

    # -- §4.1 --------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self, ctx: Context) -> Trajectories:
        """On-policy model rollout of N × H with dual GAE (rombrl.md §4.1–§4.2)."""
        self._setup(ctx)
        cfg, model, learner, g = self.cfg, ctx.model, ctx.learner, ctx.generator
        data_obs = ctx.data.obs
        dtype = self._scores.dtype
        n, horizon = cfg.num_rollouts, cfg.rollout_horizon

        def fresh(k: int) -> torch.Tensor:
            return data_obs[torch.randint(len(ctx.data), (k,), device=data_obs.device, generator=g)].to(dtype)

        def min_q(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            return learner.q(s, a).amin(0)[..., 0]

        buf: dict[str, list[torch.Tensor]] = {k: [] for k in Trajectories.__dataclass_fields__ if k[:4] != "last"}
        obs = fresh(n)
        act, pre, logp = learner.act(obs, generator=g)
        start = torch.zeros(n, dtype=dtype, device=obs.device)
        done = start
        finite = torch.ones((), dtype=torch.bool, device=obs.device)
        for _ in range(horizon):
            q_taken = min_q(obs, act)
            act_tilde, _, _ = learner.act(obs, generator=g)
            value = min_q(obs, act_tilde)
            step = model.step(obs, act, generator=g)
            y = torch.cat([step.next_obs - obs, step.reward], dim=-1)
            member = step.member
            dyn_logp = self._scores.log_prob(obs, act, y, member)  # the same function the updates evaluate
            done = (ctx.termination(obs, act, step.next_obs)[:, 0] > 0.5).to(dtype)
            finite &= torch.isfinite(y).all()
            next_obs = torch.where(done.unsqueeze(-1) > 0.5, fresh(n), step.next_obs)
            for key, val in (
                ("obs", obs), ("act", act), ("pre_tanh", pre), ("reward", step.reward[:, 0]), ("start", start),
                ("value", value), ("q_value", q_taken), ("logp_old", logp[:, 0]), ("dyn_logp_old", dyn_logp),
                ("sample", y), ("member", member),
            ):
                buf[key].append(val)
            obs = next_obs
            act, pre, logp = learner.act(obs, generator=g)
            start = done
        if not bool(finite):
            raise DivergenceError(
                "the ROMBRL on-policy rollout produced non-finite model samples; the adapted model has diverged "
                "(lower rule.follower_lr or raise rule.sl_weight)"
            )
        act_tilde, _, _ = learner.act(obs, generator=g)
        traj = Trajectories(
            **{k: torch.stack(v) for k, v in buf.items() if v},
            last_value=min_q(obs, act_tilde),
            last_q=min_q(obs, act),
            last_done=done,
        )
        traj.adv, traj.dyn_adv = dual_gae(
            traj.reward, traj.value, traj.q_value, traj.start, traj.last_value, traj.last_q, traj.last_done,
            cfg.gamma, cfg.gae_lambda,
        )
        return traj

    # -- §4.3 / §4.4 -------------------------------------------------------------------------------------------------
    def leader(self, traj: Trajectories, ctx: Context) -> dict[str, Any]:
        """``actor_epochs`` epochs of leader steps over shuffled trajectory minibatches (rombrl.md §4.3–§4.4)."""
        cfg, learner = self.cfg, ctx.learner
        params = [p for p in learner.actor.parameters() if p.requires_grad]
        ratios: list[float] = []
        implicit_ratios: list[float] = []
        masks, objectives, g_norms, d_norms, h_norms, schurs = [], [], [], [], [], []
        skipped = failed = 0
        for epoch in range(cfg.actor_epochs):
            order = torch.randperm(traj.num, device=traj.obs.device, generator=ctx.generator)
            implicit = cfg.grad_mode > 1 and epoch % cfg.implicit_every == 0
            for begin in range(0, traj.num, cfg.traj_minibatch):
                idx = order[begin : begin + cfg.traj_minibatch]
                step = self.leader_direction(traj, idx, ctx, implicit)
                self._actor_step(learner, params, step.direction)
                masks.append(step.mask_ratio)
                objectives.append(step.objective)
                g_norms.append(float(step.grad_theta.norm()))
                d_norms.append(float(step.direction.norm()))
                ratios.append(step.implicit_ratio)
                if step.implicit:
                    implicit_ratios.append(step.implicit_ratio)
                    h_norms.append(step.extras["h_norm"])
                    skipped += int(step.extras.get("schur_skipped", False))
                    failed += int(step.extras.get("failed", False))
                    if "schur" in step.extras:
                        schurs.append(step.extras["schur"])
        out: dict[str, Any] = {
            "rombrl/leader_steps": len(ratios),
            "rombrl/mask_ratio": _mean(masks),
            "rombrl/leader_objective": _mean(objectives),
            "rombrl/grad_theta_norm": _mean(g_norms),
            "rombrl/direction_norm": _mean(d_norms),
            "rombrl/implicit_ratio_steps": ratios,
            "rombrl/implicit_ratio": _mean(implicit_ratios),
            "rombrl/implicit_ratio_max": max(implicit_ratios, default=0.0),
        }
        if cfg.grad_mode > 1:
            out.update({"rombrl/implicit_steps": len(implicit_ratios), "rombrl/h_norm": _mean(h_norms),
                        "rombrl/implicit_failed": failed})
        if cfg.grad_mode == 3:
            out.update({"rombrl/schur": _mean(schurs), "rombrl/schur_skipped": skipped})
        return out

    def _actor_step(self, learner: Any, params: list[torch.Tensor], direction: torch.Tensor) -> None:
        """Adam step on −Δ_θ with the learner's actor optimiser (and its cosine lr), rombrl.md §4.3 step 5."""
        opt = learner.actor_optimizer
        opt.zero_grad(set_to_none=True)
        for p, d in zip(params, unflatten(direction, params), strict=True):
            p.grad = (-d).to(p.dtype).clone()
        if self._gate is not None:
            self._gate.open = True
        try:
            opt.step()
        finally:
            if self._gate is not None:
                self._gate.open = False
        opt.zero_grad(set_to_none=True)

    def _actor_log_prob(self, traj: Trajectories, idx: torch.Tensor, learner: Any, act_scale: float) -> torch.Tensor:
        obs = traj.obs[:, idx]
        u = traj.pre_tanh[:, idx] if self.cfg.store_raw_actions else squashed_to_pre_tanh(traj.act[:, idx], act_scale)
        return learner.log_prob(obs, u)[..., 0]

    def leader_direction(self, traj: Trajectories, idx: torch.Tensor, ctx: Context, implicit: bool) -> LeaderStep:
        """g_θ (Eq. 7) and, when ``implicit``, Δ_θ = g_θ − κWᵀ(Uĥ) (Eq. 8/9) on trajectory minibatch ``idx``."""
        cfg, learner = self.cfg, ctx.learner
        params = [p for p in learner.actor.parameters() if p.requires_grad]
        act_scale = ctx.spec.act_scale if ctx.spec is not None else 1.0
        adv = normalize(traj.adv[:, idx], dim=-1)
        dyn_adv = normalize(traj.dyn_adv[:, idx], dim=-1)
        disc = discount_weights(traj.start[:, idx], cfg.gamma, cfg.pg_discount_reset)
        with torch.enable_grad():
            logp = self._actor_log_prob(traj, idx, learner, act_scale)  # [H, nb]
            ratio = torch.exp(logp - traj.logp_old[:, idx])
            mask = ppo_clip_mask(adv, ratio, cfg.clip)
            if cfg.leader_objective == "masked_pg":
                objective = (mask * adv * logp * disc).sum(0).mean()
            else:
                clipped = ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip)
                objective = (disc * torch.minimum(adv * ratio, adv * clipped)).sum(0).mean()
            g_theta = flatten(torch.autograd.grad(objective, params, retain_graph=implicit))
        step = LeaderStep(g_theta, g_theta, float(objective.detach()), float(mask.mean()))
        if not implicit:
            return step
        step.implicit = True
        correction, extras = self._implicit_correction(traj, idx, ctx, logp, mask, dyn_adv, disc, params)
        step.extras = extras
        if correction is None:
            return step
        step.direction = g_theta - cfg.kappa * correction
        g_norm = float(g_theta.norm())
        step.implicit_ratio = cfg.kappa * float(correction.norm()) / max(g_norm, 1e-30)
        return step

    def _implicit_correction(
        self,
        traj: Trajectories,
        idx: torch.Tensor,
        ctx: Context,
        logp: torch.Tensor,
        mask: torch.Tensor,
        dyn_adv: torch.Tensor,
        disc: torch.Tensor,
        actor_params: list[torch.Tensor],
    ) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """Wᵀ(Uĥ) of rombrl.md §4.4 steps 1–9 (None when the solve failed)."""
        cfg, g = self.cfg, ctx.generator
        scores = self._scores
        dev = traj.obs.device
        nb = idx.numel()
        h = min(cfg.score_horizon, traj.horizon)
        m = min(cfg.down_sample, nb)
        sqrt_m = math.sqrt(m)
        pick = torch.randperm(nb, device=dev, generator=g)[:m]  # I (positions inside the minibatch)
        tau = torch.randint(h, (m,), device=dev, generator=g)

        # 2–3: model log-probs for t < h and all trajectories of the minibatch; ∇_φJ
        obs_h, act_h = traj.obs[:h, idx], traj.act[:h, idx]
        y_h, k_h = traj.sample[:h, idx], traj.member[:h, idx]
        weight_h = disc[:h] * dyn_adv[:h]  # γ^t Â^Q_t, Â^Q normalised over all H then truncated
        with torch.enable_grad():
            lp_h = scores.log_prob(obs_h.flatten(0, 1), act_h.flatten(0, 1), y_h.flatten(0, 1), k_h.flatten())
            j_phi = (weight_h * lp_h.view(h, nb)).sum(0).mean()
            grad_phi = flatten(torch.autograd.grad(j_phi, scores.params))

        # 4: U, V (per-trajectory sums) and X, Y (one random step per trajectory), each scaled by 1/√m
        sel = (slice(None), idx[pick])
        o_i, a_i = traj.obs[:h][sel].transpose(0, 1), traj.act[:h][sel].transpose(0, 1)  # [m, h, ·]
        y_i, k_i = traj.sample[:h][sel].transpose(0, 1), traj.member[:h][sel].transpose(0, 1)
        w_i = weight_h[:, pick].T  # [m, h]
        uv = scores.per_sample_grads(
            torch.cat([o_i, o_i]), torch.cat([a_i, a_i]), torch.cat([y_i, y_i]), torch.cat([k_i, k_i]),
            torch.cat([w_i, torch.ones_like(w_i)]),
        ).div_(sqrt_m)
        U, V = uv[:m], uv[m:]
        rows = torch.arange(m, device=dev)
        Y = scores.per_sample_grads(o_i[rows, tau], a_i[rows, tau], y_i[rows, tau], k_i[rows, tau]).div_(sqrt_m)
        X = w_i[rows, tau].unsqueeze(-1) * Y

        # 5: real rows under a random elite: B, C (grad_mode 3) and Z
        n_z = m * h
        real_obs, real_act, real_y, real_member, real_idx = self._real_rows(ctx, max(cfg.real_batch, n_z))
        z_sel = torch.randperm(real_obs.shape[0], device=dev, generator=g)[:n_z]
        extras: dict[str, Any] = {
            "traj_idx": idx, "pick": pick, "tau": tau, "real_idx": real_idx, "real_member": real_member,
            "z_sel": z_sel, "grad_phi": grad_phi, "U": U, "V": V, "X": X, "Y": Y, "lambda": self.lam,
        }
        constraint = None
        if cfg.grad_mode == 3:
            with torch.enable_grad():
                lp_real = scores.log_prob(real_obs, real_act, real_y, real_member)
                c_value = self._constraint(lp_real, real_obs, real_act, real_y, real_member)
                b_vec = flatten(torch.autograd.grad(c_value, scores.params))
            constraint = (float(c_value.detach()), b_vec)
            extras.update({"constraint": constraint[0], "constraint_grad": b_vec})

        if cfg.hessian == "fisher":
            Z = scores.per_sample_grads(
                real_obs[z_sel], real_act[z_sel], real_y[z_sel], real_member[z_sel]
            ).mul_(math.sqrt(self.lam / n_z))
            extras["Z"] = Z
            solver: Any = WoodburyInverse(cfg.damping, X, Y, Z, U, V, transpose=cfg.hessian_transpose)
        else:
            solver = self._exact_operator(
                scores, obs_h, act_h, y_h, k_h, weight_h, pick, (real_obs, real_act, real_y, real_member), z_sel,
                U, V,
            )

        # 8: ĥ (Eq. 8 or Eq. 9)
        if constraint is None:
            h_hat = solver.apply(grad_phi)
        else:
            kkt = kkt_direction(solver.apply, grad_phi, constraint[1], constraint[0], self.lam, cfg.schur_guard)
            h_hat = kkt.direction
            extras.update({"schur": kkt.schur, "schur_skipped": kkt.skipped})
        extras["h"] = h_hat
        extras["h_norm"] = float(h_hat.norm())
        if isinstance(solver, ExactOperator) and solver.last_info is not None:
            extras.update({"cg_iterations": solver.last_info.iterations, "cg_residual": solver.last_info.residual})
        if not bool(torch.isfinite(h_hat).all()):
            extras["failed"] = True
            return None, extras

        # 9: Wᵀ(Uĥ) as one vector-Jacobian product through s_i(θ) = Σ_t M_{t,i} log π_θ(a_{t,i}|s_{t,i})
        coef = (U @ h_hat).detach()
        extras["Uh"] = coef
        s_i = (mask[:, pick] * logp[:, pick]).sum(0)  # [m]
        correction = flatten(torch.autograd.grad((coef.to(s_i.dtype) * s_i).sum() / sqrt_m, actor_params))
        extras["correction"] = correction
        return correction, extras

    def _exact_operator(
        self,
        scores: ModelScores,
        obs_h: torch.Tensor,
        act_h: torch.Tensor,
        y_h: torch.Tensor,
        k_h: torch.Tensor,
        weight_h: torch.Tensor,
        pick: torch.Tensor,
        real: tuple[torch.Tensor, ...],
        z_sel: torch.Tensor,
        U: torch.Tensor,
        V: torch.Tensor,
    ) -> ExactOperator:
        """A = c·I + ∇²[(1/(mh))Σ_{I,t<h} γ^tÂ^Q log P − λ(1/(mh))Σ_Z log P_real] + UᵀV, applied by HVPs."""
        cfg = self.cfg
        h, m = weight_h.shape[0], pick.numel()
        n_z = z_sel.numel()
        with torch.enable_grad():
            lp_i = scores.log_prob(
                obs_h[:, pick].flatten(0, 1), act_h[:, pick].flatten(0, 1), y_h[:, pick].flatten(0, 1),
                k_h[:, pick].flatten(),
            ).view(h, m)
            real_obs, real_act, real_y, real_member = real
            lp_z = scores.log_prob(real_obs[z_sel], real_act[z_sel], real_y[z_sel], real_member[z_sel])
            surrogate = (weight_h[:, pick] * lp_i).sum() / (m * h) - self.lam * lp_z.sum() / n_z
            grads = flatten(torch.autograd.grad(surrogate, scores.params, create_graph=True))

        def hvp(v: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                return flatten(torch.autograd.grad(torch.dot(grads, v), scores.params, retain_graph=True))

        return ExactOperator(
            hvp, cfg.damping, U, V, transpose=cfg.hessian_transpose, tol=cfg.cg_tol, max_iter=cfg.cg_iters,
            solver=cfg.exact_solver,
        )

    # -- real data and the budget ------------------------------------------------------------------------------------
    def _real_rows(self, ctx: Context, n: int) -> tuple[torch.Tensor, ...]:
        """n real rows (uniform, with replacement) as (obs, act, y, random elite member, row index)."""
        g, data = ctx.generator, ctx.data
        dtype = self._scores.dtype
        idx = torch.randint(len(data), (n,), device=data.obs.device, generator=g)
        obs, act = data.obs[idx].to(dtype), data.act[idx].to(dtype)
        y = torch.cat([data.next_obs[idx] - data.obs[idx], data.reward[idx]], dim=-1).to(dtype)
        elites = ctx.model.elites
        member = elites[torch.randint(elites.numel(), (n,), device=elites.device, generator=g)].to(obs.device)
        return obs, act, y, member, idx

    def _real_batch(self, ctx: Context, n: int) -> Batch:
        """n real rows (uniform, with replacement) for the data NLL L_SL (rombrl.md §4.5)."""
        data, dtype = ctx.data, self._scores.dtype
        idx = torch.randint(len(data), (n,), device=data.obs.device, generator=ctx.generator)
        return Batch(
            obs=data.obs[idx].to(dtype), act=data.act[idx].to(dtype), reward=data.reward[idx].to(dtype),
            next_obs=data.next_obs[idx].to(dtype), terminal=data.terminal[idx].to(dtype),
            is_model=torch.zeros_like(data.terminal[idx], dtype=dtype),
        )

    def _real_log_prob(self, ctx: Context, n: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        rows = self._real_rows(ctx, n)
        return self._scores.log_prob(*rows[:4]), rows

    def _constraint(
        self, lp_real: torch.Tensor, obs: torch.Tensor, act: torch.Tensor, y: torch.Tensor, member: torch.Tensor
    ) -> torch.Tensor:
        """C = −E_D[log P_φ] − ε (raw_nll) or E_D[log P_φ̄ − log P_φ] − ε (mle_ratio), rombrl.md §1, §8 #6."""
        if self.cfg.budget_ref == "raw_nll":
            return -lp_real.mean() - self.cfg.epsilon
        with torch.no_grad():
            ref = self._reference_scores.log_prob(obs, act, y, member)
        return (ref - lp_real).mean() - self.cfg.epsilon

    @torch.no_grad()
    def _dual_ascent(self, ctx: Context) -> float:
        """λ ← max(λ + lambda_lr·C, 1e-3) over ``lambda_epochs`` real batches (rombrl.md §8 #5)."""
        lam = self.lam
        for _ in range(self.cfg.lambda_epochs):
            lp, rows = self._real_log_prob(ctx, self.cfg.real_batch)
            c_value = float(self._constraint(lp, *rows[:4]))
            lam = max(lam + self.cfg.lambda_lr * c_value, 1e-3)
        return lam

    # -- §4.5 --------------------------------------------------------------------------------------------------------
    def follower(self, traj: Trajectories, ctx: Context) -> dict[str, Any]:
        """``follower_epochs`` epochs of L_adv/λ + L_SL over the flattened rollout (rombrl.md §4.5)."""
        cfg, model, opt = self.cfg, ctx.model, self._follower_opt
        assert opt is not None
        params = self._scores.params
        obs, act = traj.obs.flatten(0, 1), traj.act.flatten(0, 1)
        y, member = traj.sample.flatten(0, 1), traj.member.flatten()
        logp_old, dyn_adv = traj.dyn_logp_old.flatten(), traj.dyn_adv.flatten()
        total = obs.shape[0]
        adv_losses, sl_losses, losses, norms = [], [], [], []
        for _ in range(cfg.follower_epochs):
            order = torch.randperm(total, device=obs.device, generator=ctx.generator)
            for begin in range(0, total, cfg.follower_minibatch):
                j = order[begin : begin + cfg.follower_minibatch]
                real = self._real_batch(ctx, cfg.real_batch)
                lp, sl_loss = self._follower_terms(model, obs[j], act[j], y[j], member[j], real)
                ratio = torch.exp(lp - logp_old[j])
                a = normalize(dyn_adv[j])
                clipped = ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip)
                adv_loss = torch.minimum(a * ratio, a * clipped).mean()
                loss = adv_loss / self.lam + sl_loss
                opt.zero_grad(set_to_none=True)
                loss.backward(inputs=params)
                norms.append(torch.nn.utils.clip_grad_norm_(params, cfg.follower_grad_clip))
                opt.step()
                adv_losses.append(adv_loss.detach())
                sl_losses.append(sl_loss.detach())
                losses.append(loss.detach())
        opt.zero_grad(set_to_none=True)
        if not losses:
            return {}
        return {
            "rombrl/follower_steps": len(losses),
            "rombrl/follower_adv_loss": float(torch.stack(adv_losses).mean()),
            "rombrl/follower_sl_loss": float(torch.stack(sl_losses).mean()),
            "rombrl/follower_loss": float(torch.stack(losses).mean()),
            "rombrl/follower_grad_norm": float(torch.stack(norms).mean()),
        }

    def _follower_terms(
        self, model: Any, obs: torch.Tensor, act: torch.Tensor, y: torch.Tensor, member: torch.Tensor, real: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P_new of the rollout rows under their members, L_SL on the real rows with c_lv = logvar_coef).

        With the Gaussian ensemble's ``loss`` both come from one forward pass over the concatenated rows (the same
        values as ``log_prob`` and ``nll`` separately, half the passes); other models use ``nll``.
        """
        coef = self.cfg.logvar_coef
        if not hasattr(model, "loss") or not hasattr(model, "targets"):
            return self._scores.log_prob(obs, act, y, member), model.nll(real, logvar_coef=coef)
        n = obs.shape[0]
        mean, logvar = model(torch.cat([obs, real.obs]), torch.cat([act, real.act]))
        mu, lv = self._scores.select(mean[:, :n], logvar[:, :n], member)
        target = model.targets(real.obs, real.reward, real.next_obs)
        sl_loss = model.loss(mean[:, n:], logvar[:, n:], target, logvar_coef=coef)
        return gaussian_log_prob(y, mu, lv), sl_loss

    # ----------------------------------------------------------------------------------------------------------------
    # Persistence
    def state_dict(self) -> dict[str, Any]:
        follower = self._follower_opt.state_dict() if self._follower_opt is not None else self._pending_follower_state
        reference = (
            {k: v.detach().clone() for k, v in self._reference.state_dict().items()}
            if self._reference is not None
            else self._pending_reference
        )
        return {
            "lambda": self.lam,
            "rounds": self.rounds,
            "follower_optimizer": copy.deepcopy(follower),
            "reference_model": reference,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state.get("lambda", self.cfg.sl_weight))
        self.rounds = int(state.get("rounds", 0))
        follower = state.get("follower_optimizer")
        if follower is not None:
            if self._follower_opt is not None:
                self._follower_opt.load_state_dict(copy.deepcopy(follower))
            else:
                self._pending_follower_state = copy.deepcopy(follower)
        reference = state.get("reference_model")
        if reference is not None:
            if self._reference is not None:
                self._reference.load_state_dict(reference)
            else:
                self._pending_reference = reference


# --------------------------------------------------------------------------------------------------------------------
def _validate(cfg: Any) -> None:
    errors = []
    if cfg.every < 0:
        errors.append(f"every must be >= 0, got {cfg.every}")
    if cfg.grad_mode not in (1, 2, 3):
        errors.append(f"grad_mode must be 1, 2 or 3, got {cfg.grad_mode}")
    if cfg.hessian not in ("fisher", "exact"):
        errors.append(f"hessian must be 'fisher' or 'exact', got {cfg.hessian!r}")
    elif cfg.hessian == "fisher" and not cfg.damping > 0:
        errors.append(f"damping must be > 0 with the Woodbury chain (rombrl.md §8 #7), got {cfg.damping}")
    elif cfg.damping < 0:
        errors.append(f"damping must be >= 0, got {cfg.damping}")
    if cfg.exact_solver not in ("gmres", "cgnr"):
        errors.append(f"exact_solver must be 'gmres' or 'cgnr', got {cfg.exact_solver!r}")
    if cfg.budget_ref not in ("raw_nll", "mle_ratio"):
        errors.append(f"budget_ref must be 'raw_nll' or 'mle_ratio', got {cfg.budget_ref!r}")
    if cfg.leader_objective not in ("masked_pg", "ppo_clip"):
        errors.append(f"leader_objective must be 'masked_pg' or 'ppo_clip', got {cfg.leader_objective!r}")
    if cfg.per_sample_grads not in SCORE_MODES:
        errors.append(f"per_sample_grads must be one of {', '.join(SCORE_MODES)}, got {cfg.per_sample_grads!r}")
    for key in ("num_rollouts", "rollout_horizon", "traj_minibatch", "follower_minibatch", "implicit_every",
                "score_horizon", "down_sample", "real_batch", "cg_iters", "lambda_epochs"):
        if getattr(cfg, key) < 1:
            errors.append(f"{key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("actor_epochs", "follower_epochs"):
        if getattr(cfg, key) < 0:
            errors.append(f"{key} must be >= 0, got {getattr(cfg, key)}")
    if not 0.0 < cfg.clip < 1.0:
        errors.append(f"clip must be in (0, 1), got {cfg.clip}")
    if cfg.sl_weight <= 0:
        errors.append(f"sl_weight (λ) must be > 0, got {cfg.sl_weight}")
    if errors:
        raise ValueError("invalid rombrl rule config: " + "; ".join(errors))


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """The follower's Adam: the fused kernel where torch supports it for these tensors, foreach otherwise."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


class _Timer:
    """Wall-clock laps (synchronising CUDA so that a lap measures the work, not the launch)."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.last = time.perf_counter()

    def lap(self) -> float:
        synchronize(self.device)  # this run's GPU, not GPU 0
        now = time.perf_counter()
        out, self.last = now - self.last, now
        return out
