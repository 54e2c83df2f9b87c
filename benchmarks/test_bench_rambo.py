"""One RAMBO adversarial model phase at the spec's sizes (rambo.md §3, §5).

A hopper-shaped problem (obs 11, act 3): the 7-member 4×200 ensemble, SAC with 2 critics of 256×256, batch 256,
horizon 5. ``ADV_STEPS`` model steps per timed phase: the spec's phase is 1000 steps; on a 2-core CPU that is
minutes per round, so the benchmark times 100 steps (set ``ZOO_BENCH_RAMBO_STEPS=1000`` for the full phase; the
cost is linear in the number of steps, every step being the same work). Each step: one supervised forward pass,
one sampling pass and one mixture log-density pass of the ensemble on 256 rows, the actor at s and s', four critic
evaluations, one backward pass and one Adam step over the model.

Run: ``python -m pytest benchmarks/test_bench_rambo.py --benchmark-only``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import zoo
from zoo.data.transitions import Transitions
from zoo.protocols import Context, EnvSpec

SPEC = EnvSpec(obs_dim=11, act_dim=3)
ROWS = 20_000
ADV_STEPS = int(os.environ.get("ZOO_BENCH_RAMBO_STEPS", "100"))


def _data(device: torch.device) -> Transitions:
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 0.1, size=(ROWS, SPEC.obs_dim))
    obs[:, 0] += 1.25
    act = rng.uniform(-1, 1, size=(ROWS, SPEC.act_dim))
    nxt = obs + 0.01 * rng.normal(size=(ROWS, SPEC.obs_dim))
    data = Transitions.from_numpy(
        obs=obs,
        act=act,
        reward=rng.normal(1, 0.1, ROWS),
        next_obs=nxt,
        terminal=np.zeros(ROWS),
        timeout=np.zeros(ROWS),
    )
    return data.to(device)


def _setup(device: torch.device) -> tuple[object, Context]:
    torch.manual_seed(0)
    data = _data(device)
    model = zoo.create("dynamics", "gaussian_ensemble", SPEC, device, lr=3e-4, logvar_coef=0.001)
    with torch.no_grad():  # a scaler as after pretraining; the weights stay at their initialisation
        model.fit_scaler(torch.cat([data.obs, data.act], dim=-1))
    learner = zoo.create("learner", "sac", SPEC, device)
    from zoo.dynamics.termination import get_termination

    ctx = Context(
        data=data,
        model=model,
        learner=learner,
        termination=get_termination("hopper"),
        normalizer=None,
        device=device,
        generator=torch.Generator(device=device).manual_seed(0),
        spec=SPEC,
    )
    rule = zoo.create("rule", "rambo", adv_steps=ADV_STEPS, horizon=5, bc_epochs=0)
    rule.update(ctx)  # warm-up: optimizer state, allocator
    return rule, ctx


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))],
)
def test_rambo_phase(benchmark, device: str) -> None:
    rule, ctx = _setup(torch.device(device))

    def phase() -> dict:
        metrics = rule.update(ctx)
        return {k: v for k, v in metrics.items() if k == "rambo/loss"}

    out = benchmark.pedantic(phase, rounds=3, iterations=1, warmup_rounds=0)
    assert torch.isfinite(out["rambo/loss"])
    benchmark.extra_info["adv_steps"] = ADV_STEPS
    benchmark.extra_info["ms_per_step"] = 1000.0 * benchmark.stats.stats.mean / ADV_STEPS
