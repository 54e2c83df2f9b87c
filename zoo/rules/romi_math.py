"""The pieces of one ROMI model-phase iteration as plain functions (romi.md §2-§3, §5).

Everything here is stateless and works in any floating dtype, so the exact checks in the tests run the same
code in float64 on tiny sizes. Parameter "vectors" are lists of tensors in the fixed order of
``model.model_parameters()`` (romi.md §2.6); nothing here ever flattens them into one |ψ|-sized vector, let alone a
|ψ|×|ψ| matrix: the exact hypergradient uses Hessian-vector products only.

Shapes: B rows, E members, C candidates, d_s state dims, D = d_s + 1 model outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import functional_call, jvp

Params = Sequence[torch.Tensor]
ValueFn = Callable[[torch.Tensor], torch.Tensor]  # states [..., d_s] -> values [...]

USETS = ("sampled_relative", "sampled_absolute", "pgd")


# -- parameter-list algebra ------------------------------------------------------------------------
def dot(a: Params, b: Params) -> torch.Tensor:
    """⟨a, b⟩ over two parameter lists (0-d tensor)."""
    return torch.stack([(x * y).sum() for x, y in zip(a, b, strict=True)]).sum()


def axpy(alpha: torch.Tensor | float, x: Params, y: Params) -> list[torch.Tensor]:
    """y + α·x, elementwise over the lists."""
    return [yi + alpha * xi for xi, yi in zip(x, y, strict=True)]


# -- value of a state (romi.md §2.2) ---------------------------------------------------------------
def state_value(learner: Any, x: torch.Tensor, critics: str = "target", entropy: bool = False) -> torch.Tensor:
    """V̄(x) = min_j Q_j(x, π_det(x)) over the target (or online) critics, [...] for x [..., d_s].

    No reward, discount or termination mask. With ``entropy`` (romi.md §7 #9) the term α·log π(π_det(x)|x) is
    subtracted. Differentiable in x (through the critic's state input and through the action π_det(x));
    callers choose what they differentiate with respect to.
    """
    action, _, log_pi = learner.act(x, deterministic=True)
    value = learner.q(x, action, target=critics == "target").amin(0)[..., 0]
    if entropy:
        value = value - learner.alpha * log_pi[..., 0]
    return value


# -- sampled state-uncertainty set and robust target (romi.md §2.3, §7 #4) ----------------------------
def uncertainty_radius(next_obs: torch.Tensor, eps: float, mode: str) -> torch.Tensor:
    """ρ_i, the per-coordinate std of a candidate's offset, [B, 1].

    ``sampled_relative`` (default): ρ_i = ε‖s'_i‖₂/3, so that at 3σ a coordinate moves by ε‖s'_i‖.
    ``sampled_absolute``: ρ = ε/3 for every row (our reading of the switch: the same 3σ rule, radius ε).
    """
    if mode == "sampled_relative":
        return eps * next_obs.norm(dim=-1, keepdim=True) / 3.0
    if mode == "sampled_absolute":
        return torch.full_like(next_obs[..., :1], eps / 3.0)
    raise ValueError(f"no sampled radius for uset {mode!r}")


def uncertainty_set(
    next_obs: torch.Tensor,
    eps: float,
    samples: int,
    center: bool = True,
    mode: str = "sampled_relative",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Candidates C(s') [C, B, d_s] of romi.md §2.3: the centre s' (first, if ``center``) then s' + ρ·ζ_m.

    The offsets are drawn as ONE call ``torch.randn((samples, B, d_s), generator=generator)`` (the tests rebuild
    the list from the same generator state).
    """
    b, d = next_obs.shape
    zeta = torch.randn((samples, b, d), dtype=next_obs.dtype, device=next_obs.device, generator=generator)
    rho = uncertainty_radius(next_obs, eps, mode)
    cands = next_obs.unsqueeze(0) + rho.unsqueeze(0) * zeta
    if center:
        cands = torch.cat([next_obs.unsqueeze(0), cands], dim=0)
    return cands


def pgd_candidate(value_fn: ValueFn, next_obs: torch.Tensor, radius: torch.Tensor, steps: int) -> torch.Tensor:
    """The ``pgd`` uncertainty set (romi.md §7 #4, ours): projected gradient descent on V̄ inside ‖x − s'‖₂ ≤ R.

    Starts at s'; each step moves by 2.5·R/steps along the normalised −∇_x V̄ and projects back onto the ball
    (the usual L2 PGD step rule). Returns the final iterate [B, d_s], detached.
    """
    step = 2.5 * radius / max(steps, 1)
    x = next_obs.detach().clone()
    for _ in range(steps):
        with torch.enable_grad():
            xg = x.requires_grad_(True)
            (grad,) = torch.autograd.grad(value_fn(xg).sum(), xg)
        with torch.no_grad():
            x = x - step * grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            offset = x - next_obs
            scale = (radius / offset.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
            x = next_obs + offset * scale
    return x.detach()


def robust_target(value_fn: ValueFn, candidates: torch.Tensor) -> torch.Tensor:
    """V_rob,i = min over the candidates of V̄, [B] (romi.md §2.3); no gradient."""
    with torch.no_grad():
        c, b, d = candidates.shape
        return value_fn(candidates.reshape(c * b, d)).view(c, b).amin(0)


# -- model side (romi.md §2.4, §2.5) ---------------------------------------------------------------
def model_next_states(obs: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """ŝ'_{e,i} = s_i + μ_e^{Δs} + σ_e^{Δs} ⊙ ζ_{e,i}, [E, B, d_s] (reparameterised)."""
    d_s = obs.shape[-1]
    return obs + mean[..., :d_s] + torch.exp(0.5 * logvar[..., :d_s]) * noise


def nll_terms(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ℓ_ij = Σ_e [(μ_eij − y_ij)² e^{−ℓ_eij} + ℓ_eij], [B, D] (romi.md §2.5)."""
    return ((mean - target).pow(2) * torch.exp(-logvar) + logvar).sum(0)


def rvl_rows(values: torch.Tensor, v_rob: torch.Tensor) -> torch.Tensor:
    """RVL_i = Σ_e (V̄(ŝ'_{e,i}) − V_rob,i)², [B], from values [E, B] (romi.md §2.4)."""
    return (values - v_rob).pow(2).sum(0)


def rvl_of_model(
    obs: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    noise: torch.Tensor,
    value_fn: ValueFn,
    v_rob: torch.Tensor,
    members: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RVL [B], V̄(ŝ') [E', B]) for the model's sampled next states ŝ' (restricted to ``members`` when given)."""
    x = model_next_states(obs, mean, logvar, noise)
    if members is not None:
        x = x[members]
    e, b, d_s = x.shape
    values = value_fn(x.reshape(e * b, d_s)).view(e, b)
    return rvl_rows(values, v_rob), values


def parameter_names(model: torch.nn.Module, params: Params) -> list[str]:
    """The ``named_parameters`` names of ``params`` (for ``functional_call``), in the given order."""
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(f"model_parameters() entries {missing} are not registered parameters of the model")
    return [names[id(p)] for p in params]


def next_states_and_tangent(
    model: torch.nn.Module,
    names: Sequence[str],
    params: Params,
    direction: Params,
    obs: torch.Tensor,
    act: torch.Tensor,
    noise: torch.Tensor,
    members: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ŝ' [E', B, d_s], J_ψ ŝ' · d): the model samples and their directional derivative along ``direction``.

    One forward-mode pass (``torch.func.jvp``) through the model only; ``members`` selects E' of the E members.
    """

    def sample(*ps: torch.Tensor) -> torch.Tensor:
        mean, logvar = functional_call(model, dict(zip(names, ps, strict=True)), (obs, act))
        x = model_next_states(obs, mean, logvar, noise)
        return x if members is None else x[members]

    with torch.enable_grad():
        x, tangent = jvp(sample, tuple(p.detach() for p in params), tuple(d.detach() for d in direction))
    return x, tangent


def group_alignment_jvp(
    model: torch.nn.Module,
    names: Sequence[str],
    params: Params,
    direction: Params,
    value_fn: ValueFn,
    obs: torch.Tensor,
    act: torch.Tensor,
    v_rob: torch.Tensor,
    noise: torch.Tensor,
    groups: int,
    members: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a [G], RVL [B], V̄(ŝ') [E', B]) with a_k = ⟨d, g_k⟩, g_k = ∇_ψ (1/n_g) Σ_{i∈G_k} RVL_i (romi.md §3 steps 5-7).

    Computed without the G ψ-gradients: RVL_i depends on ψ only through its own rows ŝ'_{·,i}, so
    ⟨d, ∇_ψ RVL_i⟩ = Σ_e ⟨∂RVL_i/∂ŝ'_{e,i}, (J_ψ ŝ' d)_{e,i}⟩. One backward through the value network gives every
    ∂RVL_i/∂ŝ'_{e,i} (rows are independent in the actor and critics), one forward-mode pass through the model gives
    J_ψ ŝ'·d. Identical in exact arithmetic to the spec's G gradients (``group_alignment_vjp``).
    """
    x, tangent = next_states_and_tangent(model, names, params, direction, obs, act, noise, members)
    e, b, d_s = x.shape
    with torch.enable_grad():
        xd = x.detach().requires_grad_(True)
        values = value_fn(xd.reshape(e * b, d_s)).view(e, b)
        rvl = rvl_rows(values, v_rob)
        (gx,) = torch.autograd.grad(rvl.sum(), xd)
    per_row = (gx * tangent).sum(dim=(0, 2))  # ⟨d, ∇_ψ RVL_i⟩, [B]
    return per_row.view(groups, b // groups).mean(1), rvl.detach(), values.detach()


def group_gradients(
    model: torch.nn.Module,
    params: Params,
    value_fn: ValueFn,
    obs: torch.Tensor,
    act: torch.Tensor,
    v_rob: torch.Tensor,
    noise: torch.Tensor,
    groups: int,
    members: torch.Tensor | None = None,
) -> tuple[list[list[torch.Tensor]], torch.Tensor, torch.Tensor]:
    """The spec-literal outer gradients g_k = ∇_ψ (1/n_g) Σ_{i∈G_k} RVL_i, one ψ-gradient per group (romi.md §3 step 6).

    Returns ([g_1 .. g_G], RVL [B], V̄(ŝ') [E', B]). Groups are contiguous in sampling order.
    """
    with torch.enable_grad():
        mean, logvar = model(obs, act)
        rvl, values = rvl_of_model(obs, mean, logvar, noise, value_fn, v_rob, members)
        group_means = rvl.view(groups, -1).mean(1)
        grads = [
            list(torch.autograd.grad(group_means[k], list(params), retain_graph=k + 1 < groups, allow_unused=True))
            for k in range(groups)
        ]
    grads = [[torch.zeros_like(p) if g is None else g for g, p in zip(gk, params, strict=True)] for gk in grads]
    return grads, rvl.detach(), values.detach()


def group_alignment_vjp(
    model: torch.nn.Module,
    params: Params,
    direction: Params,
    value_fn: ValueFn,
    obs: torch.Tensor,
    act: torch.Tensor,
    v_rob: torch.Tensor,
    noise: torch.Tensor,
    groups: int,
    members: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same result as :func:`group_alignment_jvp`, through the G explicit ψ-gradients of romi.md §3 step 6."""
    grads, rvl, values = group_gradients(model, params, value_fn, obs, act, v_rob, noise, groups, members)
    return torch.stack([dot(direction, gk) for gk in grads]), rvl, values


# -- exact implicit hypergradient (romi.md §1.1, §5): conjugate gradient on Hessian-vector products ------
def conjugate_gradient(
    hvp: Callable[[list[torch.Tensor]], list[torch.Tensor]],
    rhs: Params,
    iters: int,
    damping: float = 0.0,
    tol: float = 1e-10,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Solve (H + λI) u = rhs for symmetric H given only products H·v; (u, relative residual, iterations used).

    A fixed number of iterations with no host synchronisation: once the relative residual falls below ``tol``, or
    a direction of non-positive curvature pᵀ(H + λI)p ≤ 0 appears (H is indefinite away from a minimum), the step
    sizes become zero and the iterate stays where it is (the usual truncated-CG rule).
    """
    u = [torch.zeros_like(r) for r in rhs]
    r = [t.detach().clone() for t in rhs]
    p = [t.clone() for t in r]
    rs = dot(r, r)
    rhs_norm2 = rs.clone()
    active = torch.ones((), dtype=torch.bool, device=rs.device)
    used = torch.zeros((), device=rs.device)
    tiny = torch.finfo(rs.dtype).tiny
    for _ in range(iters):
        hp = hvp(p)
        if damping:
            hp = axpy(damping, p, hp)
        php = dot(p, hp)
        active = active & (php > 0) & (rs > (tol * tol) * rhs_norm2)
        alpha = torch.where(active, rs / torch.where(active, php, torch.ones_like(php)), torch.zeros_like(rs))
        u = axpy(alpha, p, u)
        r = axpy(-alpha, hp, r)
        rs_new = dot(r, r)
        beta = torch.where(active, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs))
        p = axpy(beta, p, r)
        rs = torch.where(active, rs_new, rs)
        used = used + active.to(used.dtype)
    residual = (rs / rhs_norm2.clamp_min(tiny)).sqrt()
    return [t.detach() for t in u], residual.detach(), used


def hessian_vector_product(grads: Params, params: Params) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """v ↦ H·v by double backward through ``grads`` = ∇_ψ L (built with ``create_graph=True``)."""

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        out = torch.autograd.grad(list(grads), list(params), grad_outputs=v, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if o is None else o.detach() for o, p in zip(out, params, strict=True)]

    return hvp


# -- outer step (romi.md §3 steps 7-9) -----------------------------------------------------------------
def meta_objective(weights: torch.Tensor, r: torch.Tensor, baseline: torch.Tensor, sign: int) -> torch.Tensor:
    """meta(ν) = σ_h · (1/B) Σ_k (1/n_g) Σ_{i∈G_k} w_i(ν) · stopgrad(r_k − b) (romi.md §3 step 8)."""
    b = weights.shape[0]
    groups = r.shape[0]
    signal = (r - baseline).detach().repeat_interleave(b // groups)
    return sign * (weights.reshape(-1) * signal).sum() / (b * (b // groups))


def next_baseline(baseline: torch.Tensor, r: torch.Tensor, rate: float) -> torch.Tensor:
    """b ← mean_k r_k on the first iteration ever (b == 0, as in the code); else b ← b − rate·(b − mean_k r_k)."""
    mean = r.detach().mean()
    return torch.where(baseline == 0, mean, baseline - rate * (baseline - mean))
