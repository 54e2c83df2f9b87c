"""Populations against sequential single runs, measured side by side in one session (issue 15 item 7).

Throughput is member-steps per second: P runs × S steps / wall seconds. A *population* trains P seeds of MOPO as
one program (zoo.engine.population); the *sequential* baseline trains the same P single runs one after another,
through the same trainer, in the same process and with the same torch thread count. Both include everything of the
loop except evaluation (eval.episodes = 0): batch draws, learner updates, model rollouts, metric lines and the
final checkpoint; the ensemble pretraining (one epoch, cached per seed) happens in setup, outside the timing.

Sizes, on Hopper-shaped synthetic rows (obs 11, act 3, 20,000 rows):
- ``quick``: the quick preset's networks (SAC 64 × 64, a 7-member 3 × 128 ensemble), batch 256, half real rows,
  1000 × 5 rollouts every 250 steps;
- ``recipe``: MOPO's recipe sizes (SAC 256 × 256, 7-member 4 × 200 ensemble), batch 256 with 5 % real rows, and
  rollouts scaled to the recipe's share of the work (the recipe's 50,000 × 5 per 1000 steps as 10,000 × 5 per
  200 steps).

Run: ``python -m pytest benchmarks/test_bench_population.py --benchmark-only -s`` (``-s`` shows the ratio table;
``ZOO_BENCH_THREADS`` sets torch's threads, default 1). Each sequential benchmark prints the table so far, per size
and P both throughputs and their ratio, from the timings of this session only (the last one prints all of it).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.fixtures import HopperShapedTask, hopper_shaped_rows
from zoo.config import resolve
from zoo.engine.trainer import Trainer

THREADS = int(os.environ.get("ZOO_BENCH_THREADS", "1"))
POPULATIONS = (1, 2, 4, 8)
COMMON = ["eval.episodes=0", "checkpoint_every=0", "diagnostics=false", 'device="cpu"', "dynamics.max_epochs=1"]
SIZES: dict[str, dict[str, Any]] = {
    "quick": {
        "steps": 500,
        "overrides": [
            "learner.hidden=[64, 64]",
            "learner.actor_lr=1e-3",
            "learner.critic_lr=1e-3",
            "dynamics.hidden=[128, 128, 128]",
            "dynamics.weight_decay=[2.5e-5, 5e-5, 7.5e-5, 1e-4]",
            "batch.real_ratio=0.5",
            "rollout.every=250",
            "rollout.batch=1000",
            "log_every=250",
        ],
    },
    "recipe": {
        "steps": 200,
        "overrides": ["rollout.every=200", "rollout.batch=10000", "log_every=100"],
    },
}
DATA = hopper_shaped_rows(20_000)
TIMES: dict[tuple[str, str, int], float] = {}  # (size, "population" | "sequential", P) -> seconds


def _trainer(size: str, seeds: list[int], root: Path) -> Trainer:
    spec = SIZES[size]
    base = [*COMMON, *spec["overrides"], f"steps={spec['steps']}"]
    cfgs = [resolve("mopo", overrides=[*base, f"seed={s}"]) for s in seeds]
    trainer = Trainer(
        cfgs, HopperShapedTask(), [root / f"seed{s}" for s in seeds], root.parent / "cache", progress=False, data=DATA
    )
    trainer.setup()
    return trainer


@pytest.fixture(autouse=True)
def _threads() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _record(benchmark: Any, key: tuple[str, str, int]) -> None:
    TIMES[key] = benchmark.stats.stats.mean


@pytest.mark.parametrize("p", POPULATIONS)
@pytest.mark.parametrize("size", list(SIZES))
def test_bench_population(benchmark: Any, size: str, p: int, tmp_path: Path) -> None:
    seeds = list(range(p))
    made: list[Trainer] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        made.append(_trainer(size, seeds, tmp_path / f"pop{len(made)}"))
        return (), {}

    benchmark.pedantic(lambda: made[-1].train_members(), setup=setup, rounds=1, iterations=1)
    _record(benchmark, (size, "population", p))


@pytest.mark.parametrize("p", POPULATIONS)
@pytest.mark.parametrize("size", list(SIZES))
def test_bench_sequential(benchmark: Any, size: str, p: int, tmp_path: Path) -> None:
    singles: list[Trainer] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        singles.clear()
        singles.extend(_trainer(size, [s], tmp_path / f"single{s}") for s in range(p))
        return (), {}

    benchmark.pedantic(lambda: [t.train() for t in singles], setup=setup, rounds=1, iterations=1)
    _record(benchmark, (size, "sequential", p))
    _report()  # the table so far: every population measured before its sequential runs (file order)


def _report() -> None:
    """Print this session's throughputs (member-steps per second) and their ratios."""
    cpu = _cpu_model()
    lines = [
        f"\nPopulations vs sequential single runs: MOPO, {cpu}, torch {torch.__version__}, {THREADS} thread(s)",
        f"{'size':8} {'P':>2} {'population':>12} {'sequential':>12} {'ratio':>6}   (member-steps/s)",
    ]
    for size, spec in SIZES.items():
        for p in POPULATIONS:
            pop, seq = TIMES.get((size, "population", p)), TIMES.get((size, "sequential", p))
            if pop is None or seq is None:
                continue
            work = p * spec["steps"]
            lines.append(f"{size:8} {p:>2} {work / pop:>12.0f} {work / seq:>12.0f} {seq / pop:>6.2f}")
    print("\n".join(lines))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
