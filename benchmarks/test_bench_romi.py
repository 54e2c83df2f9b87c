"""One ROMI model phase at the spec's sizes (romi.md §3, §6), with the outer gradients computed two ways.

A walker2d-shaped problem (obs 17, act 6; the spec's 0.93M model parameters): the 7-member 4×200 ensemble, SAC with
2 critics of 256×256, w_ν of 256×256, batch 256 in 4 groups, 10 uncertainty samples plus the centre. The spec's
phase is 1000 iterations, which on a 2-core CPU is minutes, so a timed phase runs ``ITERS`` iterations (default 20;
``ZOO_BENCH_ROMI_ITERS=1000`` for the full phase; every iteration is the same work, so the cost is linear).

``outer_grad="vjp"`` is the spec-literal step 6 (one ψ-gradient per group: G backward passes through the critics,
the actor and the model); ``outer_grad="jvp"`` (the default) gets the same r_k from one input-gradient backward
through the value networks and one forward-mode pass through the model. The ratio of the two is the speed claim.

Run: ``python -m pytest benchmarks/test_bench_romi.py --benchmark-only``; ``ZOO_BENCH_THREADS=n`` pins torch's
thread count (one thread avoids OpenMP oversubscription on shared cores).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import zoo
from zoo.data.transitions import Transitions
from zoo.protocols import Context, EnvSpec

SPEC = EnvSpec(obs_dim=17, act_dim=6)
ROWS = 20_000
ITERS = int(os.environ.get("ZOO_BENCH_ROMI_ITERS", "20"))


@pytest.fixture(scope="module", autouse=True)
def threads() -> object:
    before = torch.get_num_threads()
    if os.environ.get("ZOO_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["ZOO_BENCH_THREADS"]))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


def _setup(device: torch.device, **cfg: object) -> tuple[object, Context]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(ROWS, SPEC.obs_dim))
    act = rng.uniform(-1, 1, size=(ROWS, SPEC.act_dim))
    data = Transitions.from_numpy(
        obs=obs,
        act=act,
        reward=rng.normal(1, 0.1, ROWS),
        next_obs=obs + 0.05 * rng.normal(size=obs.shape),
        terminal=np.zeros(ROWS),
        timeout=np.zeros(ROWS),
    ).to(device)
    model = zoo.create("dynamics", "gaussian_ensemble", SPEC, device, lr=3e-4, logvar_coef=0.001)
    with torch.no_grad():  # a scaler as after pretraining; the weights stay at their initialisation
        model.fit_scaler(torch.cat([data.obs, data.act], dim=-1))
    n_params = sum(p.numel() for p in model.model_parameters())
    assert n_params == 928_488  # romi.md §2.6 / dynamics.md §3: the walker2d count
    learner = zoo.create("learner", "sac", SPEC, device)
    ctx = Context(
        data=data,
        model=model,
        learner=learner,
        termination=None,
        normalizer=None,
        device=device,
        generator=torch.Generator(device=device).manual_seed(0),
        spec=SPEC,
    )
    rule = zoo.create("rule", "romi", iterations=ITERS, **cfg)
    rule.before_training(ctx)
    rule.iteration(ctx)  # warm-up: optimizer state, allocator
    return rule, ctx


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("outer_grad", ["jvp", "vjp"])
def test_romi_phase(benchmark, device: str, outer_grad: str) -> None:
    rule, ctx = _setup(torch.device(device), outer_grad=outer_grad)
    out = benchmark.pedantic(lambda: rule.update(ctx), rounds=3, iterations=1, warmup_rounds=0)
    assert torch.isfinite(out["romi/rvl"]) and out["romi/w_std"] > 0
    benchmark.extra_info["iterations"] = ITERS
    benchmark.extra_info["ms_per_iteration"] = 1000.0 * benchmark.stats.stats.mean / ITERS
    benchmark.extra_info["s_per_full_phase"] = 1000 * benchmark.stats.stats.mean / ITERS
