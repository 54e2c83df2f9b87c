"""Online SAC on Pendulum-v1: a short run returns checkpoints and whole episodes; rebuilt policies are deterministic."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from zoo.learners.online import DeterministicPolicy, OnlineRun, evaluate, train_online


@pytest.fixture(scope="module")
def run() -> Iterator[OnlineRun]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is faster and does not stall on shared cores
    try:
        yield train_online(
            "Pendulum-v1",
            steps=650,
            seed=3,
            learner_cfg={"hidden": [32, 32]},
            start_steps=200,
            batch_size=64,
            eval_every=300,
            eval_episodes=2,
            progress=False,
        )
    finally:
        torch.set_num_threads(n)


def test_checkpoints(run: OnlineRun) -> None:
    assert [c.step for c in run.checkpoints] == [300, 600, 650]  # every eval_every, and the last step
    for c in run.checkpoints:
        assert len(c.eval_returns) == 2 and np.isfinite(c.eval_return)
        assert -200 * 16.3 <= c.eval_return <= 0  # Pendulum's reward range over 200 steps
        assert all(v.device.type == "cpu" for v in c.actor_state.values())
    assert run.best() in run.checkpoints and run.steps == 650


def test_episodes_are_whole_and_in_order(run: OnlineRun) -> None:
    assert len(run.episodes) == 4 and run.episode_end_steps == [200, 400, 600, 650]
    total = 0
    for ep, end in zip(run.episodes, run.episode_end_steps, strict=True):
        t = len(ep["actions"])
        total += t
        assert end == total
        assert ep["observations"].shape == (t + 1, 3) and ep["actions"].shape == (t, 1)
        assert ep["rewards"].shape == ep["terminations"].shape == ep["truncations"].shape == (t,)
        assert ep["truncations"][-1] and not ep["truncations"][:-1].any() and not ep["terminations"].any()
        assert np.abs(ep["actions"]).max() <= 2.0
        # observations chain: cos²θ + sin²θ = 1 on every row
        np.testing.assert_allclose(ep["observations"][:, 0] ** 2 + ep["observations"][:, 1] ** 2, 1.0, rtol=1e-5)
    assert total == 650


def test_rebuilt_policy_is_deterministic_and_matches_the_actor(run: OnlineRun) -> None:
    policy = run.policy()
    assert isinstance(policy, DeterministicPolicy) and policy.name == "sac-Pendulum-v1-seed3-step650"
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    a1, a2 = policy.act(obs), policy.act(obs)
    assert a1.shape == (5, 1) and a1.dtype == np.float32 and np.array_equal(a1, a2)
    assert policy.act(obs[0]).shape == (1,)
    assert run.learner is not None
    with torch.no_grad():
        expected, _, _ = run.learner.act(torch.as_tensor(obs), deterministic=True)
    np.testing.assert_allclose(a1, expected.numpy(), rtol=1e-6)
    # an earlier checkpoint is a different policy; its evaluation is reproducible
    first = run.policy(0)
    assert not np.array_equal(first.act(obs), a1)
    r1 = evaluate("Pendulum-v1", first.actor, 2, seed=5)
    r2 = evaluate("Pendulum-v1", first.actor, 2, seed=5)
    assert r1 == r2
