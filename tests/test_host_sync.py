"""The inner loop never waits on the device (DESIGN.md, "Performance rules"; issue 3: no host sync per step).

On a GPU, ``Tensor.item()``, ``float(t)``, ``bool(t)``, ``.tolist()`` or ``.numpy()`` stall the step until the
device catches up. On the CPU they are free, so a CPU-only CI would never notice one slipping in. This test
makes each of them raise while the trainer draws a batch, lets the rule see it, and takes the learner's
update; it checks every recipe whose step does something of its own (a rollout-stage penalty, a target-stage
penalty, ROMBRL's re-simulated model rows, COMBO's conservative critic term). Rollouts, rule phases, metrics and
evaluations run between steps, every N steps, and may sync. Syncs inside a single C++ op (boolean-mask indexing,
``nonzero``) are not visible to this trap; the step code avoids them by construction (``torch.where`` over masks).
On a GPU (marker ``gpu``) the step also runs under ``torch.cuda.set_sync_debug_mode("error")``, which sees those too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.fixtures import HopperShapedTask, hopper_shaped_rows
from zoo.config import resolve
from zoo.engine.trainer import Trainer

SYNCING = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")


@contextmanager
def cuda_syncs_raise(device: torch.device) -> Iterator[None]:
    """On a CUDA device: every synchronising CUDA call inside the block raises (C++ ops included)."""
    if device.type != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@contextmanager
def host_syncs_raise() -> Iterator[None]:
    """Within the block, every tensor method that copies a value to the host raises AssertionError."""

    def trap(name: str) -> Callable[..., Any]:
        def raiser(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"host sync inside a training step: Tensor.{name} on a {tuple(self.shape)} tensor")

        return raiser

    saved = {name: getattr(torch.Tensor, name) for name in SYNCING}
    try:
        for name in SYNCING:
            setattr(torch.Tensor, name, trap(name))
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def test_the_trap_catches_each_kind_of_sync() -> None:
    t = torch.ones(2)
    syncs = (
        lambda: t.sum().item(),
        lambda: float(t[0]),
        lambda: int(t[0]),
        lambda: bool(t[0] > 0),
        lambda: t.tolist(),
        lambda: t.numpy(),
    )
    for sync in syncs:
        with host_syncs_raise(), pytest.raises(AssertionError, match="host sync"):
            sync()
    assert t.sum().item() == 2.0  # restored afterwards


SMALL = [
    "steps=12",
    "log_every=6",
    "checkpoint_every=0",
    "eval.episodes=0",
    "dynamics.hidden=[32, 32]",
    "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]",
    "dynamics.max_epochs=1",
    "learner.hidden=[32, 32]",
    "rollout.every=6",
    "rollout.batch=64",
]
EXTRA = {
    "combo": ["learner.num_repeat=2"],  # the conservative term: proposal actions, log-sum-exp, weighted means
    "mopo": [],
    "mobile": ["penalty.samples=2"],
    "rombrl": [
        "penalty.samples=2",
        "rule.every=6",
        "rule.num_rollouts=4",
        "rule.rollout_horizon=5",
        "rule.actor_epochs=1",
        "rule.follower_epochs=1",
        "rule.score_horizon=2",
        "rule.down_sample=2",
        "rule.real_batch=16",
    ],
}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("algo", sorted(EXTRA))
def test_training_steps_make_no_host_sync(algo: str, device: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = resolve(algo, overrides=[*SMALL, f'device="{device}"', *EXTRA[algo]])
    trainer = Trainer(
        cfg, HopperShapedTask(), tmp_path / "run", tmp_path / "cache", progress=False, data=hopper_shaped_rows(2000)
    )
    trainer.setup()
    steps = {"draw": 0, "update": 0}

    def guarded(fn: Callable[..., Any], key: str | None = None) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if key:
                steps[key] += 1
            with host_syncs_raise(), cuda_syncs_raise(trainer.device):
                return fn(*args, **kwargs)

        return call

    trainer.draw_batch_pop = guarded(trainer.draw_batch_pop, "draw")  # type: ignore[method-assign]
    trainer.rule.on_batch = guarded(trainer.rule.on_batch)  # type: ignore[method-assign]
    update = "update_pop" if trainer.batched else "update"  # a batched learner trains through update_pop
    setattr(trainer.learner, update, guarded(getattr(trainer.learner, update), "update"))
    result = trainer.train()
    assert result["steps"] == 12 and steps == {"draw": 12, "update": 12}
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in r for r in records) == 2  # the metrics interval still reads its values
