"""The ``romi`` rule: robust value-aware model learning with implicitly differentiable adaptive weighting
(Qiao et al., ICLR 2026; romi.md). The default reproduces the released code (romi.md §1.2, §3, §6); the
paper-faithful and textbook alternatives sit behind the switches of romi.md §7.

Every ``every`` policy steps, one model phase = ``iterations`` times (romi.md §3):

1. a real batch (s, a, r, s') of B rows from the (normalised) dataset;
2. w = w_ν(s, a) ∈ (0.5, 2) (or w_ν(s, a, s'));
3. g_MLE = ∇_ψ (1/(B·D)) Σ ℓ_ij at the current ψ (unweighted);
4. the inner step: one Adam step of ψ on L_w = (1/(B·D)) Σ w_i ℓ_ij (w detached);
5. at the updated ψ, RVL_i = Σ_e (V̄(ŝ'_{e,i}) − V_rob,i)², V_rob,i = min over the sampled uncertainty set C(s'_i);
6-7. r_k = r_scale · ⟨g_MLE, g_k⟩ with g_k = ∇_ψ (1/n_g) Σ_{i∈G_k} RVL_i, G contiguous groups;
8. one Adam step of ν on meta = σ_h · (1/B) Σ_k (1/n_g) Σ_{i∈G_k} w_i · (r_k − b);
9. b ← mean_k r_k the first time, then an EMA with rate 0.1.

Choices (ours, documented):

- ``outer_grad = "jvp"`` (default) computes the r_k without forming the G ψ-gradients: ⟨g_MLE, ∇_ψ RVL_i⟩ for every
  row comes from one backward through the value network to the model samples plus one forward-mode pass through the
  model (romi_math.group_alignment_jvp). The numbers are those of step 6-7; ``outer_grad = "vjp"`` runs the spec's
  G explicit ψ-gradients instead (also the route for learners whose networks mix rows, e.g. batch norm).
- ``hypergrad = "exact"``: the implicit-function-theorem version of the same signal. The code's r_k is the one-step
  derivative of group k's RVL with respect to a uniform shift of all the weights, −(1/η)·dL_k(ψ⁺(w + t·1))/dt
  (romi.md §5). The exact mode treats the updated ψ⁺ as the inner solution and uses dψ*/dt = −(H + λI)⁻¹ g_MLE,
  H = ∇²_ψ of the inner loss at ψ⁺, g_MLE taken at ψ⁺: r_k = r_scale · ⟨g_k, (H + λI)⁻¹ g_MLE⟩ = −r_scale·dL_k/dt.
  (H + λI)⁻¹ g_MLE is solved by ``cg_iters`` steps of conjugate gradient on Hessian-vector products (double
  backward); λ = ``cg_damping`` makes it exact for the inner problem with a proximal term λ/2‖ψ − ψ₀‖². Groups,
  sign, scale and baseline are shared with the one-step mode, so the two signals can be compared directly.
- ``uset = "sampled_absolute"``: ρ = ε/3 for every row; ``uset = "pgd"``: L2-ball PGD of radius ε‖s'‖ on V̄
  (``pgd_steps`` steps), candidates {s', x_pgd}.
- ``rvl_coef`` > 0 adds rvl_coef · mean_i RVL_i (at the pre-step ψ, same noise) to the inner loss (romi.md §7 #3).
- ``phase_regularizers = true`` adds the model's own weight decay and log-variance-bound term (c_lv from the
  dynamics config) to the inner loss (romi.md §7 #7); g_MLE stays the plain NLL gradient.
- ``share_init_across_seeds`` (romi.md §7 #11) is a harness matter (which pretrained model and initial networks a
  seed gets); only its default, false, is supported here.
- The weighting net is built at the first hook that sees the context (``before_training`` or ``update``), from
  torch's seeded global generator, in the dataset's dtype and on the context's device. Batch rows, uncertainty-set
  offsets and model-sample noise come from ``ctx.generator``, in that order, at the start of each iteration.
- Logged per phase under ``romi/`` (one host read, by the trainer): the weight statistics over every w of the
  phase (mean, min, max, std = "spread"), the mean |Δw| between the phase's start and end on a probe batch (drawn
  from ``ctx.generator`` before the first iteration), the losses, the r statistics, the baseline and how far ψ moved.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.config import bounded
from zoo.device import device_adam
from zoo.protocols import Context, Rule
from zoo.registry import register
from zoo.rules import romi_math as rm

HYPERGRADS = ("one_step", "exact")
OUTER_GRADS = ("jvp", "vjp")
WEIGHT_INPUTS = ("sa", "sas")


class WeightNet(nn.Module):
    """w_ν: MLP in → 256 → 256 → 1 (ReLU, PyTorch default init), w = lo + (hi − lo)·(tanh(o) + 1)/2 (romi.md §2.1)."""

    def __init__(self, in_dim: int, hidden: list[int], low: float, high: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for h in hidden:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, 1))
        self.net = nn.Sequential(*layers)
        self.low, self.high = float(low), float(high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in] -> [B, 1] in (low, high)."""
        return self.low + (self.high - self.low) * 0.5 * (torch.tanh(self.net(x)) + 1.0)


@register("rule", "romi")
class RomiRule(Rule):
    # Populations (zoo.engine.population): each run has its own ROMI rule, model and optimizers, and the model
    # phase reads the learner only through acting and Q-values (learner.member(k)), so its scalar keys may differ.
    supports_population = True
    population_keys = ("eps", "model_lr", "weight_lr")

    """ROMI's model phase (romi.md §3): a weighted-MLE inner step and a one-step (or exact) hypergradient step of
    the weighting network towards robust value-aware model learning."""

    requires = frozenset({"variance", "log_prob"})  # the weighted MLE and reparameterised Gaussian samples

    @dataclass
    class Config:
        """Keys of romi.md §6-§7 with the code's defaults (§7 switch names without the ``romi.`` prefix)."""

        every: int = bounded(1000, ge=0)  # policy steps between model phases
        iterations: int = bounded(1000, ge=0)  # model-phase iterations (one ψ step and one ν step each)
        batch_size: int = bounded(256, ge=1)
        model_lr: float = bounded(3e-4, gt=0.0)  # the phase's own Adam over ψ, persistent across phases
        weight_lr: float = bounded(1e-4, gt=0.0)  # Adam_ν
        weight_hidden: list[int] = bounded(default_factory=lambda: [256, 256], ge=1)
        weight_range: list[float] = bounded(default_factory=lambda: [0.5, 2.0], ge=0.0)
        weight_inputs: str = "sa"  # sa (code) | sas (paper)
        eps: float = bounded(0.01, ge=0.0)  # ξ: the relative radius ε of the uncertainty set
        uset: str = "sampled_relative"  # sampled_relative | sampled_absolute | pgd
        uset_samples: int = bounded(10, ge=0)
        uset_center: bool = True
        pgd_steps: int = bounded(10, ge=1)  # only for uset = "pgd"
        groups: int = bounded(4, ge=1)
        r_scale: float = bounded(0.01, ge=0.0)
        baseline_ema: float = bounded(0.1, ge=0.0, le=1.0)
        hypergrad_sign: int = 1  # σ_h: +1 (code) | -1 (textbook), romi.md §5
        hypergrad: str = "one_step"  # one_step | exact (CG on Hessian-vector products)
        outer_grad: str = "jvp"  # jvp | vjp (how ⟨direction, g_k⟩ is computed; same numbers)
        cg_iters: int = bounded(20, ge=1)
        cg_damping: float = bounded(0.0, ge=0.0)
        cg_tol: float = bounded(1e-10, gt=0.0)
        value_critics: str = "target"  # target | online
        value_entropy: bool = False
        rvl_members: str = "all"  # all | elites
        rvl_coef: float = bounded(0.0, ge=0.0)
        phase_regularizers: bool = False
        share_init_across_seeds: bool = False

    def __init__(self, cfg: Config | None = None) -> None:
        cfg = cfg or self.Config()
        _validate(cfg)
        self.cfg = cfg
        self.every = int(cfg.every)
        self.weight_net: WeightNet | None = None
        self.weight_optimizer: torch.optim.Optimizer | None = None
        self.model_optimizer: torch.optim.Optimizer | None = None
        self.baseline: torch.Tensor | None = None
        self.phases = 0
        self._model: Any = None
        self._params: list[torch.Tensor] = []
        self._names: list[str] = []
        self._pending: dict[str, Any] | None = None

    # -- setup and persistence --------------------------------------------------------------------
    def _setup(self, ctx: Context) -> None:
        """Build w_ν, Adam_ν, the model-phase Adam and b = 0 for this context's model (once)."""
        model = ctx.model
        if model is None:
            raise ValueError("rule romi needs a dynamics model (the recipe's rollout.horizon and dynamics settings)")
        if self._model is model:
            return
        cfg = self.cfg
        data = ctx.data
        dtype, device = data.obs.dtype, data.obs.device
        d_s, d_a = data.obs.shape[1], data.act.shape[1]
        if self.weight_net is None:
            in_dim = d_s + d_a + (d_s if cfg.weight_inputs == "sas" else 0)
            low, high = cfg.weight_range
            self.weight_net = WeightNet(in_dim, list(cfg.weight_hidden), low, high).to(device=device, dtype=dtype)
            self.weight_optimizer = device_adam(self.weight_net.parameters(), lr=cfg.weight_lr)
            self.baseline = torch.zeros((), dtype=dtype, device=device)
        self._params = list(model.model_parameters())
        self._names = rm.parameter_names(model, self._params) if cfg.outer_grad == "jvp" else []
        self.model_optimizer = device_adam(self._params, lr=cfg.model_lr)
        self._model = model
        if self._pending is not None:
            state, self._pending = self._pending, None
            self._load(state)

    def state_dict(self) -> dict[str, Any]:
        """w_ν, both optimizers, the baseline and the phase count (an empty dict before the first phase)."""
        if self.weight_net is None:
            return copy.deepcopy(self._pending) if self._pending is not None else {}
        assert self.weight_optimizer is not None and self.model_optimizer is not None and self.baseline is not None
        return {
            "weight_net": {k: v.detach().clone() for k, v in self.weight_net.state_dict().items()},
            "weight_optimizer": copy.deepcopy(self.weight_optimizer.state_dict()),
            "model_optimizer": copy.deepcopy(self.model_optimizer.state_dict()),
            "baseline": self.baseline.detach().clone(),
            "phases": self.phases,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; applied at once when the rule is set up, else at its first hook with a context."""
        if not state:
            return
        if self.weight_net is None or self._model is None:
            self._pending = copy.deepcopy(state)
            return
        self._load(copy.deepcopy(state))

    def _load(self, state: dict[str, Any]) -> None:
        assert self.weight_net is not None and self.weight_optimizer is not None and self.model_optimizer is not None
        self.weight_net.load_state_dict(state["weight_net"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.model_optimizer.load_state_dict(state["model_optimizer"])
        ref = next(self.weight_net.parameters())
        self.baseline = state["baseline"].to(device=ref.device, dtype=ref.dtype).clone()
        self.phases = int(state.get("phases", 0))

    # -- the pieces of an iteration ------------------------------------------------------------------
    def weights(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """w_ν(s, a) (or w_ν(s, a, s')), [B, 1], with its graph to ν."""
        assert self.weight_net is not None
        parts = [obs, act, next_obs] if self.cfg.weight_inputs == "sas" else [obs, act]
        return self.weight_net(torch.cat(parts, dim=-1))

    def value_fn(self, learner: Any) -> rm.ValueFn:
        """x ↦ V̄(x) with the configured critics and entropy switch (romi.md §2.2)."""
        critics, entropy = self.cfg.value_critics, self.cfg.value_entropy
        return lambda x: rm.state_value(learner, x, critics, entropy)

    def robust_value(
        self, learner: Any, next_obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """V_rob [B] = min over the uncertainty set of V̄ (romi.md §2.3; the pgd variant of §7 #4)."""
        cfg = self.cfg
        value = self.value_fn(learner)
        if cfg.uset == "pgd":
            radius = cfg.eps * next_obs.norm(dim=-1, keepdim=True)
            x = rm.pgd_candidate(value, next_obs, radius, cfg.pgd_steps)
            cands = torch.stack([next_obs, x]) if cfg.uset_center else x.unsqueeze(0)
        else:
            cands = rm.uncertainty_set(next_obs, cfg.eps, cfg.uset_samples, cfg.uset_center, cfg.uset, generator)
        return rm.robust_target(value, cands)

    def members(self, model: Any) -> torch.Tensor | None:
        return model.elites if self.cfg.rvl_members == "elites" else None

    def inner_loss(
        self,
        model: Any,
        obs: torch.Tensor,
        act: torch.Tensor,
        target: torch.Tensor,
        w: torch.Tensor,
        rvl_inputs: tuple[Any, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_inner, ℓ [B, D]) at the model's current ψ: (1/(B·D)) Σ w_i ℓ_ij (romi.md §2.5), plus the optional
        regularisers (§7 #7) and rvl_coef · mean RVL (§7 #3; ``rvl_inputs`` = (value_fn, V_rob, noise))."""
        mean, logvar = model(obs, act)
        ell = rm.nll_terms(mean, logvar, target)
        loss = (w.detach() * ell).mean()
        if self.cfg.phase_regularizers:
            loss = loss + model.regularizer()
        if self.cfg.rvl_coef and rvl_inputs is not None:
            value_fn, v_rob, noise = rvl_inputs
            rvl, _ = rm.rvl_of_model(obs, mean, logvar, noise, value_fn, v_rob, self.members(model))
            loss = loss + self.cfg.rvl_coef * rvl.mean()
        return loss, ell

    def alignment(
        self,
        model: Any,
        direction: list[torch.Tensor],
        value_fn: rm.ValueFn,
        obs: torch.Tensor,
        act: torch.Tensor,
        v_rob: torch.Tensor,
        noise: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(⟨direction, g_k⟩ [G], RVL [B], V̄(ŝ') [E', B]) at the model's current ψ (romi.md §3 steps 5-7)."""
        groups, members = self.cfg.groups, self.members(model)
        if self.cfg.outer_grad == "jvp":
            return rm.group_alignment_jvp(
                model, self._names, self._params, direction, value_fn, obs, act, v_rob, noise, groups, members
            )
        return rm.group_alignment_vjp(model, self._params, direction, value_fn, obs, act, v_rob, noise, groups, members)

    def exact_direction(
        self,
        model: Any,
        obs: torch.Tensor,
        act: torch.Tensor,
        target: torch.Tensor,
        w: torch.Tensor,
        rvl_inputs: tuple[Any, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """((H + λI)⁻¹ g_MLE, CG relative residual, CG steps) at the model's current ψ (the exact mode)."""
        cfg = self.cfg
        params = self._params
        with torch.enable_grad():
            loss, ell = self.inner_loss(model, obs, act, target, w, rvl_inputs)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            g_mle = [g.detach() for g in torch.autograd.grad(ell.mean(), params, retain_graph=True)]
            return rm.conjugate_gradient(
                rm.hessian_vector_product(grads, params), g_mle, cfg.cg_iters, cfg.cg_damping, cfg.cg_tol
            )

    def outer_step(self, w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """One Adam_ν step on meta (romi.md §3 step 8), then the baseline update (step 9); returns meta."""
        assert self.weight_optimizer is not None and self.baseline is not None
        meta = rm.meta_objective(w, r, self.baseline, self.cfg.hypergrad_sign)
        self.weight_optimizer.zero_grad(set_to_none=True)
        meta.backward()
        self.weight_optimizer.step()
        self.baseline = rm.next_baseline(self.baseline, r, self.cfg.baseline_ema)
        return meta.detach()

    def iteration(self, ctx: Context) -> dict[str, torch.Tensor]:
        """One model-phase iteration (romi.md §3); returns detached per-iteration statistics."""
        assert self.model_optimizer is not None
        cfg = self.cfg
        model, learner, gen, data = ctx.model, ctx.learner, ctx.generator, ctx.data
        params = self._params
        device = data.obs.device

        idx = torch.randint(len(data), (cfg.batch_size,), device=device, generator=gen)
        obs, act, next_obs = data.obs[idx], data.act[idx], data.next_obs[idx]
        target = model.targets(obs, data.reward[idx], next_obs)
        value_fn = self.value_fn(learner)
        v_rob = self.robust_value(learner, next_obs, gen)  # ψ-independent: drawn first
        shape = (model.ensemble_size, cfg.batch_size, obs.shape[1])  # every member; rvl_members selects rows later
        noise = torch.randn(shape, dtype=obs.dtype, device=device, generator=gen)
        rvl_inputs = (value_fn, v_rob, noise) if cfg.rvl_coef else None

        with torch.enable_grad():
            w = self.weights(obs, act, next_obs)  # graph to ν kept for the outer step
            loss, ell = self.inner_loss(model, obs, act, target, w, rvl_inputs)
            nll = ell.mean()
            g_mle = None
            if cfg.hypergrad == "one_step":
                g_mle = [g.detach() for g in torch.autograd.grad(nll, params, retain_graph=True)]
            self.model_optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=params)
            self.model_optimizer.step()

        stats: dict[str, torch.Tensor] = {}
        if g_mle is None:
            direction, residual, used = self.exact_direction(model, obs, act, target, w, rvl_inputs)
            stats["cg_residual"], stats["cg_steps"] = residual, used
        else:
            direction = g_mle
        align, rvl, values = self.alignment(model, direction, value_fn, obs, act, v_rob, noise)
        r = cfg.r_scale * align.detach()
        with torch.enable_grad():
            meta = self.outer_step(w, r)
        wd = w.detach()
        stats.update(
            w_sum=wd.sum(), w_sq=wd.pow(2).sum(), w_min=wd.min(), w_max=wd.max(), nll=nll.detach(),
            inner_loss=loss.detach(), rvl=rvl.mean(), v_rob=v_rob.mean(), v_model=values.mean(), r_mean=r.mean(),
            r_abs=r.abs().mean(), meta=meta,
        )
        return stats

    # -- rule hooks ------------------------------------------------------------------------------------
    def before_training(self, ctx: Context) -> dict[str, float]:
        if ctx.model is not None:
            self._setup(ctx)
        return {}

    def update(self, ctx: Context) -> dict[str, torch.Tensor]:
        """One model phase of ``iterations`` iterations. Metrics ``romi/*``, device tensors read once by the trainer:
        w_mean, w_min, w_max, w_std (every w of the phase), w_probe_change, model_shift (‖ψ_end − ψ_start‖), baseline,
        phase, and per-iteration means of nll, inner_loss, rvl, v_rob, v_model, r_mean, r_abs, meta (+ cg_residual,
        cg_steps in the exact mode)."""
        self._setup(ctx)
        assert self.weight_net is not None
        cfg = self.cfg
        start = [p.detach().clone() for p in self._params]
        probe_idx = torch.randint(len(ctx.data), (cfg.batch_size,), device=ctx.data.obs.device, generator=ctx.generator)
        probe = (ctx.data.obs[probe_idx], ctx.data.act[probe_idx], ctx.data.next_obs[probe_idx])
        with torch.no_grad():
            w_start = self.weights(*probe)
        sums: dict[str, torch.Tensor] = {}
        for _ in range(cfg.iterations):
            stats = self.iteration(ctx)
            for k, v in stats.items():
                if k not in sums:
                    sums[k] = v.clone()
                elif k == "w_min":
                    sums[k] = torch.minimum(sums[k], v)
                elif k == "w_max":
                    sums[k] = torch.maximum(sums[k], v)
                else:
                    sums[k] = sums[k] + v
        self.phases += 1
        n = max(cfg.iterations, 1)
        if not sums:
            return {"romi/phase": torch.tensor(float(self.phases))}
        count = n * cfg.batch_size
        w_mean = sums.pop("w_sum") / count
        w_var = (sums.pop("w_sq") / count - w_mean.pow(2)).clamp_min(0.0)
        with torch.no_grad():
            w_end = self.weights(*probe)
            shift = torch.stack([(p.detach() - s).pow(2).sum() for p, s in zip(self._params, start, strict=True)])
        out = {
            "w_mean": w_mean,
            "w_min": sums.pop("w_min"),
            "w_max": sums.pop("w_max"),
            "w_std": w_var.sqrt(),
            "w_probe_change": (w_end - w_start).abs().mean(),
            "model_shift": shift.sum().sqrt(),
            "baseline": self.baseline.detach().clone() if self.baseline is not None else torch.zeros(()),
            "phase": torch.tensor(float(self.phases)),
        }
        for k, v in sums.items():
            out[k] = v / n
        return {f"romi/{k}": v for k, v in out.items()}


def _validate(cfg: RomiRule.Config) -> None:
    errors = []
    if cfg.every < 0 or cfg.iterations < 0:
        errors.append("every and iterations must be >= 0")
    if cfg.batch_size < 1 or cfg.groups < 1 or cfg.batch_size % cfg.groups:
        errors.append(f"batch_size ({cfg.batch_size}) must be a positive multiple of groups ({cfg.groups})")
    if len(cfg.weight_range) != 2 or not 0 <= cfg.weight_range[0] < cfg.weight_range[1]:
        errors.append(f"weight_range must be [low, high] with 0 <= low < high, got {cfg.weight_range}")
    if cfg.weight_inputs not in WEIGHT_INPUTS:
        errors.append(f"weight_inputs must be one of {', '.join(WEIGHT_INPUTS)}, got {cfg.weight_inputs!r}")
    if cfg.uset not in rm.USETS:
        errors.append(f"uset must be one of {', '.join(rm.USETS)}, got {cfg.uset!r}")
    if cfg.uset_samples < 1 and cfg.uset != "pgd":
        errors.append(f"uset_samples must be >= 1, got {cfg.uset_samples}")
    if cfg.eps < 0:
        errors.append(f"eps must be >= 0, got {cfg.eps}")
    if cfg.hypergrad_sign not in (1, -1):
        errors.append(f"hypergrad_sign must be +1 (code) or -1 (textbook), got {cfg.hypergrad_sign}")
    if cfg.hypergrad not in HYPERGRADS:
        errors.append(f"hypergrad must be one of {', '.join(HYPERGRADS)}, got {cfg.hypergrad!r}")
    if cfg.outer_grad not in OUTER_GRADS:
        errors.append(f"outer_grad must be one of {', '.join(OUTER_GRADS)}, got {cfg.outer_grad!r}")
    if cfg.cg_iters < 1 or cfg.cg_damping < 0:
        errors.append("cg_iters must be >= 1 and cg_damping >= 0")
    if cfg.value_critics not in ("target", "online"):
        errors.append(f"value_critics must be 'target' or 'online', got {cfg.value_critics!r}")
    if cfg.rvl_members not in ("all", "elites"):
        errors.append(f"rvl_members must be 'all' or 'elites', got {cfg.rvl_members!r}")
    if cfg.share_init_across_seeds:
        errors.append(
            "share_init_across_seeds=true (the released code's reuse of seed 0's initial networks and pretrained "
            "model for every seed, romi.md §7 #11) is not reproduced: the harness builds and pretrains per seed"
        )
    if errors:
        raise ValueError("invalid romi rule config: " + "; ".join(errors))
