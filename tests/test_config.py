"""Config resolution: recipes, per-task tables, overrides, component switches, strict keys, hashing."""

from __future__ import annotations

import math
import sys
import tomllib

import pytest

from zoo.config import ConfigKeyError, overrides_to_tree, parse_override, resolve
from zoo.paths import add_config_dir, find_config, list_configs
from zoo.registry import UnknownComponentError


def test_recipe_defaults_and_per_task_table() -> None:
    base = resolve("mopo")
    assert base.penalty.name == "mopo" and base.penalty.cfg.coef == 1.0
    assert base.steps == 3_000_000 and base.batch.real_ratio == 0.05
    task = resolve("mopo", task="hopper-medium-v2")
    assert task.penalty.cfg.coef == 5.0 and task.rollout.horizon == 5
    wmr = resolve("mopo", task="walker2d-medium-replay-v2")
    assert wmr.rollout.horizon == 1 and wmr.penalty.cfg.coef == 2.5


def test_pattern_tables_apply_to_matching_tasks() -> None:
    cfg = resolve("mobile", task="pendulum-medium")
    assert cfg.learner.cfg.target_min == -math.inf
    assert resolve("mobile", task="hopper-medium-v2").learner.cfg.target_min == 0.0


def test_overrides_parse_toml_literals() -> None:
    assert parse_override("learner.actor_lr=1e-4") == (["learner", "actor_lr"], 1e-4)
    assert parse_override("penalty.name=mobile") == (["penalty", "name"], "mobile")
    assert parse_override("dynamics.hidden=[32, 32]") == (["dynamics", "hidden"], [32, 32])
    assert parse_override("data.normalize_obs=true") == (["data", "normalize_obs"], True)
    assert overrides_to_tree(["a.b=1", "a.c=2"]) == {"a": {"b": 1, "c": 2}}
    with pytest.raises(ValueError, match="key=value"):
        parse_override("learner.actor_lr")
    cfg = resolve("mopo", overrides=["learner.actor_lr=3e-4", "steps=1000"])
    assert cfg.learner.cfg.actor_lr == 3e-4 and cfg.steps == 1000


def test_changing_a_component_name_drops_the_old_keys() -> None:
    cfg = resolve("mopo", task="hopper-medium-v2", overrides=["penalty.name=mobile"])
    assert cfg.penalty.name == "mobile"
    defaults = resolve("mopo", overrides=["penalty.name=mobile"]).penalty.cfg
    assert cfg.penalty.cfg == defaults  # mopo's coef=5.0 for hopper-medium did not leak into mobile
    both = resolve("mopo", overrides=["penalty.name=mobile", "penalty.samples=4"])
    assert both.penalty.cfg.samples == 4


def test_unknown_keys_are_errors_naming_valid_keys() -> None:
    with pytest.raises(ConfigKeyError, match=r"learner\.actr_lr.*valid keys in \[learner\]:.*actor_lr"):
        resolve("mopo", overrides=["learner.actr_lr=1e-4"])
    with pytest.raises(ConfigKeyError, match=r"rollout\.horizn.*valid keys in \[rollout\]: batch, every, horizon"):
        resolve("mopo", overrides=["rollout.horizn=3"])
    with pytest.raises(ConfigKeyError, match="unknown top-level key"):
        resolve("mopo", overrides=["stepz=3"])


def test_type_errors_name_the_key() -> None:
    with pytest.raises(ConfigKeyError, match="rollout.horizon: expected an integer"):
        resolve("mopo", overrides=['rollout.horizon="five"'])
    with pytest.raises(ConfigKeyError, match="data.normalize_obs: expected true or false"):
        resolve("mopo", overrides=["data.normalize_obs=1"])


def test_unregistered_component_lists_registered_ones() -> None:
    with pytest.raises(UnknownComponentError, match="registered penalty components:.*mopo"):
        resolve("mopo", overrides=["penalty.name=nosuch"])


def test_hash_ignores_seed_and_tracks_everything_else() -> None:
    a = resolve("mopo", task="hopper-medium-v2", overrides=["seed=0"])
    b = resolve("mopo", task="hopper-medium-v2", overrides=["seed=7"])
    c = resolve("mopo", task="hopper-medium-v2", overrides=["penalty.coef=1.0"])
    assert a.hash() == b.hash() != c.hash()


def test_toml_output_round_trips() -> None:
    cfg = resolve("mobile", task="hopper-medium-v2")
    tree = tomllib.loads(cfg.to_toml())
    assert tree == cfg.tree()
    assert tree["learner"]["auto_alpha"] is False and tree["learner"]["alpha"] == 0.2


def test_user_config_dir_and_base_recipes(tmp_path) -> None:
    algos = tmp_path / "algos"
    algos.mkdir()
    (algos / "mopo_h1.toml").write_text('base = "mopo"\nrollout = { horizon = 1 }\n')
    add_config_dir(tmp_path)
    assert "mopo_h1" in list_configs("algos")
    cfg = resolve("mopo_h1", task="hopper-medium-v2")
    assert cfg.penalty.cfg.coef == 5.0  # the base recipe's per-task table
    assert cfg.rollout.horizon == 1  # the derived recipe's own setting wins over its base's tables
    assert resolve("mopo_h1").rollout.horizon == 1
    assert find_config("algos", str(algos / "mopo_h1.toml")) == algos / "mopo_h1.toml"
    with pytest.raises(FileNotFoundError, match="available: .*mopo"):
        find_config("algos", "nonexistent_algo")


def test_cli_errors_keep_bracketed_section_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`zoo` prints config errors through rich; "[learner]" must not be swallowed as a markup tag."""
    from zoo.cli import main

    argv = [
        "zoo",
        "train",
        "--algo",
        "mopo",
        "--task",
        "pendulum-medium",
        "--set",
        "learner.actr_lr=1",
        "--print-config",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "learner.actr_lr" in err and "valid keys in [learner]:" in err and "actor_lr" in err
