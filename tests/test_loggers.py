"""Loggers, kind ``logger`` (issue 12, item 2): the contract of every registered logger, TensorBoard event files
read back with TensorBoard's own reader, W&B offline runs, a user plugin logger receiving every record the
trainer and the rules produce, and one-line errors for unknown loggers and missing extras."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures import HopperShapedTask
from tests.test_diagnostics import chained_rows
from zoo.config import resolve
from zoo.engine.trainer import Trainer
from zoo.loggers import LoggerSet, RunInfo, logger_names, scalars
from zoo.loggers.wandb import wandb_identity
from zoo.registry import REGISTRY

HAS_WANDB = importlib.util.find_spec("wandb") is not None
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None

RECORDS = [
    {"step": 0, "kind": "setup", "pretrain/epochs": 3, "pretrain/cached": False},
    {"step": 500, "kind": "train", "critic_loss": 1.5, "actor_loss": -2.0, "sps": 100.0},
    {"step": 500, "kind": "eval", "return_mean": -800.0, "score": 12.5, "length_mean": 200.0},
    {"step": 1000, "kind": "rule", "romi/w_mean": 1.0, "rombrl/implicit_ratio_steps": [0.1, 0.0], "note": "x"},
    {"step": 1000, "kind": "eval", "return_mean": -700.0, "score": 20.25, "length_mean": 200.0},
    {"step": 1000, "kind": "model", "model/kstep_5": 0.25, "model/penalty_spearman": float("nan")},
]


def run_info(tmp_path: Path, **kw) -> RunInfo:  # noqa: ANN003
    return RunInfo(tmp_path / "run", "quick", "pendulum-random", "mopo", "0123456789ab", 3, {"steps": 1000}, **kw)


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)


def test_scalars_tags_and_names() -> None:
    assert scalars(RECORDS[1]) == {"train/critic_loss": 1.5, "train/actor_loss": -2.0, "train/sps": 100.0}
    assert scalars(RECORDS[3]) == {"romi/w_mean": 1.0}  # lists and strings stay in the jsonl file only
    assert scalars(RECORDS[0]) == {"pretrain/epochs": 3.0, "pretrain/cached": 0.0}
    assert logger_names(["tensorboard"], "wandb,jsonl", None, ["tensorboard"]) == ["jsonl", "tensorboard", "wandb"]


@pytest.mark.parametrize("name", REGISTRY.names("logger"))
def test_logger_contract(name: str, tmp_path: Path, offline_wandb: None) -> None:
    """Every registered logger: built from a RunInfo, takes every kind of record, writes under the run dir."""
    if name == "wandb" and not HAS_WANDB:
        pytest.skip("the wandb extra is not installed (pip install 'mbrl-zoo[wandb]')")
    if name == "tensorboard" and not HAS_TENSORBOARD:
        pytest.skip("the tensorboard extra is not installed (pip install 'mbrl-zoo[tensorboard]')")
    run = run_info(tmp_path)
    logger = REGISTRY.create("logger", name, run)
    for record in RECORDS:
        logger.log(record)
    logger.close()
    assert any(p.is_file() and p.stat().st_size > 0 for p in run.run_dir.rglob("*")), name


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the tensorboard extra is not installed")
def test_tensorboard_event_files_carry_every_scalar(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = run_info(tmp_path)
    logs = LoggerSet.build(["jsonl", "tensorboard"], run)
    for record in RECORDS:
        logs.log(record)
    logs.close()
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(RECORDS) and json.loads(lines[2]) == RECORDS[2]
    events = EventAccumulator(str(run.run_dir / "tensorboard"))
    events.Reload()
    score = events.Scalars("eval/score")
    assert [(e.step, e.value) for e in score] == [(500, 12.5), (1000, 20.25)]
    assert [e.value for e in events.Scalars("romi/w_mean")] == [1.0]
    assert [e.value for e in events.Scalars("train/critic_loss")] == [1.5]
    assert math.isnan(events.Scalars("model/penalty_spearman")[0].value)
    assert "rombrl/implicit_ratio_steps" not in events.Tags()["scalars"]


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the tensorboard extra is not installed")
def test_tensorboard_resume_purges_the_events_after_the_checkpoint(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = LoggerSet.build(["tensorboard"], run_info(tmp_path))
    for step, score in ((500, 1.0), (1000, 2.0), (1500, 3.0)):
        first.log({"step": step, "kind": "eval", "score": score})
    first.close()
    resumed = LoggerSet.build(["tensorboard"], run_info(tmp_path, start_step=1000))
    resumed.log({"step": 1500, "kind": "eval", "score": 30.0})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("eval/score")] == [(500, 1.0), (1000, 2.0), (1500, 30.0)]


@pytest.mark.skipif(not HAS_WANDB, reason="the wandb extra is not installed (pip install 'mbrl-zoo[wandb]')")
def test_wandb_offline_writes_its_run_folder_named_after_the_run_id(tmp_path: Path, offline_wandb: None) -> None:
    run = run_info(tmp_path)
    identity = wandb_identity(run)
    assert identity["project"] == "mbrl-zoo-quick" and identity["group"] == "pendulum-random/mopo/0123456789ab"
    assert identity["name"] == "mopo pendulum-random seed3"
    logs = LoggerSet.build(["jsonl", "wandb"], run)
    for record in RECORDS:
        logs.log(record)
    logs.close()
    (folder,) = (run.run_dir / "wandb").glob(f"offline-run-*-{identity['id']}")
    assert (folder / f"run-{identity['id']}.wandb").stat().st_size > 0


PROBE = '''
from zoo.registry import register

RECORDS = []


@register("logger", "probe")
class ProbeLogger:
    """Keeps every record in memory (a user's plugin logger)."""

    def __init__(self, run):
        RECORDS.append(("open", run.run_id))

    def log(self, record):
        RECORDS.append(record)

    def close(self):
        RECORDS.append("closed")
'''

SMALL = [
    "steps=12", "log_every=6", "checkpoint_every=0", "eval.episodes=0", 'device="cpu"',
    "dynamics.hidden=[32, 32]", "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]", "dynamics.max_epochs=1",
    "learner.hidden=[32, 32]", "rollout.every=6", "rollout.batch=64", "rule.every=6",
]
RULES = {
    "romi": (["rule.iterations=2"], "romi/w_mean"),
    "rambo": (["rule.adv_steps=2", "rule.bc_epochs=1", "rule.batch_size=32", "rule.monitor_rows=64"], "rambo/sl_loss"),
    "rombrl": (
        ["penalty.samples=2", "rule.num_rollouts=4", "rule.rollout_horizon=5", "rule.actor_epochs=2",
         "rule.follower_epochs=1", "rule.score_horizon=2", "rule.down_sample=2", "rule.real_batch=16"],
        "rombrl/implicit_ratio",
    ),
}


@pytest.mark.parametrize("algo", sorted(RULES))
def test_a_plugin_logger_receives_every_record_of_the_trainer_and_the_rule(
    algo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "zoo_probe_logger.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    REGISTRY.load_module("zoo_probe_logger")
    probe = sys.modules["zoo_probe_logger"].RECORDS
    probe.clear()
    torch.manual_seed(0)
    extra, key = RULES[algo]
    cfg = resolve(algo, overrides=[*SMALL, *extra, 'loggers=["probe"]'])
    trainer = Trainer(cfg, HopperShapedTask(), tmp_path / "run", tmp_path / "cache", progress=False,
                      data=chained_rows(600))
    trainer.setup()
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert probe[0] == ("open", f"custom/hopper-shaped/{algo}/{cfg.hash()}/seed0") and probe[-1] == "closed"
    assert json.loads(json.dumps(probe[1:-1])) == lines  # the same records as metrics.jsonl, in order
    kinds = [r["kind"] for r in lines]
    assert {"setup", "rollout", "train", "rule", "model"} <= set(kinds)
    rule_records = [r for r in lines if r["kind"] == "rule"]
    assert len(rule_records) == 2 and all(key in r for r in rule_records), rule_records[0].keys()


def test_unknown_loggers_and_missing_extras_fail_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.bench.executors import MissingExtraError
    from zoo.loggers import check_loggers
    from zoo.registry import UnknownComponentError

    with pytest.raises(UnknownComponentError, match="unknown logger 'nosuch'; registered logger components: jsonl"):
        check_loggers(["jsonl", "nosuch"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for name, extra in (("wandb", "wandb"), ("tensorboard", "tensorboard")):
        with pytest.raises(MissingExtraError, match=rf"pip install 'mbrl-zoo\[{extra}\]'"):
            check_loggers(["jsonl", name])


@pytest.mark.parametrize(
    ("logger", "hide", "message"),
    [
        # (the probe plugin of the test above is registered when it ran first)
        ("nosuch", "", r"error: unknown logger 'nosuch'; registered logger components: jsonl, (probe, )?tensorboard, "
         r"wandb"),
        ("tensorboard,wandb", "wandb",
         re.escape("error: the wandb logger needs Weights & Biases, an optional extra: pip install 'mbrl-zoo[wandb]'")),
    ],
)
def test_bad_loggers_are_one_line_cli_errors(
    logger: str, hide: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``zoo train --logger ...`` checks them before the dataset is loaded: no dataset needed, nothing written."""
    import zoo.cli

    if hide:
        monkeypatch.setitem(sys.modules, hide, None)  # as if the extra were not installed
    monkeypatch.setattr(zoo.cli.err_console, "width", 300)
    monkeypatch.setattr(sys, "argv", ["zoo", "train", "--algo", "mopo", "--task", "pendulum-random", "--out",
                                      str(tmp_path / "out"), "--logger", logger])
    with pytest.raises(SystemExit) as stop:
        zoo.cli.main()
    assert stop.value.code == 2
    # (zoo.cli.main may add how to see the traceback)
    assert re.fullmatch(message + r"( \(traceback: --debug or ZOO_DEBUG=1\))?", capsys.readouterr().err.strip())
    assert not (tmp_path / "out").exists()
