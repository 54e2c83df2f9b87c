"""Any combination that type-checks runs (DESIGN.md, "The composition"): every learner × penalty ∈ {none, mopo,
mobile} trains 100 steps through the one trainer on shared synthetic Hopper-shaped rows and one shared pretrained
ensemble."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.fixtures import HopperShapedTask, hopper_shaped_rows
from zoo.config import resolve
from zoo.engine.trainer import Trainer

TINY = [
    "steps=100",
    "log_every=50",
    "checkpoint_every=0",
    "eval.episodes=0",
    'device="cpu"',
    "dynamics.hidden=[16, 16]",
    "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]",
    "dynamics.max_epochs=1",
    "rollout.every=50",
    "rollout.batch=32",
    "rollout.horizon=2",
    "batch.size=32",
]
LEARNER_KEYS = {"sac": [], "cql": ["learner.num_repeat=2"], "td3bc": []}
PENALTY_KEYS = {"none": [], "mopo": [], "mobile": ["penalty.samples=2"]}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return {"cache": tmp_path_factory.mktemp("cache"), "data": hopper_shaped_rows(500)}


@pytest.mark.parametrize("penalty", sorted(PENALTY_KEYS))
@pytest.mark.parametrize("learner", sorted(LEARNER_KEYS))
def test_every_learner_runs_with_every_penalty(learner: str, penalty: str, shared: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    overrides = [f"learner.name={learner}", "learner.hidden=[16, 16]", f"penalty.name={penalty}"]
    cfg = resolve("mbpo", overrides=TINY + overrides + LEARNER_KEYS[learner] + PENALTY_KEYS[penalty])
    assert (cfg.learner.name, cfg.penalty.name) == (learner, penalty)
    trainer = Trainer(cfg, HopperShapedTask(), tmp_path / "run", shared["cache"], progress=False, data=shared["data"])
    trainer.setup()
    result = trainer.train()
    assert result["steps"] == 100
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(math.isfinite(v) for r in train for k, v in r.items() if k != "kind")
    rollouts = [r for r in records if r["kind"] == "rollout"]
    assert len(rollouts) == 2
    if penalty == "mopo":  # subtracted from the stored model rewards
        assert all(r["rollout/penalty_mean"] > 0 for r in rollouts)
    if penalty == "mobile":  # applied by the learner inside the critic target
        assert all(r["penalty_mean"] > 0 for r in train)
    else:
        assert all("penalty_mean" not in r for r in train)


@pytest.mark.parametrize("penalty", ["morel", "mobile"])
def test_mean_only_penalties_run_on_the_deterministic_ensemble(penalty: str, shared: dict, tmp_path: Path) -> None:
    """MOReL's halting and MOBILE's Bellman inconsistency need only the members' predictions."""
    torch.manual_seed(0)
    overrides = ["dynamics.name=deterministic_ensemble", "learner.hidden=[16, 16]", f"penalty.name={penalty}"]
    cfg = resolve("mbpo", overrides=TINY + overrides + PENALTY_KEYS.get(penalty, []))
    trainer = Trainer(cfg, HopperShapedTask(), tmp_path / "run", shared["cache"], progress=False, data=shared["data"])
    trainer.setup()
    assert trainer.model.registry_name == "deterministic_ensemble"
    assert trainer.train()["steps"] == 100
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert all(math.isfinite(v) for r in train for k, v in r.items() if k != "kind")
    if penalty == "morel":
        assert trainer.penalty.threshold is not None and float(trainer.penalty.threshold) > 0
