"""The ``td3bc`` learner (Fujimoto & Gu 2021): the actor loss against a direct computation, the target with
smoothing, the delayed actor, and behaviour cloning at α = 0."""

from __future__ import annotations

import pytest
import torch

from zoo.learners.td3bc import TD3BC
from zoo.protocols import Batch, EnvSpec
from zoo.registry import REGISTRY

SPEC = EnvSpec(obs_dim=3, act_dim=2, act_low=-1.5, act_high=1.5)


def make(**cfg: object) -> TD3BC:
    torch.manual_seed(0)
    return REGISTRY.create("learner", "td3bc", SPEC, "cpu", hidden=[16, 16], **cfg)


def make_batch(n: int = 8, n_real: int = 3, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, SPEC.obs_dim, generator=g),
        act=(torch.rand(n, SPEC.act_dim, generator=g) * 2 - 1) * 1.5,
        reward=torch.randn(n, 1, generator=g),
        next_obs=torch.randn(n, SPEC.obs_dim, generator=g),
        terminal=(torch.rand(n, 1, generator=g) < 0.3).float(),
        is_model=torch.cat([torch.zeros(n_real, 1), torch.ones(n - n_real, 1)]),
    )


@pytest.mark.parametrize("bc_rows", ["real", "all"])
def test_actor_loss_matches_a_direct_computation(bc_rows: str) -> None:
    learner = make(bc_alpha=2.5, bc_rows=bc_rows)
    batch = make_batch()
    loss, bc = (v[0] for v in learner.actor_loss(Batch.stack([batch])))  # per run; a single run is P = 1
    with torch.no_grad():
        q1, sq = [], []
        for i in range(len(batch)):
            s = batch.obs[i : i + 1]
            pi = 1.5 * torch.tanh(learner.actor.net(s))  # a = a_max · tanh(μ(s))
            q1.append(float(learner.critic(s, pi)[0, 0, 0]))  # the first critic only
            sq.append(float(((pi - batch.act[i : i + 1]) ** 2).mean()))
        lam = 2.5 / (sum(abs(v) for v in q1) / len(q1))
        rows = range(3) if bc_rows == "real" else range(len(batch))  # the first 3 rows are real
        expected_bc = sum(sq[i] for i in rows) / len(rows)
        expected = -lam * sum(q1) / len(q1) + expected_bc
    assert float(bc.detach()) == pytest.approx(expected_bc, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert loss.requires_grad


def test_target_is_the_clipped_double_q_at_the_smoothed_target_action() -> None:
    learner = make(policy_noise=0.0, gamma=0.9)
    batch = make_batch()
    y, penalty = learner.critic_target_value(batch)
    with torch.no_grad():
        a_next = learner.actor_target(batch.next_obs)
        v = learner.critic_target(batch.next_obs, a_next).amin(0)
    torch.testing.assert_close(y, batch.reward + 0.9 * (1 - batch.terminal) * v)
    assert penalty is None
    noisy = make(policy_noise=10.0, noise_clip=0.1)
    y1, _ = noisy.critic_target_value(batch)
    y2, _ = noisy.critic_target_value(batch)
    assert not torch.equal(y1, y2)  # smoothing noise, clipped to ±0.15 before the action clamp
    # a target-stage penalty is subtracted from the reward inside the target
    y_pen, pen = learner.critic_target_value(batch, lambda b, lrn: torch.full_like(b.reward, 0.5))
    torch.testing.assert_close(y_pen, y - 0.5)


def test_the_actor_and_the_targets_move_every_policy_freq_steps() -> None:
    learner = make(policy_freq=2)
    batch = make_batch()
    actor0 = [p.detach().clone() for p in learner.actor.parameters()]
    target0 = [p.detach().clone() for p in learner.critic_target.parameters()]
    learner.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(actor0, learner.actor.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(target0, learner.critic_target.parameters(), strict=True))
    metrics = learner.update(batch)
    assert not all(torch.equal(a, b) for a, b in zip(actor0, learner.actor.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(target0, learner.critic_target.parameters(), strict=True))
    assert float(metrics["bc_loss"]) > 0 and learner.updates == 2


def test_without_the_q_term_it_clones_the_behaviour() -> None:
    """α = 0 leaves only (π(s) − a)²: the deterministic policy fits the data's actions."""
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(128, 3, generator=g)
    act = 1.5 * torch.tanh(obs[:, :2] - 0.5 * obs[:, 2:])
    batch = Batch(obs, act, torch.zeros(128, 1), obs, torch.zeros(128, 1), torch.zeros(128, 1))
    learner = make(bc_alpha=0.0, policy_freq=1, actor_lr=3e-3)
    for _ in range(400):
        learner.update(batch)
    with torch.no_grad():
        err = (learner.act(obs, deterministic=True)[0] - act).square().mean()
    assert float(err) < 0.01


def test_acting_policy_has_a_density_and_explores() -> None:
    learner = make(explore_std=0.3)
    obs = make_batch().obs
    a, u, logp = learner.act(obs)
    det, u_det, _ = learner.act(obs, deterministic=True)
    assert not torch.equal(a, det) and (a.abs() <= 1.5).all()
    torch.testing.assert_close(learner.log_prob(obs, u), logp)
    torch.testing.assert_close(det, learner.actor(obs))
