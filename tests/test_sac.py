"""SAC learner: exact checks of sac.md §1, §2, §4 and a small learning test."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import zoo
from zoo.learners.networks import TANH_EPS, CriticEnsemble, TanhGaussianActor
from zoo.learners.sac import SAC
from zoo.protocols import Batch, EnvSpec, Learner

SPEC = EnvSpec(obs_dim=4, act_dim=2, act_low=-2.0, act_high=2.0)


def make(spec: EnvSpec = SPEC, **cfg: object) -> SAC:
    cfg.setdefault("hidden", [16, 16])
    return zoo.create("learner", "sac", spec, "cpu", **cfg)


def make_batch(b: int = 8, spec: EnvSpec = SPEC, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(b, spec.obs_dim, generator=g),
        act=(torch.rand(b, spec.act_dim, generator=g) * 2 - 1) * spec.act_high,
        reward=torch.randn(b, 1, generator=g),
        next_obs=torch.randn(b, spec.obs_dim, generator=g),
        terminal=(torch.rand(b, 1, generator=g) < 0.3).float(),
        is_model=torch.ones(b, 1),
    )


def constant_targets(learner: SAC, values: list[float]) -> None:
    """Make target critic j output values[j] everywhere (zero weights, last bias = value)."""
    with torch.no_grad():
        for layer in learner.critic_target.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        learner.critic_target.layers[-1].bias.copy_(torch.tensor(values).view(-1, 1, 1))


def test_protocol_and_registry() -> None:
    learner = make(num_critics=3)
    assert isinstance(learner, Learner)
    assert isinstance(learner, SAC) and learner.cfg.num_critics == 3
    with pytest.raises(Exception, match="valid keys"):
        make(no_such_key=1)


def test_tanh_log_prob_matches_direct_computation() -> None:
    learner = make()
    obs = torch.randn(5, SPEC.obs_dim)
    g = torch.Generator().manual_seed(3)
    a, u, logp = learner.act(obs, generator=g)
    mu, log_std = learner.actor(obs)
    normal = torch.distributions.Normal(mu, log_std.exp())
    expected = normal.log_prob(u).sum(-1, keepdim=True) - torch.log(2.0 * (1 - torch.tanh(u) ** 2) + TANH_EPS).sum(
        -1, keepdim=True
    )
    assert a.shape == (5, 2) and logp.shape == (5, 1)
    torch.testing.assert_close(a, 2.0 * torch.tanh(u))
    torch.testing.assert_close(logp, expected)
    torch.testing.assert_close(learner.log_prob(obs, u), expected)
    # deterministic action = a_max tanh(μ)
    a_det, u_det, _ = learner.act(obs, deterministic=True)
    torch.testing.assert_close(u_det, mu)
    torch.testing.assert_close(a_det, 2.0 * torch.tanh(mu))
    # log_prob is differentiable in the actor's parameters
    learner.log_prob(obs, u.detach()).sum().backward()
    assert all(p.grad is not None for p in learner.actor.parameters())


def test_tanh_log_prob_is_the_density_of_the_squashed_action() -> None:
    """1-D: exp(log π(a)) equals dP(A ≤ a)/da with P(A ≤ a) = Φ((atanh(a/a_max) − μ)/σ)."""
    torch.set_default_dtype(torch.float64)
    try:
        actor = TanhGaussianActor(1, 1, [], act_scale=2.0)
        with torch.no_grad():
            actor.mu.weight.zero_()
            actor.mu.bias.fill_(0.3)
            actor.log_std.weight.zero_()
            actor.log_std.bias.fill_(math.log(0.7))
        mu, sigma = 0.3, 0.7
        normal = torch.distributions.Normal(mu, sigma)
        a = torch.tensor([-1.5, -0.5, 0.0, 0.4, 1.2, 1.8])
        h = 1e-5

        def cdf(x: torch.Tensor) -> torch.Tensor:
            return normal.cdf(torch.atanh(x / 2.0))

        numeric = (cdf(a + h) - cdf(a - h)) / (2 * h)
        u = actor.pre_tanh(a).unsqueeze(-1)
        logp = actor.log_prob(torch.zeros(6, 1), u).squeeze(-1)
        torch.testing.assert_close(logp.exp(), numeric, rtol=1e-4, atol=1e-6)
    finally:
        torch.set_default_dtype(torch.float32)


def test_q_shapes_and_gradients_for_target_critics() -> None:
    learner = make(num_critics=3)
    obs = torch.randn(7, SPEC.obs_dim, requires_grad=True)
    act = torch.randn(7, SPEC.act_dim, requires_grad=True)
    for target in (False, True):
        q = learner.q(obs, act, target=target)
        assert q.shape == (3, 7, 1)
        go, ga = torch.autograd.grad(q.sum(), (obs, act))
        assert go.abs().sum() > 0 and ga.abs().sum() > 0
    # any leading batch shape
    assert learner.q(torch.randn(5, 2, 7, 4), torch.randn(5, 2, 7, 2), target=True).shape == (3, 5, 2, 7, 1)
    v = learner.value(obs)
    a_det, _, _ = learner.act(obs, deterministic=True)
    torch.testing.assert_close(v, learner.q(obs, a_det).amin(0))
    assert learner.value(obs, target=True, action="sample").shape == (7, 1)


def test_batched_critics_equal_separate_linear_mlps() -> None:
    torch.manual_seed(0)
    n, hidden = 3, [8, 8]
    ens = CriticEnsemble(4, 2, hidden, n, init="linear")
    sizes = [6, *hidden, 1]
    mlps = [nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)) for _ in range(n)]
    with torch.no_grad():
        for j, mlp in enumerate(mlps):
            linears = [m for m in mlp if isinstance(m, nn.Linear)]
            for layer, lin in zip(ens.layers, linears, strict=True):
                layer.weight[j].copy_(lin.weight.T)
                layer.bias[j, 0].copy_(lin.bias)
    obs, act = torch.randn(10, 4), torch.randn(10, 2)
    expected = torch.stack([mlp(torch.cat([obs, act], -1)) for mlp in mlps])
    torch.testing.assert_close(ens(obs, act), expected)
    # nn.Linear-style init: weights and biases within ±1/sqrt(fan_in)
    for layer, fan_in in zip(ens.layers, sizes[:-1], strict=True):
        bound = 1 / math.sqrt(fan_in)
        assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound


def test_polyak_arithmetic_and_targets_start_as_copies() -> None:
    learner = make(tau=0.1)
    for p, pt in zip(learner.critic.parameters(), learner.critic_target.parameters(), strict=True):
        assert torch.equal(p, pt) and not pt.requires_grad
    old_target = [p.clone() for p in learner.critic_target.parameters()]
    learner.update(make_batch())
    for p, pt, old in zip(learner.critic.parameters(), learner.critic_target.parameters(), old_target, strict=True):
        torch.testing.assert_close(pt, 0.9 * old + 0.1 * p.detach(), rtol=0, atol=1e-7)
        assert not torch.equal(pt, old)


def test_alpha_clamp_and_fixed_alpha() -> None:
    learner = make()
    assert float(learner.alpha) == 1.0  # log α = 0
    with torch.no_grad():
        learner.log_alpha.fill_(0.5)
    learner.update(make_batch())
    assert float(learner.alpha) == 1.0  # clamped at alpha_max = 1
    assert abs(float(learner.log_alpha.detach()) - 0.5) < 1e-3  # log α itself is not clamped

    free = make(alpha_max=math.inf)
    with torch.no_grad():
        free.log_alpha.fill_(0.5)
    free.update(make_batch())
    torch.testing.assert_close(free.alpha, free.log_alpha.detach().exp()[0])  # log α is [P], P = 1
    assert float(free.alpha) > 1.6

    fixed = make(auto_alpha=False, alpha=0.2)
    m = fixed.update(make_batch())
    assert float(m["alpha"]) == pytest.approx(0.2) and float(fixed.alpha) == pytest.approx(0.2)
    assert float(fixed.log_alpha.detach()) == 0.0


def test_target_entropy_default_and_alpha_step_direction() -> None:
    learner = make(alpha_max=math.inf, alpha_lr=1e-2)
    assert learner.target_entropy == -2.0
    batch = make_batch()
    _, _, logp = learner.act(batch.obs)
    learner.update(batch)
    # L_α = −log α (log π + H): log α moves with the sign of log π + H (down while entropy is above target)
    direction = torch.sign(logp.detach().mean() + learner.target_entropy)
    assert torch.sign(learner.log_alpha.detach()) == direction
    assert make(target_entropy=-3.0).target_entropy == -3.0


def _hand_target(
    learner: SAC, batch: Batch, c: list[float], seed: int, deterministic: bool, penalty: float = 0.0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    _, _, logp = learner.act(batch.next_obs, generator=g)
    v = torch.full_like(batch.reward, min(c))
    if not deterministic:
        v = v - learner.alpha * logp
    return batch.reward - penalty + learner.cfg.gamma * (1 - batch.terminal) * v


@pytest.mark.parametrize("deterministic", [False, True])
def test_critic_target_by_hand(deterministic: bool) -> None:
    c = [1.5, -0.5]
    learner = make(deterministic_backup=deterministic, gamma=0.9)
    constant_targets(learner, c)
    batch = make_batch(b=6)
    with torch.no_grad():
        learner.generator = torch.Generator().manual_seed(11)
        y, pen = learner.critic_target_value(batch)
        expected = _hand_target(learner, batch, c, 11, deterministic)
    assert pen is None
    torch.testing.assert_close(y, expected)
    if deterministic:  # fully hand-computable: r + γ(1−d)·min_j c_j
        torch.testing.assert_close(y, batch.reward + 0.9 * (1 - batch.terminal) * -0.5)


def test_target_min_and_target_penalty() -> None:
    c = [-3.0, -2.0]
    batch = make_batch(b=6).replace(reward=torch.tensor([[-1.0], [0.5], [2.0], [-0.2], [0.0], [1.0]]))
    clamp = make(deterministic_backup=True, target_min=0.0)
    constant_targets(clamp, c)
    y, _ = clamp.critic_target_value(batch)
    raw = batch.reward + 0.99 * (1 - batch.terminal) * -3.0
    torch.testing.assert_close(y, raw.clamp_min(0.0))
    assert (raw < 0).any() and (raw > 0).any()

    pen = make(deterministic_backup=True)
    constant_targets(pen, c)
    calls: list[int] = []

    def penalty(b: Batch, learner: SAC) -> torch.Tensor:
        calls.append(len(b))
        assert learner is pen and not torch.is_grad_enabled()
        return 0.25 * b.is_model

    y_pen, p = pen.critic_target_value(batch, penalty)
    torch.testing.assert_close(y_pen, raw - 0.25)
    assert calls == [6] and p is not None
    metrics = pen.update(batch, target_penalty=penalty)
    torch.testing.assert_close(metrics["penalty_mean"], torch.tensor(0.25))


def test_max_q_backup() -> None:
    learner = make(max_q_backup=True, gamma=0.5)
    constant_targets(learner, [2.0, 1.0])
    batch = make_batch(b=5)
    y, _ = learner.critic_target_value(batch)
    torch.testing.assert_close(y, batch.reward + 0.5 * (1 - batch.terminal) * 1.0)  # no entropy term
    # with real critics: max over 10 sampled actions per critic, then min over critics
    learner = make(max_q_backup=True)
    learner.generator = torch.Generator().manual_seed(0)
    y, _ = learner.critic_target_value(batch)
    g = torch.Generator().manual_seed(0)
    rep = batch.next_obs.unsqueeze(0).expand(10, 5, 4)
    a, _, _ = learner.act(rep, generator=g)
    q = torch.stack([learner.q(rep[m], a[m], target=True) for m in range(10)], 1)  # [N, 10, B, 1]
    v = q.amax(1).amin(0)
    torch.testing.assert_close(y, batch.reward + 0.99 * (1 - batch.terminal) * v.detach())


def test_update_metrics_are_detached_scalars_on_device() -> None:
    learner = make()
    metrics = learner.update(make_batch())
    assert set(metrics) == {"critic_loss", "actor_loss", "alpha", "q_mean", "q_max", "log_pi"}
    for v in metrics.values():
        assert isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
        assert v.device == learner.device


def test_critic_loss_is_sum_of_batch_means() -> None:
    learner = make(num_critics=3)
    batch = make_batch()
    learner.generator = torch.Generator().manual_seed(5)
    y, _ = learner.critic_target_value(batch)
    q = learner.q(batch.obs, batch.act).detach()
    expected = sum(((q[j] - y) ** 2).mean() for j in range(3))
    learner.generator = torch.Generator().manual_seed(5)
    metrics = learner.update(batch)
    torch.testing.assert_close(metrics["critic_loss"], expected)


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_cosine_schedule() -> None:
    learner = make(actor_schedule="cosine", actor_lr=1e-3)
    assert learner.actor_scheduler is None
    learner.set_total_epochs(10)
    assert learner.actor_scheduler is not None
    for e in range(13):
        expected = 1e-3 * 0.5 * (1 + math.cos(math.pi * min(e, 10) / 10))
        assert learner.actor_optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12)
        learner.epoch_end()
    assert learner.critic_optimizer.param_groups[0]["lr"] == 3e-4  # the actor only
    plain = make()
    plain.set_total_epochs(10)
    plain.epoch_end()
    assert plain.actor_scheduler is None and plain.actor_optimizer.param_groups[0]["lr"] == 1e-4


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_state_dict_round_trip() -> None:
    a = make(actor_schedule="cosine")
    a.set_total_epochs(5)
    for seed in range(3):
        a.update(make_batch(seed=seed))
    a.epoch_end()
    a.epoch_end()
    state = a.state_dict()
    b = make(actor_schedule="cosine")
    b.load_state_dict(state)
    for k in ("actor", "critic", "critic_target"):
        sa, sb = getattr(a, k).state_dict(), getattr(b, k).state_dict()
        assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert torch.equal(a.log_alpha, b.log_alpha) and torch.equal(a.alpha, b.alpha)
    assert b.actor_optimizer.param_groups[0]["lr"] == a.actor_optimizer.param_groups[0]["lr"]
    a.epoch_end()
    b.epoch_end()
    assert b.actor_optimizer.param_groups[0]["lr"] == pytest.approx(a.actor_optimizer.param_groups[0]["lr"])
    batch = make_batch(seed=9)
    a.generator, b.generator = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ma, mb = a.update(batch), b.update(batch)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_same_seed_same_metrics() -> None:
    def run() -> list[dict[str, torch.Tensor]]:
        torch.manual_seed(123)
        learner = make()
        return [learner.update(make_batch(seed=s)) for s in range(5)]

    r1, r2 = run(), run()
    for m1, m2 in zip(r1, r2, strict=True):
        assert all(torch.equal(m1[k], m2[k]) for k in m1)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny networks run faster on one thread, and do not stall when other processes share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.usefixtures("one_thread")
def test_bandit_actor_learns_the_best_action() -> None:
    """One state, reward −(a − 0.5)², every row terminal: Q → r, the actor's mode → a ≈ 0.5."""
    torch.manual_seed(0)
    spec = EnvSpec(obs_dim=1, act_dim=1)
    learner = make(spec, hidden=[32, 32], actor_lr=1e-2, critic_lr=1e-2, auto_alpha=False, alpha=0.01)
    g = torch.Generator().manual_seed(0)
    obs = torch.ones(64, 1)
    for _ in range(300):
        act = torch.rand(64, 1, generator=g) * 2 - 1
        learner.update(Batch(obs, act, -((act - 0.5) ** 2), obs, torch.ones(64, 1), torch.ones(64, 1)))
    with torch.no_grad():
        a_det, _, _ = learner.act(obs[:1], deterministic=True)
        grid = torch.linspace(-1, 1, 21).view(-1, 1)
        q = learner.q(torch.ones(21, 1), grid).mean(0)
    assert abs(float(a_det) - 0.5) < 0.1
    assert (q + (grid - 0.5) ** 2).abs().max() < 0.1
