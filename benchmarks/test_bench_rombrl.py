"""ROMBRL's Stackelberg round at the spec's sizes (rombrl.md §7; hopper-like obs 11 / act 3): 7×(4×200) ensemble
(p ≈ 9.0e5 model parameters), 256×256 actor, N × H = 250 × 100 on-policy rollout, h = 10, m = 8, 256 real rows.

Run: ``pytest benchmarks/test_bench_rombrl.py --benchmark-only``. The pieces:

- ``test_leader_step[1]`` / ``[2]``: one leader step, Eq. (7) alone vs Eq. (8) (the implicit term: m + 2m + m·h
  gradient rows, the Woodbury chain, one extra actor VJP). Their ratio is the cost of one implicit step.
- ``test_follower_epoch``: one follower epoch over the 25,000 rollout transitions (98 Adam steps).
- ``test_round[1]`` / ``[2]``: a round with the full rollout, 2 leader epochs (mode 2: one implicit, one plain) and
  one follower epoch — "one leader step + follower epoch" plus the rollout. A full default round is the rollout,
  10 leader steps (5 implicit in mode 2) and 10 follower epochs; its time follows from the pieces.
- ``test_per_sample_grads[…]``: the m·h = 80 single-sample model gradients of Z in the three modes of
  :mod:`zoo.rules.rombrl_scores` (structured is the default; loop is the official code's layout).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data.transitions import Transitions
from zoo.dynamics.ensemble import GaussianEnsemble
from zoo.learners.sac import SAC
from zoo.protocols import Context, EnvSpec
from zoo.rules.rombrl import RombrlRule
from zoo.rules.rombrl_scores import ModelScores

SPEC = EnvSpec(obs_dim=11, act_dim=3)


def _data(n: int = 20_000) -> Transitions:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, SPEC.obs_dim))
    act = rng.uniform(-1, 1, size=(n, SPEC.act_dim))
    return Transitions.from_numpy(
        obs=obs,
        act=act,
        reward=rng.normal(size=n),
        next_obs=obs + 0.05 * rng.normal(size=obs.shape),
        terminal=np.zeros(n),
        timeout=np.zeros(n),
    )


@pytest.fixture(scope="module")
def world() -> dict:
    torch.manual_seed(0)
    model = GaussianEnsemble(GaussianEnsemble.Config(), SPEC)  # 7 members, 5 elites, 4×200 (dynamics.md §3)
    data = _data()
    model.fit_scaler(torch.cat([data.obs, data.act], -1))
    learner = SAC(SAC.Config(), SPEC)
    ctx = Context(
        data=data,
        model=model,
        learner=learner,
        termination=lambda o, a, o2: torch.zeros(o.shape[0], 1),
        normalizer=None,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        step=0,
        spec=SPEC,
    )
    rule = RombrlRule(RombrlRule.Config(grad_mode=2))
    traj = rule.collect(ctx)
    return {"model": model, "learner": learner, "ctx": ctx, "traj": traj}


def _rule(grad_mode: int, **cfg: object) -> RombrlRule:
    return RombrlRule(RombrlRule.Config(grad_mode=grad_mode, **cfg))


@pytest.mark.parametrize("grad_mode", [1, 2])
def test_leader_step(benchmark, world: dict, grad_mode: int) -> None:
    rule, ctx, traj = _rule(grad_mode), world["ctx"], world["traj"]
    rule.before_training(ctx)
    idx = torch.arange(traj.num)
    params = [p for p in ctx.learner.actor.parameters() if p.requires_grad]

    def step() -> float:
        out = rule.leader_direction(traj, idx, ctx, implicit=grad_mode > 1)
        rule._actor_step(ctx.learner, params, out.direction)
        return out.implicit_ratio

    ratio = benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["model_params"] = rule._scores.num_params
    benchmark.extra_info["implicit_ratio"] = ratio
    assert (ratio > 0) == (grad_mode > 1)


def test_follower_epoch(benchmark, world: dict) -> None:
    rule, ctx = _rule(1, follower_epochs=1), world["ctx"]
    rule.before_training(ctx)
    out = benchmark.pedantic(lambda: rule.follower(world["traj"], ctx), rounds=2, iterations=1)
    assert out["rombrl/follower_steps"] == 98


@pytest.mark.parametrize("grad_mode", [1, 2])
def test_round(benchmark, world: dict, grad_mode: int) -> None:
    rule, ctx = _rule(grad_mode, actor_epochs=2, follower_epochs=1), world["ctx"]
    rule.before_training(ctx)
    out = benchmark.pedantic(lambda: rule.update(ctx), rounds=2, iterations=1)
    for key in ("rombrl/time_rollout", "rombrl/time_leader", "rombrl/time_follower"):
        benchmark.extra_info[key] = out[key]
    assert out["rombrl/leader_steps"] == 2


@pytest.mark.parametrize("mode", ["structured", "vmap", "loop"])
def test_per_sample_grads(benchmark, world: dict, mode: str) -> None:
    scores = ModelScores(world["model"], mode)
    traj = world["traj"]
    obs, act = traj.obs[:10, :8].reshape(80, -1), traj.act[:10, :8].reshape(80, -1)
    y, k = traj.sample[:10, :8].reshape(80, -1), traj.member[:10, :8].reshape(80)
    rows = benchmark.pedantic(lambda: scores.per_sample_grads(obs, act, y, k), rounds=3, iterations=1, warmup_rounds=1)
    assert rows.shape == (80, scores.num_params)
