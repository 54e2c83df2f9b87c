"""Grid expansion, presets and the dry run of ``zoo bench`` (no training: configs are only resolved)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zoo.bench.grid import expand_grid, parse_seeds, parse_sweep, split_top_level
from zoo.bench.presets import load_bench_preset
from zoo.bench.sweep import all_recipes, choose_preset
from zoo.cli import app
from zoo.registry import ConfigKeyError

QUICK_TASKS = ["pendulum-random", "pendulum-medium", "pendulum-medium-replay", "pendulum-expert"]


def test_seeds_and_sweep_parsing() -> None:
    assert parse_seeds(3, None, 5) == [0, 1, 2]
    assert parse_seeds(None, "3,7", 5) == [3, 7]
    assert parse_seeds(None, None, 2) == [0, 1]
    with pytest.raises(ValueError, match="either --seeds"):
        parse_seeds(2, "1", 5)
    with pytest.raises(ValueError, match="at least 1"):
        parse_seeds(0, None, 5)
    assert split_top_level("[64, 64],[128,128], 'a,b'") == ["[64, 64]", "[128,128]", "'a,b'"]
    assert parse_sweep(["penalty.coef=0.5,1.0", "dynamics.hidden=[64,64],[128,128]"]) == {
        "penalty.coef": ["0.5", "1.0"],
        "dynamics.hidden": ["[64,64]", "[128,128]"],
    }
    with pytest.raises(ValueError, match="key=v1,v2"):
        parse_sweep(["penalty.coef"])


def test_grid_ids_are_stable_and_equal_dynamics_share_one_pretraining() -> None:
    quick = load_bench_preset("quick")
    plan = expand_grid(["quick"], ["mopo", "mbpo", "mobile"], [0, 1], preset=quick)
    assert len(plan.runs) == 4 * 3 * 2
    ids = [spec.id for spec in plan.runs]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"quick/pendulum-[a-z-]+/(mopo|mbpo|mobile)/[0-9a-f]{12}/seed[01]", i) for i in ids)
    again = expand_grid(["quick"], ["mopo", "mbpo", "mobile"], [0, 1], preset=quick)
    assert [s.id for s in again.runs] == ids  # the same grid maps to the same run directories
    # Under the preset the three dynamics sections are equal: one ensemble per (task, seed).
    jobs = plan.pretrain_jobs()
    assert len(jobs) == 4 * 2
    assert {len(job.runs) for job in jobs} == {3}
    # With the recipes' own budgets MOBILE caps pretraining at 30 epochs: its own ensembles.
    plain = expand_grid(["quick"], ["mopo", "mbpo", "mobile"], [0, 1])
    assert len(plain.pretrain_jobs()) == 4 * 2 * 2
    by_algo = {s.algo: s for s in plain.runs if s.task == "pendulum-random" and s.seed == 0}
    assert by_algo["mopo"].pretrain == by_algo["mbpo"].pretrain != by_algo["mobile"].pretrain


def test_preset_layers_per_algorithm_tables_and_unused_tables(tmp_path: Path) -> None:
    quick = load_bench_preset("quick")
    assert quick.seeds == 3 and "algos" not in quick.common and "seeds" not in quick.common
    plan = expand_grid(["quick"], ["mopo", "mobile"], [0], preset=quick, tasks=["pendulum-medium"])
    cfg = {s.algo: s.cfg for s in plan.runs}
    assert cfg["mobile"].penalty.cfg.samples == 2  # [algos.mobile] only
    assert cfg["mopo"].steps == cfg["mobile"].steps == quick.common["steps"]
    assert cfg["mopo"].eval.last_k <= cfg["mopo"].steps // cfg["mopo"].eval.every  # last_k fits the evaluations
    preset = tmp_path / "tiny.toml"
    preset.write_text(
        'seeds = 3\nsteps = 100\n[algos.not_in_this_sweep]\nrule.phase_steps = 5\n[algos."mo*"]\npenalty.coef = 0.25\n'
    )
    tiny = load_bench_preset(str(preset))
    plan = expand_grid(["quick"], ["mopo", "mbpo"], [0], preset=tiny, tasks=["pendulum-random"])
    cfg = {s.algo: s.cfg for s in plan.runs}
    assert cfg["mopo"].penalty.cfg.coef == 0.25 and cfg["mopo"].steps == 100 == cfg["mbpo"].steps
    assert {s.setting.preset for s in plan.runs} == {"tiny"}
    bad = tmp_path / "bad.toml"
    bad.write_text("[algos.mopo]\npenalty.nonsense = 1\n")
    with pytest.raises(ConfigKeyError, match="nonsense"):
        expand_grid(["quick"], ["mopo"], [0], preset=load_bench_preset(str(bad)), tasks=["pendulum-random"])


def test_preset_task_tables_apply_to_their_tasks_only(tmp_path: Path) -> None:
    quick = load_bench_preset("quick")
    plan = expand_grid(["quick"], ["mopo"], [0], preset=quick, tasks=["pendulum-medium", "pendulum-medium-replay"])
    epochs = {s.task: s.cfg.dynamics.cfg.max_epochs for s in plan.runs}
    assert epochs == {"pendulum-medium": 10, "pendulum-medium-replay": 40}  # [tasks."pendulum-medium-replay"]
    preset = tmp_path / "tasks.toml"
    preset.write_text('steps = 100\n[algos.mopo]\npenalty.coef = 0.5\n[tasks."pendulum-m*"]\npenalty.coef = 3.0\n')
    plan = expand_grid(["quick"], ["mopo"], [0], preset=load_bench_preset(str(preset)),
                       tasks=["pendulum-random", "pendulum-medium"])
    coef = {s.task: s.cfg.penalty.cfg.coef for s in plan.runs}
    assert coef == {"pendulum-random": 0.5, "pendulum-medium": 3.0}  # the task table comes after the algos table
    bad = tmp_path / "bad_tasks.toml"
    bad.write_text("tasks = 3\n")
    with pytest.raises(ValueError, match="one table per task"):
        load_bench_preset(str(bad))


def test_quick_preset_resolves_for_every_recipe() -> None:
    quick = load_bench_preset("quick")
    plan = expand_grid(["quick"], all_recipes(), [0, 1], preset=quick)
    assert len(plan.runs) == len(all_recipes()) * 4 * 2
    assert choose_preset("auto", ["quick"]).name == "quick"
    assert choose_preset("auto", ["d4rl"]) is None and choose_preset("none", ["quick"]) is None


def test_sweep_axis_gives_labelled_columns_with_their_own_run_directories() -> None:
    plan = expand_grid(
        ["quick"], ["mopo"], [0], sweep=parse_sweep(["penalty.coef=0.5,2.0"]), tasks=["pendulum-random"],
        overrides=["eval.episodes=3"],
    )
    assert [s.label for s in plan.runs] == ["mopo[penalty.coef=0.5]", "mopo[penalty.coef=2.0]"]
    assert [s.cfg.penalty.cfg.coef for s in plan.runs] == [0.5, 2.0]
    assert len({s.id for s in plan.runs}) == 2 and len({s.pretrain for s in plan.runs}) == 1
    assert plan.runs[0].setting.overrides == ("eval.episodes=3",)
    assert plan.runs[0].bench_meta()["sweep"] == {"penalty.coef": "0.5"}


def test_dry_run_prints_the_plan_and_its_cost(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "--algos", "mopo,mbpo", "--seeds", "2", "--out", str(tmp_path), "--dry-run", "--workers", "2"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "quick/pendulum-expert/mbpo/" in result.output and "seed1" in result.output
    assert "16 runs: 0 finished, 0 failed, 16 to run; 8 ensembles to pretrain" in result.output
    assert "estimated cost" in result.output and "2 worker(s)" in result.output
    assert not (tmp_path / "runs").exists()  # nothing written


def test_bench_rejects_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--algos", "mopo", "--seeds", "1", "--out", str(tmp_path), "--dry-run",
                                 "--set", "penalty.nonsense=1"])
    assert result.exit_code != 0 and "nonsense" in str(result.exception)
    result = runner.invoke(app, ["bench", "--suite", "no-such-suite", "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "quick" in str(result.exception)  # lists the suites
