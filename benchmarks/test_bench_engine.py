"""MOPO epoch and model rollout through the real trainer (issue: engine speed bar).

A MOPO epoch = 1000 SAC steps on mixed 12 real + 244 model batches plus one 50,000 × 5 model rollout
with the aleatoric penalty, at the default MOPO sizes (obs 11, act 3, 2 critics of 256×256, a 7-member
4×200 ensemble), no evaluation and no pretraining. Only figures measured in this session are printed (the peer
kit's ~34 s on another 2-core CPU is no ratio's denominator: DESIGN.md, Performance rules).
Run: ``python -m pytest benchmarks/test_bench_engine.py --benchmark-only``.

``test_bench_rollout_matmul_floor`` times the rollout's matrix products alone (with
``test_bench_sac.py::test_sac_matmul_floor`` for the SAC step): the epoch cannot be faster than the two floors
together on this machine's BLAS.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fixtures import HopperShapedTask, hopper_shaped_rows
from zoo.config import resolve
from zoo.dynamics.ensemble import INFERENCE_CHUNK
from zoo.engine.trainer import Trainer

ROWS = 100_000


def make_trainer(tmp: Path, device: str = "cpu") -> Trainer:
    cfg = resolve(
        "mopo",
        overrides=[
            "steps=1000",
            f'device="{device}"',
            "eval.episodes=0",
            "checkpoint_every=0",
            "dynamics.max_epochs=1",
            "log_every=1000",
        ],
    )
    trainer = Trainer(
        cfg, HopperShapedTask(), tmp / "run", tmp / "cache", progress=False, data=hopper_shaped_rows(ROWS)
    )
    trainer.setup()  # pretraining (one epoch) happens here, outside the timed region
    return trainer


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    torch.manual_seed(0)
    return make_trainer(tmp_path_factory.mktemp("bench"))


def test_bench_rollout_50k_x5(benchmark, trainer: Trainer) -> None:
    stats = benchmark.pedantic(trainer.rollout, rounds=3, iterations=1)
    assert stats["rollout/transitions"] > 50_000


def rollout_matmul_floor(trainer: Trainer) -> None:
    """Only the matrix products of one rollout (policy and every ensemble member, all horizon steps), no
    elementwise work: the BLAS floor that ``trainer.rollout`` is compared with (no branch terminates here)."""
    cfg = trainer.cfg.rollout
    rows = min(cfg.batch, INFERENCE_CHUNK)
    chunks = cfg.batch // rows
    g = torch.Generator().manual_seed(0)
    ens = [(layer.ensemble, layer.in_features, layer.out_features) for layer in trainer.model.layers]
    actor = trainer.learner.actor
    act = [(m.in_features, m.out_features) for m in [*actor.trunk, actor.mu, actor.log_std]]
    ens_ops = [(torch.randn(e, rows, i, generator=g), torch.randn(e, i, o, generator=g)) for e, i, o in ens]
    act_ops = [(torch.randn(cfg.batch, i, generator=g), torch.randn(i, o, generator=g)) for i, o in act]
    for _ in range(cfg.horizon):
        for x, w in act_ops:
            torch.mm(x, w)
        for _ in range(chunks):
            for x, w in ens_ops:
                torch.bmm(x, w)


def test_bench_rollout_matmul_floor(benchmark, trainer: Trainer) -> None:
    benchmark.pedantic(rollout_matmul_floor, args=(trainer,), rounds=3, iterations=1)
    print(f"\nmatrix products of one 50,000 x 5 rollout alone: {benchmark.stats.stats.mean:.2f} s")


def test_bench_mopo_epoch(benchmark, trainer: Trainer) -> None:
    result = benchmark.pedantic(lambda: trainer.train(resume=False), rounds=2, iterations=1)
    assert result["steps"] == 1000
    mean = benchmark.stats.stats.mean
    print(f"\nMOPO epoch (1000 SAC steps + one 50,000 x 5 rollout): {mean:.2f} s")  # measured here; no foreign ratio
