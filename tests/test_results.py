"""``zoo.results``: runs and curves as DataFrames (columns, dtypes, config columns, which run a cell counts), and
result files that cannot be read (issue 11, item 3): reported by the reader, the planner, ``zoo bench`` and
``zoo leaderboard``, rerun by ``--retry-failed``, never making a table vanish."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.runs_tree import MTIME, build_tree, make_run
from tests.test_bench_scheduler import ScriptedExecutor, quiet_view
from zoo.bench.grid import Setting, expand_grid
from zoo.bench.jobs import WorkerEnv
from zoo.bench.leaderboard import build_leaderboards
from zoo.bench.scheduler import classify, run_plan
from zoo.bench.sweep import print_plan
from zoo.cli import app
from zoo.results import CURVE_COLUMNS, RUN_COLUMNS, latest_runs, load_curves, load_runs, run_status

REPS = 200


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(tmp_path_factory.mktemp("tree") / "results")


def test_load_runs_columns_dtypes_and_values(tree: Path) -> None:
    runs = load_runs(tree)
    assert list(runs.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert {c: str(runs[c].dtype) for c in RUN_COLUMNS} == RUN_COLUMNS
    assert all(c.startswith("cfg.") for c in runs.columns[len(RUN_COLUMNS) :])
    assert len(runs) == 40 and set(runs["status"]) == {"finished", "failed"}
    row = runs[(runs["suite"] == "quick") & (runs["task"] == "pendulum-random") & (runs["label"] == "mopo")]
    row = row[(row["setting"] == "preset quick") & (row["seed"] == 1)].iloc[0]
    assert (row["score"], row["return"], row["steps"], row["wall_s"]) == (70.0, 700.0, 2000, 13.5)
    assert (row["config_hash"], row["noise"], row["loader"], row["device"]) == (
        "0123456789ab",
        "none",
        "keep_timeouts",
        "auto",
    )
    assert row["cfg.penalty.coef"] == 1.0 and row["cfg.dynamics.hidden"] == (200, 200)
    assert row["cfg.learner.target_min"] == -math.inf and runs["cfg.learner.target_min"].dtype == "float64"
    assert runs["cfg.data.normalize_obs"].dtype == bool and runs["cfg.rollout.horizon"].dtype == "int64"
    failed = runs[runs["status"] == "failed"].iloc[0]
    assert failed["error"] == "RuntimeError: boom" and math.isnan(failed["score"]) and pd.isna(failed["steps"])
    train = runs[runs["setting"] == "preset zoo train"]
    assert sorted(train["config_hash"]) == ["cccccccccccc", "dddddddddddd"]
    assert load_runs(tree, suites=["d4rl-noisy"])["noise"].unique().tolist() == ["gaussian:0.05"]
    empty = load_runs(tree / "nothing")
    assert empty.empty and {c: str(empty[c].dtype) for c in RUN_COLUMNS} == RUN_COLUMNS


def test_latest_runs_counts_the_finished_and_newest_run_of_a_cell(tree: Path) -> None:
    runs = load_runs(tree)
    latest = latest_runs(runs)
    train = latest[latest["setting"] == "preset zoo train"]
    assert train["config_hash"].tolist() == ["dddddddddddd"] and train["score"].tolist() == [33.0]  # newer mtime
    assert len(latest) == len(runs) - 1


def test_load_curves_one_row_per_evaluation(tree: Path) -> None:
    runs = load_runs(tree, suites=["quick"])
    curves = load_curves(tree, runs=runs)
    assert {c: str(curves[c].dtype) for c in CURVE_COLUMNS} == CURVE_COLUMNS
    assert len(curves) == 4 * (runs["status"] == "finished").sum()
    one = curves[(curves["label"] == "mbpo") & (curves["task"] == "pendulum-medium") & (curves["seed"] == 2)]
    assert one["step"].tolist() == [500, 1000, 1500, 2000]
    assert one["score"].tolist() == [12.5, 22.5, 32.5, 42.5]  # score - 10·(3-k) + 0.25·seed
    assert one["return_std"].tolist() == [1.5] * 4
    assert len(load_curves(tree)) == 4 * (load_runs(tree)["status"] == "finished").sum()


def test_diverged_run_is_a_finished_marked_cell(tmp_path: Path) -> None:
    out = tmp_path / "results"
    make_run(out, "quick", "pendulum-random", "mopo", 0, 10.0)
    make_run(out, "quick", "pendulum-random", "mopo", 1, -30.0, diverged=True)
    runs = load_runs(out)
    assert runs["status"].tolist() == ["finished", "finished"] and runs["diverged"].tolist() == [False, True]
    (board,) = build_leaderboards(runs, reps=REPS, with_curves=False)
    cell = board.cells[("pendulum-random", "mopo")]
    assert (cell.mean, cell.n, cell.diverged) == (-10.0, 2, (1,))
    result = CliRunner().invoke(app, ["leaderboard", "--out", str(out), "--format", "md", "--no-plots"])
    assert "-10.0 ± 28.3 (2)†" in result.output and "† a seed of this cell" in result.output


def _corrupt(run_dir: Path, name: str, text: str = '{"score": 7') -> Path:
    path = run_dir / name
    path.write_text(text)
    return path


def test_unreadable_files_get_a_status_and_never_make_a_table_vanish(tmp_path: Path) -> None:
    out = tmp_path / "results"
    make_run(out, "quick", "pendulum-random", "mopo", 0, 10.0)
    cut = _corrupt(make_run(out, "quick", "pendulum-random", "mopo", 1, 20.0), "result.json")  # cut by a crash
    bad_error = make_run(out, "quick", "pendulum-random", "mbpo", 0, None)
    _corrupt(bad_error, "error.json", '"not an object"')
    runs = load_runs(out)
    assert runs["status"].tolist() == ["unreadable", "finished", "unreadable"]  # mbpo first (sorted by algo)
    assert pd.isna(runs.iloc[1]["unreadable_file"]) and runs.iloc[0]["unreadable_file"] == str(bad_error / "error.json")
    assert runs.iloc[2]["unreadable_file"] == str(cut) and "JSONDecodeError" in runs.iloc[2]["error"]
    assert "expected a JSON object, found str" in runs.iloc[0]["error"]
    assert run_status(cut.parent).status == "unreadable"
    (board,) = build_leaderboards(runs, reps=REPS, with_curves=False)
    assert board.cells[("pendulum-random", "mopo")].n == 1 and len(board.unreadable) == 2
    # Only a corrupt error.json in a setting: the table still appears, naming the file.
    only = tmp_path / "only"
    _corrupt(make_run(only, "quick", "pendulum-random", "mbpo", 0, None), "error.json", "")
    (board,) = build_leaderboards(load_runs(only), reps=REPS, with_curves=False)
    assert board.unreadable and "error.json" in board.unreadable[0]


def test_zoo_leaderboard_warns_naming_the_unreadable_files(tmp_path: Path) -> None:
    out = tmp_path / "results"
    make_run(out, "quick", "pendulum-random", "mopo", 0, 10.0)
    cut = _corrupt(make_run(out, "quick", "pendulum-random", "mopo", 1, 20.0), "result.json")
    result = CliRunner().invoke(app, ["leaderboard", "--out", str(out), "--no-plots"], terminal_width=400)
    assert result.exit_code == 0, result.output
    squeezed = "".join(result.output.split())  # the warning goes to stderr, wrapped at its console's width
    assert f"warning:{cut}:unreadableresult.json(JSONDecodeError" in squeezed
    md = (out / "leaderboard" / "quick.md").read_text()
    assert f"unreadable run files (not in the table; `zoo bench --retry-failed` reruns them): {cut}" in md
    assert "| pendulum-random | **10.0 (1)** |" in md


class RecordingExecutor(ScriptedExecutor):
    def __init__(self, out: Path) -> None:
        super().__init__(out)
        self.payloads: list[dict[str, Any]] = []

    def submit(self, fn: Any, payload: dict[str, Any]) -> Any:
        self.payloads.append(payload)
        return super().submit(fn, payload)


def test_planner_reports_unreadable_runs_and_retry_failed_reruns_them(tmp_path: Path) -> None:
    plan = expand_grid(["quick"], ["mopo"], [0, 1], tasks=["pendulum-random"])
    first = ScriptedExecutor(tmp_path)
    run_plan(plan, tmp_path, first, WorkerEnv(), quiet_view())
    bad = plan.runs[1]
    cut = _corrupt(bad.run_dir(tmp_path), "result.json")
    state = classify(plan, tmp_path)
    assert [s.id for s in state.done] == [plan.runs[0].id] and [s.id for s in state.failed] == [bad.id]
    assert state.unreadable == {bad.id: f"{run_status(cut.parent).detail}: {cut}"}
    console = Console(file=io.StringIO(), width=300)
    print_plan(
        console,
        plan,
        state,
        {
            "out": str(tmp_path),
            "pretrain_jobs": 0,
            "runs": 0,
            "learner_steps": 0,
            "compute_s": 0.0,
            "wall_s": 0.0,
            "runs_with_history": 0,
        },
        first,
    )
    text = console.file.getvalue()
    assert "unreadable result file (--retry-failed reruns it)" in text
    assert "1 finished, 1 failed (1 of them with an unreadable result file)" in text and str(cut) in text
    # Without --retry-failed it is reported, never rerun and never counted as finished ...
    again = RecordingExecutor(tmp_path)
    report = run_plan(plan, tmp_path, again, WorkerEnv(), quiet_view())
    assert again.calls == [] and report.failed_before == [bad.id] and "unreadable result.json" in report.failed[bad.id]
    # ... with it, the run starts again from scratch and the unreadable file is kept beside it.
    retry = RecordingExecutor(tmp_path)
    report = run_plan(plan, tmp_path, retry, WorkerEnv(), quiet_view(), retry_failed=True)
    assert [p["resume"] for p in retry.payloads if "resume" in p] == [False]
    assert [s.id for s in report.finished] == [bad.id] and not report.failed
    assert cut.with_name("result.json.unreadable").read_text() == '{"score": 7'
    assert run_status(cut.parent).status == "finished"


def test_zoo_bench_dry_run_names_the_unreadable_file(tmp_path: Path) -> None:
    plan = expand_grid(["quick"], ["mopo"], [0], tasks=["pendulum-random"])
    (spec,) = plan.runs
    spec.run_dir(tmp_path).mkdir(parents=True)
    cut = _corrupt(spec.run_dir(tmp_path), "result.json")
    args = [
        "bench",
        "--suite",
        "quick",
        "--algos",
        "mopo",
        "--seeds",
        "1",
        "--tasks",
        "pendulum-random",
        "--out",
        str(tmp_path),
        "--preset",
        "none",
        "--dry-run",
    ]
    result = CliRunner().invoke(app, args, terminal_width=400)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "0 finished, 1 failed (1 of them with an unreadable result file), 0 to run" in flat
    assert "warning: unreadable result.json" in flat and str(cut) in result.output.replace("\n", "")


def test_mtime_is_that_of_the_deciding_file(tree: Path) -> None:
    runs = load_runs(tree, suites=["quick"])
    train = runs[runs["config_hash"] == "dddddddddddd"].iloc[0]
    assert train["mtime"] == MTIME + 5 and Path(train["run_dir"]).name == "seed0"
    assert os.path.getmtime(Path(train["run_dir"]) / "result.json") == MTIME + 5
    assert Setting("quick").key() == runs[runs["setting"] == "preset quick"]["setting_key"].iloc[0]
