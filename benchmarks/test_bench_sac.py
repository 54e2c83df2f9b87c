"""One SAC update at the MOPO sizes (obs 11, act 3, batch 256, 2 critics of 256×256), sac.md §2.

Run: ``pytest benchmarks/test_bench_sac.py --benchmark-only``. ``test_reference_update`` is the layout this
replaces (OLK style: two separate ``nn.Linear`` critics looped in Python, one Adam each, the actor's loss
back-propagated into the critics' weights), so the ratio of the two is the speed claim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import zoo
from zoo.learners.networks import TanhGaussianActor
from zoo.protocols import Batch, EnvSpec

SPEC = EnvSpec(obs_dim=11, act_dim=3)
B = 256


def _batch(real: int = 12) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(
        obs=torch.randn(B, SPEC.obs_dim, generator=g),
        act=torch.rand(B, SPEC.act_dim, generator=g) * 2 - 1,
        reward=torch.randn(B, 1, generator=g),
        next_obs=torch.randn(B, SPEC.obs_dim, generator=g),
        terminal=torch.zeros(B, 1),
        is_model=torch.cat([torch.zeros(real, 1), torch.ones(B - real, 1)]),
    )


class _ReferenceSAC:
    """The per-critic layout (separate MLPs and optimizers, Python loop over critics), for the ratio."""

    def __init__(self) -> None:
        def mlp() -> nn.Module:
            d = SPEC.obs_dim + SPEC.act_dim
            return nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))

        self.actor = TanhGaussianActor(SPEC.obs_dim, SPEC.act_dim, [256, 256])
        self.critics = [mlp(), mlp()]
        self.targets = [mlp(), mlp()]
        for c, t in zip(self.critics, self.targets, strict=True):
            t.load_state_dict(c.state_dict())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=1e-4)
        self.critic_opts = [torch.optim.Adam(c.parameters(), lr=3e-4) for c in self.critics]
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=1e-4)

    def update(self, b: Batch) -> dict[str, Any]:
        alpha = self.log_alpha.detach().exp().clamp(max=1.0)
        with torch.no_grad():
            a2, _, logp2 = self.actor.sample(b.next_obs)
            x2 = torch.cat([b.next_obs, a2], -1)
            v = torch.min(*[t(x2) for t in self.targets]) - alpha * logp2
            y = b.reward + 0.99 * (1 - b.terminal) * v
        x = torch.cat([b.obs, b.act], -1)
        losses = []
        for c, opt in zip(self.critics, self.critic_opts, strict=True):
            loss = (c(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        a, _, logp = self.actor.sample(b.obs)
        xa = torch.cat([b.obs, a], -1)
        actor_loss = (alpha * logp - torch.min(*[c(xa) for c in self.critics])).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() - SPEC.act_dim)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        with torch.no_grad():
            for c, t in zip(self.critics, self.targets, strict=True):
                for p, pt in zip(c.parameters(), t.parameters(), strict=True):
                    pt.mul_(0.995).add_(p, alpha=0.005)
        return {"critic_loss": sum(losses), "actor_loss": actor_loss.item()}


def test_sac_update(benchmark: Any) -> None:
    torch.manual_seed(0)
    learner = zoo.create("learner", "sac", SPEC, "cpu")
    batch = _batch()
    for _ in range(5):
        learner.update(batch)
    benchmark(learner.update, batch)


def test_reference_update(benchmark: Any) -> None:
    torch.manual_seed(0)
    ref = _ReferenceSAC()
    batch = _batch()
    for _ in range(5):
        ref.update(batch)
    benchmark(ref.update, batch)


@pytest.mark.parametrize("samples", [10])
def test_sac_update_with_mobile(benchmark: Any, samples: int) -> None:
    """The MOBILE step: B·N·|El| = 256·10·5 = 12,800 target-critic rows per update (mobile.md §2)."""
    torch.manual_seed(0)
    learner = zoo.create("learner", "sac", SPEC, "cpu", deterministic_backup=True, target_min=0.0)
    model = zoo.create("dynamics", "gaussian_ensemble", SPEC, "cpu")  # 7 members, 5 elites, 4×200
    ctx = type("Ctx", (), {"model": model, "generator": torch.Generator().manual_seed(0)})()
    penalty = zoo.create("penalty", "mobile", coef=1.0, samples=samples).bind(ctx)
    batch = _batch()
    for _ in range(3):
        learner.update(batch, target_penalty=penalty)
    benchmark(learner.update, batch, penalty)


def sac_matmul_floor(learner: Any, batch_size: int = B) -> Callable[[], None]:
    """Only the matrix products of one SAC update at ``learner``'s layer shapes, on preallocated operands.

    No elementwise work, no autograd, no optimizer: a lower bound for ``learner.update`` on this machine's
    BLAS. The products follow sac.md §2: target (actor and target-critic forwards), critic step (forward,
    weight and hidden-input gradients), actor step (actor and critic forwards, the critics' input gradients
    only, the actor's weight and hidden-input gradients).
    """
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    critic = [(layer.ensemble, layer.in_features, layer.out_features) for layer in learner.critic.layers]
    actor = [(m.in_features, m.out_features) for m in [*learner.actor.trunk, learner.actor.mu, learner.actor.log_std]]
    n = batch_size
    c_ops = [(rand(e, n, i), rand(e, i, o), rand(e, n, o), rand(e, o, i), rand(e, i, n)) for e, i, o in critic]
    a_ops = [(rand(n, i), rand(i, o), rand(n, o), rand(o, i), rand(i, n)) for i, o in actor]

    def critic_forward() -> None:
        for x, w, _, _, _ in c_ops:
            torch.bmm(x, w)

    def critic_backward(weights: bool) -> None:
        for k, (_, _, dy, wt, xt) in enumerate(c_ops):
            if k > 0 or not weights:  # the actor step needs d/d(action) through the first layer too
                torch.bmm(dy, wt)
            if weights:
                torch.bmm(xt, dy)

    def actor_forward() -> None:
        for x, w, _, _, _ in a_ops:
            torch.mm(x, w)

    def actor_backward() -> None:
        for k, (_, _, dy, wt, xt) in enumerate(a_ops):
            if k > 0:
                torch.mm(dy, wt)
            torch.mm(xt, dy)

    def products() -> None:
        actor_forward()
        critic_forward()  # target critics
        critic_forward()
        critic_backward(weights=True)
        actor_forward()
        critic_forward()
        critic_backward(weights=False)
        actor_backward()

    return products


def test_sac_matmul_floor(benchmark: Any) -> None:
    """The BLAS floor of one update (issue 3's speed bar): compare its mean with ``test_sac_update``'s."""
    learner = zoo.create("learner", "sac", SPEC, "cpu")
    products = sac_matmul_floor(learner)
    for _ in range(20):
        products()
    benchmark(products)
    floor = benchmark.stats.stats.mean
    print(f"\nmatrix products of one SAC update alone: {floor * 1e3:.2f} ms (x1000 steps = {floor * 1e3:.1f} s)")
