"""ROMBRL rule (rombrl.md): exact float64 checks of the Woodbury chain, the Eq. (8)/(9) directions, the exact-Hessian
total derivative against finite differences, dual GAE, the PPO-clip mask; the rule's hooks and persistent state.
The end-to-end runs on pendulum-medium are in the slow tier at the end of the file."""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call

from zoo.data.transitions import Transitions
from zoo.dynamics.ensemble import GaussianEnsemble
from zoo.learners.sac import SAC
from zoo.protocols import Batch, Context, EnvSpec
from zoo.registry import REGISTRY
from zoo.rules.rombrl import (
    RombrlRule,
    discount_weights,
    dual_gae,
    normalize,
    ppo_clip_mask,
    squashed_to_pre_tanh,
)
from zoo.rules.rombrl_linalg import (
    ExactOperator,
    WoodburyInverse,
    conjugate_gradient,
    implicit_total_derivative,
    kkt_direction,
)
from zoo.rules.rombrl_scores import ModelScores

D64 = torch.float64
SPEC = EnvSpec(obs_dim=3, act_dim=1, act_low=-2.0, act_high=2.0)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------------
# Linear algebra (rombrl.md §4.4 steps 6–8)
def _rows(seed: int, p: int = 40, m: int = 4, mh: int = 12) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    X, Y, U, V = (0.4 * torch.randn(m, p, generator=g, dtype=D64) for _ in range(4))
    Z = torch.randn(mh, p, generator=g, dtype=D64)
    return X, Y, Z, U, V


def _dense_a(c: float, X, Y, Z, U, V) -> torch.Tensor:
    return c * torch.eye(X.shape[1], dtype=D64) - X.T @ Y + Z.T @ Z + U.T @ V


def test_woodbury_chain_equals_the_dense_inverse() -> None:
    c = 5.0
    X, Y, Z, U, V = _rows(0)
    A = _dense_a(c, X, Y, Z, U, V)
    inv = WoodburyInverse(c, X, Y, Z, U, V)
    b = torch.randn(A.shape[0], dtype=D64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(inv.apply(b), torch.linalg.solve(A, b), rtol=1e-10, atol=1e-12)
    P = torch.randn(3, A.shape[0], dtype=D64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(inv.apply(P), torch.linalg.solve(A, P.T).T, rtol=1e-10, atol=1e-12)
    # A is not symmetric: A⁻¹ and A⁻ᵀ differ, and the transpose switch gives the latter (rombrl.md §8 #8)
    assert not torch.allclose(torch.linalg.solve(A, b), torch.linalg.solve(A.T, b))
    inv_t = WoodburyInverse(c, X, Y, Z, U, V, transpose=True)
    torch.testing.assert_close(inv_t.apply(b), torch.linalg.solve(A.T, b), rtol=1e-10, atol=1e-12)


def test_woodbury_caches_equal_their_definitions() -> None:
    c = 3.0
    X, Y, Z, U, V = _rows(3)
    p, m, mh = X.shape[1], X.shape[0], Z.shape[0]
    inv = WoodburyInverse(c, X, Y, Z, U, V)
    eye_p = torch.eye(p, dtype=D64)
    M3 = c * eye_p - X.T @ Y
    M2 = M3 + Z.T @ Z
    K3 = X.T @ torch.linalg.inv(c * torch.eye(m, dtype=D64) - Y @ X.T)
    K2 = torch.linalg.solve(M3, Z.T) @ torch.linalg.inv(torch.eye(mh, dtype=D64) + Z @ torch.linalg.solve(M3, Z.T))
    KA = torch.linalg.solve(M2, U.T) @ torch.linalg.inv(torch.eye(m, dtype=D64) + V @ torch.linalg.solve(M2, U.T))
    torch.testing.assert_close(inv.K3, K3, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(inv.K2, K2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(inv.KA, KA, rtol=1e-10, atol=1e-12)
    assert not inv.singular
    with pytest.raises(ValueError, match="damping"):
        WoodburyInverse(0.0, X, Y, Z, U, V)


def test_kkt_direction_is_the_top_left_block_of_the_kkt_inverse() -> None:
    c, lam, C = 4.0, 7.0, -2.5
    X, Y, Z, U, V = _rows(4, p=30)
    A = _dense_a(c, X, Y, Z, U, V)
    g = torch.Generator().manual_seed(5)
    b, B = torch.randn(30, dtype=D64, generator=g), torch.randn(30, dtype=D64, generator=g)
    inv = WoodburyInverse(c, X, Y, Z, U, V)
    res = kkt_direction(inv.apply, b, B, C, lam)
    K = torch.zeros(31, 31, dtype=D64)
    K[:30, :30], K[:30, 30], K[30, :30], K[30, 30] = A, B, lam * B, C
    expected = torch.linalg.solve(K, torch.cat([b, torch.zeros(1, dtype=D64)]))[:30]
    torch.testing.assert_close(res.direction, expected, rtol=1e-9, atol=1e-12)
    S = C - lam * B @ torch.linalg.solve(A, B)
    assert res.schur == pytest.approx(float(S), rel=1e-10) and not res.skipped
    # |S| below the guard: the Schur term is dropped, ĥ = A⁻¹∇_φJ
    guarded = kkt_direction(inv.apply, b, B, C, lam, guard=abs(float(S)) * 2)
    assert guarded.skipped
    torch.testing.assert_close(guarded.direction, torch.linalg.solve(A, b), rtol=1e-10, atol=1e-12)


def test_conjugate_gradient_and_the_exact_operator() -> None:
    g = torch.Generator().manual_seed(6)
    R = torch.randn(25, 25, dtype=D64, generator=g)
    H = R @ R.T / 25 + 0.5 * torch.eye(25, dtype=D64)
    b = torch.randn(25, dtype=D64, generator=g)
    x, info = conjugate_gradient(lambda v: H @ v, b, tol=1e-13, max_iter=200)
    torch.testing.assert_close(x, torch.linalg.solve(H, b), rtol=1e-10, atol=1e-12)
    assert info.residual < 1e-12
    # non-symmetric A = cI + H + UᵀV with an indefinite H: CG on the normal equations
    Hs = (R + R.T) / 10
    U, V = 0.5 * torch.randn(3, 25, dtype=D64, generator=g), 0.5 * torch.randn(3, 25, dtype=D64, generator=g)
    A = 2.0 * torch.eye(25, dtype=D64) + Hs + U.T @ V
    op = ExactOperator(lambda v: Hs @ v, 2.0, U, V, tol=1e-14, max_iter=2000)
    torch.testing.assert_close(op.apply(b), torch.linalg.solve(A, b), rtol=1e-8, atol=1e-10)
    op_t = ExactOperator(lambda v: Hs @ v, 2.0, U, V, transpose=True, tol=1e-14, max_iter=2000)
    torch.testing.assert_close(op_t.apply(b), torch.linalg.solve(A.T, b), rtol=1e-8, atol=1e-10)


def test_exact_total_derivative_matches_finite_differences_at_the_follower_optimum() -> None:
    """Leader f(θ, φ), follower F = f + λC strongly convex in φ; φ*(θ) solved by Newton. With the exact Hessian and
    κ = 1 the implicit-function-theorem derivative equals d f(θ, φ*(θ))/dθ by central differences."""
    g = torch.Generator().manual_seed(7)
    M = torch.randn(3, 4, dtype=D64, generator=g)
    phi0 = torch.randn(4, dtype=D64, generator=g)
    lam = 5.0

    def f(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return (torch.sin(theta) @ M @ phi + 0.5 * (theta @ theta) * phi[0] * phi[1]
                + theta[0] * torch.tanh(phi).sum() + 0.3 * torch.cos(theta[2]) * phi[3] ** 2)

    def follower(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return f(theta, phi) + lam * (0.5 * (phi - phi0).pow(2).sum() + 0.05 * phi.pow(4).sum())

    def follower_grad(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        phi = phi.clone().requires_grad_(True)
        return torch.autograd.grad(follower(theta, phi), phi)[0]

    def solve_follower(theta: torch.Tensor) -> torch.Tensor:
        """Newton's method to machine precision (F is strongly convex in φ)."""
        phi = phi0.clone()
        for _ in range(30):
            grad = follower_grad(theta, phi)
            if grad.abs().max() < 1e-14:
                break
            hess = torch.autograd.functional.hessian(lambda q: follower(theta, q), phi)
            phi = phi - torch.linalg.solve(hess, grad)
        assert follower_grad(theta, phi).abs().max() < 1e-13
        return phi

    theta = torch.tensor([0.3, -0.7, 0.5], dtype=D64)
    phi_star = solve_follower(theta)
    total, h = implicit_total_derivative(f, follower, theta, phi_star, kappa=1.0, damping=0.0)
    eps = 1e-5
    fd = torch.stack([
        (f(theta + eps * e, solve_follower(theta + eps * e)) - f(theta - eps * e, solve_follower(theta - eps * e)))
        / (2 * eps)
        for e in torch.eye(3, dtype=D64)
    ])
    torch.testing.assert_close(total, fd, rtol=1e-7, atol=1e-9)
    partial = torch.autograd.functional.jacobian(lambda t: f(t, phi_star), theta)
    assert (partial - fd).abs().max() > 1e-2  # the implicit term matters on this problem
    hess = torch.autograd.functional.hessian(lambda q: follower(theta, q), phi_star)
    g_phi = torch.autograd.functional.jacobian(lambda q: f(theta, q), phi_star)
    torch.testing.assert_close(h, torch.linalg.solve(hess, g_phi))


# ---------------------------------------------------------------------------------------------------------------------
# Dual GAE, mask, discounts (rombrl.md §4.2–§4.3)
def test_dual_gae_equals_a_direct_loop() -> None:
    g = torch.Generator().manual_seed(8)
    H, N, gamma, lam = 6, 4, 0.9, 0.8
    reward, value, q = (torch.randn(H, N, dtype=D64, generator=g) for _ in range(3))
    start = (torch.rand(H, N, generator=g) < 0.3).to(D64)
    start[0] = 0
    last_v, last_q = torch.randn(N, dtype=D64, generator=g), torch.randn(N, dtype=D64, generator=g)
    last_done = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=D64)
    adv, dyn_adv = dual_gae(reward, value, q, start, last_v, last_q, last_done, gamma, lam)

    def loop(values: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(H, N, dtype=D64)
        for i in range(N):
            running = 0.0
            for t in reversed(range(H)):
                done_t = float(last_done[i]) if t == H - 1 else float(start[t + 1, i])  # d_t = start_{t+1}
                nxt = float(last[i]) if t == H - 1 else float(values[t + 1, i])
                delta = float(reward[t, i]) + gamma * (1 - done_t) * nxt - float(values[t, i])
                running = delta + gamma * lam * (1 - done_t) * running
                out[t, i] = running
        return out

    torch.testing.assert_close(adv, loop(value, last_v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dyn_adv, loop(q, last_q), rtol=1e-12, atol=1e-12)


def test_mask_equals_its_definition_and_ppo_zero_gradient_set() -> None:
    g = torch.Generator().manual_seed(9)
    adv = torch.randn(500, dtype=D64, generator=g)
    ratio = torch.exp(0.4 * torch.randn(500, dtype=D64, generator=g))
    clip = 0.2
    mask = ppo_clip_mask(adv, ratio, clip)
    definition = (adv * ratio <= adv * torch.clamp(ratio, 1 - clip, 1 + clip)).to(D64)
    assert torch.equal(mask, definition)
    zero_grad = ((adv > 0) & (ratio > 1 + clip)) | ((adv < 0) & (ratio < 1 - clip))
    assert torch.equal(mask == 0, zero_grad)
    # M = 1 exactly where the clipped PPO surrogate has a non-zero derivative in ρ
    r = ratio.clone().requires_grad_(True)
    torch.minimum(adv * r, adv * r.clamp(1 - clip, 1 + clip)).sum().backward()
    assert torch.equal(mask == 1, r.grad != 0)
    assert 0.1 < float(mask.mean()) < 0.95


def test_discount_weights_and_normalisation() -> None:
    start = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=D64)
    no_reset = discount_weights(start, 0.5, reset=False)
    torch.testing.assert_close(no_reset, torch.tensor([[1, 1], [0.5, 0.5], [0.25, 0.25], [0.125, 0.125]], dtype=D64))
    reset = discount_weights(start, 0.5, reset=True)
    torch.testing.assert_close(reset, torch.tensor([[1, 1], [0.5, 1], [1, 0.5], [0.5, 0.25]], dtype=D64))
    x = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]], dtype=D64)
    n = normalize(x, dim=-1)
    torch.testing.assert_close(n.mean(-1), torch.zeros(2, dtype=D64), atol=1e-12, rtol=0)
    torch.testing.assert_close(n.std(-1), torch.ones(2, dtype=D64), atol=1e-6, rtol=0)  # unbiased std
    a = torch.tensor([-1.9, 0.0, 1.5], dtype=D64)
    torch.testing.assert_close(2.0 * torch.tanh(squashed_to_pre_tanh(a, 2.0)), a)


# ---------------------------------------------------------------------------------------------------------------------
# Small float64 world: model, learner, data and context
def _data(n: int = 200, seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 3))
    act = rng.uniform(-2, 2, size=(n, 1))
    nxt = obs + 0.1 * np.tanh(act) + 0.05 * rng.normal(size=(n, 3))
    return Transitions.from_numpy(
        obs=obs, act=act, reward=-(obs**2).sum(1) - 0.1 * act[:, 0] ** 2, next_obs=nxt,
        terminal=np.zeros(n), timeout=np.zeros(n),
    )


def _world(seed: int = 0, fit: bool = False) -> tuple[GaussianEnsemble, SAC, Context]:
    torch.manual_seed(seed)
    cfg = GaussianEnsemble.Config(ensemble=3, elites=2, hidden=[8], weight_decay=[1e-5, 1e-5], max_epochs=3)
    model = GaussianEnsemble(cfg, SPEC)
    data = _data()
    if fit:
        model.fit(data, generator=torch.Generator().manual_seed(seed))
    model.double()
    learner = SAC(SAC.Config(hidden=[8]), SPEC)
    for net in (learner.actor, learner.critic, learner.critic_target):
        net.double()

    def termination(obs: torch.Tensor, act: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        return (nxt[:, :1].abs() > 1.6).to(nxt.dtype)  # some restarts inside short rollouts

    ctx = Context(
        data=data, model=model, learner=learner, termination=termination, normalizer=None,
        device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed + 1), step=0, spec=SPEC,
    )
    return model, learner, ctx


SMALL = dict(num_rollouts=6, rollout_horizon=5, score_horizon=3, down_sample=3, real_batch=12, damping=2.0,
             kappa=0.5, actor_epochs=2, follower_epochs=1, follower_minibatch=8)


def _log_prob(model: GaussianEnsemble, obs, act, y, k) -> torch.Tensor:
    """Naive log N(y; μ_k, σ_k) of one row (independent of the rule's ModelScores)."""
    mean, logvar = model(obs.unsqueeze(0), act.unsqueeze(0))
    mu, lv = mean[int(k), 0], logvar[int(k), 0]
    return (-0.5 * (y - mu) ** 2 * torch.exp(-lv) - 0.5 * lv - 0.5 * math.log(2 * math.pi)).sum()


def _grad(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params, retain_graph=True)])


def _dense_direction(rule: RombrlRule, traj, step, model, learner, data: Transitions, mode: int) -> torch.Tensor:
    """Δ_θ of rombrl.md §4.3–§4.4 from dense matrices built by plain loops of backward passes."""
    cfg, ex = rule.cfg, step.extras
    idx, pick, tau = ex["traj_idx"], ex["pick"], ex["tau"]
    phi = model.model_parameters()
    theta = list(learner.actor.parameters())
    H, nb = traj.horizon, idx.numel()
    h, m = min(cfg.score_horizon, H), pick.numel()
    adv_raw, dadv_raw = traj.adv[:, idx], traj.dyn_adv[:, idx]
    adv = (adv_raw - adv_raw.mean(1, keepdim=True)) / (adv_raw.std(1, keepdim=True) + 1e-8)
    dadv = (dadv_raw - dadv_raw.mean(1, keepdim=True)) / (dadv_raw.std(1, keepdim=True) + 1e-8)
    disc = torch.tensor([cfg.gamma**t for t in range(H)], dtype=D64).unsqueeze(1)
    logp = learner.log_prob(traj.obs[:, idx], traj.pre_tanh[:, idx])[..., 0]
    ratio = torch.exp(logp - traj.logp_old[:, idx]).detach()
    mask = (adv * ratio <= adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).to(D64)
    g_theta = _grad((mask * adv * logp * disc).sum(0).mean(), theta)
    W = torch.stack([_grad((mask[:, i] * logp[:, i]).sum(), theta) for i in pick.tolist()]) / math.sqrt(m)

    def lp(t: int, i: int) -> torch.Tensor:
        j = int(idx[i])
        return _log_prob(model, traj.obs[t, j], traj.act[t, j], traj.sample[t, j], traj.member[t, j])

    j_phi = sum(dadv[t, i] * lp(t, i) * cfg.gamma**t for t in range(h) for i in range(nb)) / nb
    b = _grad(j_phi, phi)
    G = {(t, i): _grad(lp(t, i), phi) for t in range(h) for i in pick.tolist()}
    w = {(t, i): cfg.gamma**t * float(dadv[t, i]) for t in range(h) for i in pick.tolist()}
    U = torch.stack([sum(w[t, i] * G[t, i] for t in range(h)) for i in pick.tolist()]) / math.sqrt(m)
    V = torch.stack([sum(G[t, i] for t in range(h)) for i in pick.tolist()]) / math.sqrt(m)
    X = torch.stack([w[int(s), i] * G[int(s), i] for s, i in zip(tau, pick.tolist(), strict=True)]) / math.sqrt(m)
    Y = torch.stack([G[int(s), i] for s, i in zip(tau, pick.tolist(), strict=True)]) / math.sqrt(m)
    lam = ex["lambda"]
    ridx, rmem = ex["real_idx"], ex["real_member"]
    d = data
    robs, ract = d.obs[ridx].to(D64), d.act[ridx].to(D64)
    ry = torch.cat([d.next_obs[ridx] - d.obs[ridx], d.reward[ridx]], -1).to(D64)
    real_lp = [_log_prob(model, robs[r], ract[r], ry[r], rmem[r]) for r in range(ridx.numel())]
    Z = torch.stack([_grad(real_lp[int(r)], phi) for r in ex["z_sel"]]) * math.sqrt(lam / (m * h))
    A = cfg.damping * torch.eye(b.numel(), dtype=D64) - X.T @ Y + Z.T @ Z + U.T @ V
    a_inv_b = torch.linalg.solve(A, b)
    if mode == 2:
        h_hat = a_inv_b
    else:
        C = -torch.stack(real_lp).mean() - cfg.epsilon
        B = _grad(C, phi)
        a_inv_B = torch.linalg.solve(A, B)
        S = C.detach() - lam * B @ a_inv_B
        h_hat = a_inv_b + lam * a_inv_B * (B @ a_inv_b) / S
    return g_theta - cfg.kappa * W.T @ (U @ h_hat)


@pytest.mark.parametrize("mode", [2, 3])
def test_implicit_directions_equal_the_dense_formulas(mode: int) -> None:
    model, learner, ctx = _world(fit=True)
    rule = REGISTRY.create("rule", "rombrl", grad_mode=mode, **SMALL)
    traj = rule.collect(ctx)
    assert traj.start.sum() > 0  # the test covers restarts
    idx = torch.randperm(traj.num, generator=torch.Generator().manual_seed(3))
    step = rule.leader_direction(traj, idx, ctx, implicit=True)
    assert step.implicit and not step.extras.get("failed", False)
    expected = _dense_direction(rule, traj, step, model, learner, ctx.data, mode)
    torch.testing.assert_close(step.direction, expected, rtol=1e-8, atol=1e-10)
    assert step.implicit_ratio > 1e-3  # κ = 0.5: the implicit term is visible in this check
    size = float((step.direction - step.grad_theta).norm() / step.grad_theta.norm())  # κ‖Wᵀ(Uĥ)‖/‖g_θ‖
    assert step.implicit_ratio == pytest.approx(size, rel=1e-9)


def test_leader_objectives_and_stored_actions_before_any_actor_update() -> None:
    """At the rollout's own policy ρ = 1: every sample is unmasked and PPO's clipped surrogate has the masked policy
    gradient as its gradient (rombrl.md §8 #13); the atanh recovery of squashed actions (store_raw_actions = false,
    §8 #12) changes the log-probabilities of saturated actions only."""
    idx = torch.arange(6)
    steps = {}
    for objective in ("masked_pg", "ppo_clip"):
        _, _, ctx = _world()
        rule = REGISTRY.create("rule", "rombrl", leader_objective=objective, **SMALL)
        traj = rule.collect(ctx)
        steps[objective] = rule.leader_direction(traj, idx, ctx, implicit=False)
    assert steps["masked_pg"].mask_ratio == 1.0
    torch.testing.assert_close(steps["ppo_clip"].grad_theta, steps["masked_pg"].grad_theta, rtol=1e-9, atol=1e-12)
    recovered = squashed_to_pre_tanh(traj.act, SPEC.act_scale)
    saturated = traj.pre_tanh.abs() > 7.0
    torch.testing.assert_close(recovered[~saturated], traj.pre_tanh[~saturated], rtol=1e-6, atol=1e-6)


def test_exact_hessian_option_solves_the_dense_exact_system() -> None:
    """hessian = "exact": ĥ = (cI + ∇²S + UᵀV)⁻¹∇_φJ with S the surrogate of the rule's docstring, checked against a
    dense autograd Hessian of S over the flat model parameters."""
    model, learner, ctx = _world(fit=True)
    rule = REGISTRY.create("rule", "rombrl", grad_mode=2, hessian="exact", cg_iters=1000, cg_tol=1e-13, **SMALL)
    traj = rule.collect(ctx)
    idx = torch.arange(traj.num)
    step = rule.leader_direction(traj, idx, ctx, implicit=True)
    ex = step.extras
    pick, cfg = ex["pick"], rule.cfg
    h, m = min(cfg.score_horizon, traj.horizon), pick.numel()
    params = model.model_parameters()
    names = rule._scores.names
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])
    dadv = normalize(traj.dyn_adv, dim=-1)
    weight = torch.tensor([cfg.gamma**t for t in range(h)], dtype=D64).unsqueeze(1) * dadv[:h]
    ridx, rmem, z_sel = ex["real_idx"], ex["real_member"], ex["z_sel"]
    d = ctx.data
    robs, ract = d.obs[ridx][z_sel].to(D64), d.act[ridx][z_sel].to(D64)
    ry = torch.cat([d.next_obs[ridx] - d.obs[ridx], d.reward[ridx]], -1)[z_sel].to(D64)

    def surrogate(flat: torch.Tensor) -> torch.Tensor:
        ps, off = {}, 0
        for name, p in zip(names, params, strict=True):
            ps[name] = flat[off : off + p.numel()].view_as(p)
            off += p.numel()

        def lp(o, a, y, k):
            mean, logvar = functional_call(model, ps, (o, a))
            rows = torch.arange(o.shape[0])
            mu, lv = mean[k, rows], logvar[k, rows]
            return (-0.5 * (y - mu) ** 2 * torch.exp(-lv) - 0.5 * lv - 0.5 * math.log(2 * math.pi)).sum(-1)

        sel = (slice(0, h), pick)
        lp_i = lp(traj.obs[sel].reshape(-1, 3), traj.act[sel].reshape(-1, 1), traj.sample[sel].reshape(-1, 4),
                  traj.member[sel].reshape(-1)).view(h, m)
        lp_z = lp(robs, ract, ry, rmem[z_sel])
        return (weight[:, pick] * lp_i).sum() / (m * h) - ex["lambda"] * lp_z.mean()

    hess = torch.func.hessian(surrogate)(flat0)
    A = cfg.damping * torch.eye(flat0.numel(), dtype=D64) + hess + ex["U"].T @ ex["V"]
    torch.testing.assert_close(ex["h"], torch.linalg.solve(A, ex["grad_phi"]), rtol=1e-6, atol=1e-9)
    assert ex["cg_residual"] < 1e-6


def test_per_sample_gradient_modes_agree_with_plain_backward_passes() -> None:
    model, _, _ = _world()
    g = torch.Generator().manual_seed(4)
    obs, act = torch.randn(5, 3, dtype=D64, generator=g), torch.randn(5, 1, dtype=D64, generator=g)
    y, k = torch.randn(5, 4, dtype=D64, generator=g), torch.randint(3, (5,), generator=g)
    params = model.model_parameters()
    naive = torch.stack([_grad(_log_prob(model, obs[j], act[j], y[j], k[j]), params) for j in range(5)])
    w = torch.randn(5, dtype=D64, generator=g)
    for mode in ("structured", "vmap", "loop"):
        scores = ModelScores(model, mode)
        torch.testing.assert_close(scores.per_sample_grads(obs, act, y, k), naive, rtol=1e-10, atol=1e-12)
        grouped = scores.per_sample_grads(obs.view(1, 5, 3), act.view(1, 5, 1), y.view(1, 5, 4), k.view(1, 5),
                                          w.view(1, 5))
        torch.testing.assert_close(grouped[0], w @ naive, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# Hooks and state
def test_on_batch_resimulates_only_the_model_rows() -> None:
    model, _, ctx = _world()
    model.float()
    rule = RombrlRule()
    g = torch.Generator().manual_seed(0)
    b = Batch(
        obs=torch.randn(8, 3, generator=g), act=torch.rand(8, 1, generator=g) * 4 - 2,
        reward=torch.full((8, 1), 99.0), next_obs=torch.full((8, 3), 99.0), terminal=torch.zeros(8, 1),
        is_model=torch.cat([torch.zeros(3, 1), torch.ones(5, 1)]),
    )
    out = rule.on_batch(b, ctx)
    assert torch.equal(out.obs, b.obs) and torch.equal(out.act, b.act)
    assert torch.equal(out.reward[:3], b.reward[:3]) and torch.equal(out.next_obs[:3], b.next_obs[:3])
    assert (out.reward[3:] != 99.0).all() and (out.next_obs[3:] != 99.0).all()
    mean, logvar = model(b.obs[3:], b.act[3:])
    y = torch.cat([out.next_obs[3:] - b.obs[3:], out.reward[3:]], -1)
    z = (y - mean[model.elites]) * torch.exp(-0.5 * logvar[model.elites])
    assert z.abs().min(0).values.max() < 6.0  # every row is a draw from one of the elites
    torch.testing.assert_close(out.terminal[3:], ctx.termination(b.obs[3:], b.act[3:], out.next_obs[3:]))
    off = RombrlRule(RombrlRule.Config(resimulate_model_rows=False))
    assert off.on_batch(b, ctx) is b


def test_round_moves_the_model_and_the_state_round_trips() -> None:
    model, learner, ctx = _world()
    rule = REGISTRY.create("rule", "rombrl", grad_mode=2, **SMALL)
    before = [p.detach().clone() for p in model.model_parameters()]
    actor_before = [p.detach().clone() for p in learner.actor.parameters()]
    metrics = rule.update(ctx)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.model_parameters(), strict=True))
    assert any(not torch.equal(a, p) for a, p in zip(actor_before, learner.actor.parameters(), strict=True))
    assert len(metrics["rombrl/implicit_ratio_steps"]) == metrics["rombrl/leader_steps"] == 2
    assert metrics["rombrl/implicit_ratio_steps"][0] > 0 and metrics["rombrl/implicit_ratio_steps"][1] == 0
    assert metrics["rombrl/follower_steps"] == math.ceil(6 * 5 / 8)
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    state = rule.state_dict()
    assert state["follower_optimizer"]["state"]  # Adam moments persist across rounds
    fresh = REGISTRY.create("rule", "rombrl", grad_mode=2, **SMALL)
    fresh.load_state_dict(state)
    fresh.before_training(ctx)
    loaded = fresh._follower_opt.state_dict()["state"]
    for key, value in state["follower_optimizer"]["state"].items():
        torch.testing.assert_close(loaded[key]["exp_avg"], value["exp_avg"])


def test_switches_gate_sac_actor_steps_and_measure_the_mle_ratio_budget() -> None:
    model, learner, ctx = _world()
    rule = REGISTRY.create("rule", "rombrl", sac_actor_updates=False, budget_ref="mle_ratio", dual_ascent=True,
                           lambda_lr=10.0, **SMALL)
    rule.before_training(ctx)
    actor = [p.detach().clone() for p in learner.actor.parameters()]
    g = torch.Generator().manual_seed(0)
    b = Batch(obs=torch.randn(8, 3, generator=g, dtype=D64), act=torch.zeros(8, 1, dtype=D64),
              reward=torch.zeros(8, 1, dtype=D64), next_obs=torch.randn(8, 3, generator=g, dtype=D64),
              terminal=torch.zeros(8, 1, dtype=D64), is_model=torch.zeros(8, 1, dtype=D64))
    learner.log_alpha.data = learner.log_alpha.data.double()
    learner._alpha = learner._alpha.double()
    learner.update(b)
    assert all(torch.equal(a, p) for a, p in zip(actor, learner.actor.parameters(), strict=True))  # gated
    # before any round the model equals its reference: C = E[log P_φ̄ − log P_φ] − ε = −ε, λ ← λ + lr·C
    assert rule._dual_ascent(ctx) == pytest.approx(rule.cfg.sl_weight - 10.0 * rule.cfg.epsilon)
    rule.update(ctx)
    assert any(not torch.equal(a, p) for a, p in zip(actor, learner.actor.parameters(), strict=True))  # leader
    assert rule.lam == pytest.approx(rule.cfg.sl_weight - 10.0 * rule.cfg.epsilon)
    assert rule.state_dict()["reference_model"] is not None


def test_config_errors_name_the_key() -> None:
    for bad, match in ((dict(grad_mode=4), "grad_mode"), (dict(damping=0.0), "damping"),
                       (dict(hessian="dense"), "hessian"), (dict(per_sample_grads="jax"), "per_sample_grads"),
                       (dict(leader_objective="trpo"), "leader_objective")):
        with pytest.raises(ValueError, match=match):
            REGISTRY.create("rule", "rombrl", **bad)
    REGISTRY.create("rule", "rombrl", hessian="exact", damping=0.0)  # exact needs no damping


# ---------------------------------------------------------------------------------------------------------------------
# Slow tier: the recipe on pendulum-medium under the quick preset (configs/presets/quick.toml, what the no-argument
# `zoo bench` runs): small networks, Pendulum's beta = 0.25, 1000 x 5 critic rollouts, two Stackelberg rounds
# (rule.every = 2000) shrunk to N x H = 50 x 20, 4 leader epochs, 2 follower epochs, h = 5, m = 4, 64 real rows.
# A hand-made budget with beta = 1 and five rounds reached +20 on the collection protocol 1 data but 14 and 17 (grad
# modes 1 and 2, seed 0) on protocol 2's, whose medium policy is better; the preset scores 61 and 31 (seeds 0, 1).


@pytest.fixture(scope="module")
def rombrl_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One results folder for both modes: the second run reuses the first one's pretrained model."""
    return tmp_path_factory.mktemp("rombrl_runs")


@pytest.mark.slow
@pytest.mark.parametrize("grad_mode", [1, 2])
def test_rombrl_trains_on_pendulum_medium(grad_mode: int, quick_data_dir: Path, rombrl_out: Path) -> None:
    from zoo.bench.presets import load_bench_preset
    from zoo.engine.run import train_run
    from zoo.tasks.references import PENDULUM_RANDOM_RETURN, normalized_score

    layer = load_bench_preset("quick").layer("rombrl")
    result = train_run(
        "rombrl", "pendulum-medium", seed=0, out=rombrl_out, preset=layer, overrides=[f"rule.grad_mode={grad_mode}"],
        suite="quick", progress=False,
    )
    assert np.isfinite(result["score"])
    assert result["score"] > float(normalized_score("pendulum-medium", PENDULUM_RANDOM_RETURN)) + 20.0, result
    run_dir = Path(glob.glob(str(rombrl_out / "runs" / "**" / result["config_hash"] / "seed0"), recursive=True)[0])
    adapted = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    pretrained = torch.load(rombrl_out / "cache" / "dynamics" / result["pretrain_key"] / "model.pt",
                            map_location="cpu", weights_only=False)["model"]
    moved = [k for k in pretrained if k.endswith(("weight", "bias", "logvar")) and "saved" not in k
             and not torch.equal(pretrained[k], adapted[k])]
    assert moved, "the follower never changed the model"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in records if r["kind"] == "rule"]
    assert len(rounds) == layer["steps"] // layer["rule"]["every"] == 2
    assert all(np.isfinite(r["rombrl/follower_loss"]) for r in rounds)
    sizes = [x for r in rounds for x in r["rombrl/implicit_ratio_steps"]]
    if grad_mode == 1:
        assert all(x == 0.0 for x in sizes)
    else:
        assert all(r["rombrl/implicit_ratio"] > 0.0 for r in rounds)
