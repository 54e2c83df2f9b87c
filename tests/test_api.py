"""The Python API (issue 12, item 4): ``zoo.train`` and ``zoo.bench`` are the command line's code paths, so the
same seed gives the same result from Python and from ``zoo train``; ``zoo.bench`` returns one row per run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import zoo
from zoo.api import override_strings

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "rollout.batch": 400,
    "rollout.every": 200,
    "eval.every": 200,
    "eval.episodes": 2,
    "eval.last_k": 2,
    "dynamics.max_epochs": 2,
    "dynamics.hidden": [64, 64],
    "dynamics.weight_decay": [2.5e-5, 5e-5, 1e-4],
    "learner.hidden": [64, 64],
    "log_every": 100,
}


def test_override_dicts_become_toml_overrides() -> None:
    assert override_strings({"penalty.coef": 2.0, "device": "cpu", "dynamics.hidden": [64, 64]}) == [
        "penalty.coef=2.0", 'device="cpu"', "dynamics.hidden=[64, 64]"
    ]
    assert override_strings(["a=1"]) == ["a=1"] and override_strings(None) is None


def test_zoo_bench_is_the_package_and_the_function() -> None:
    import zoo.bench.sweep  # noqa: F401 (the package stays importable as before)

    assert callable(zoo.bench) and zoo.bench.sweep.bench is not None and callable(zoo.train)


def test_a_dry_run_frame_lists_the_plan_as_not_run(tmp_path: Path) -> None:
    from zoo.results import RUN_COLUMNS

    frame = zoo.bench("quick", ["mopo", "mbpo"], seeds=[3, 7], tasks="pendulum-random", out=tmp_path,
                      dry_run=True, quiet=True)
    assert list(frame.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert frame[["algo", "seed", "status"]].values.tolist() == [
        ["mopo", 3, "not run"], ["mopo", 7, "not run"], ["mbpo", 3, "not run"], ["mbpo", 7, "not run"]
    ]  # in plan order
    assert str(frame["seed"].dtype) == "Int64" and str(frame["status"].dtype) == "string"
    assert not (tmp_path / "runs").exists()


def metrics(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "sps"} for r in records]


@pytest.mark.slow
def test_api_and_cli_give_the_same_result_for_the_same_seed(quick_env: Path, tmp_path: Path) -> None:
    api = zoo.train("mopo", "pendulum-random", seed=2, overrides=TINY, steps=400, out=tmp_path / "api")
    cli = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "train", "--algo", "mopo", "--task", "pendulum-random", "--seed", "2",
         "--steps", "400", "--out", str(tmp_path / "cli"), "--no-progress",
         *[arg for text in override_strings(TINY) for arg in ("--set", text)]],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    (path,) = (tmp_path / "cli" / "runs").glob("*/*/*/*/seed2/result.json")
    from_cli = json.loads(path.read_text())
    for key in ("score", "return", "steps", "config_hash", "suite", "dataset_fingerprint", "score_evals"):
        assert api[key] == from_cli[key], key
    api_dir = next((tmp_path / "api" / "runs").glob("*/*/*/*/seed2"))
    assert metrics(api_dir) == metrics(path.parent)  # eval, train, rule, model records alike


@pytest.mark.slow
def test_zoo_bench_returns_one_row_per_run_and_passes_the_loggers(quick_env: Path, tmp_path: Path) -> None:
    frame = zoo.bench("quick", "mbpo", seeds=[1], tasks="pendulum-random", overrides={**TINY, "steps": 200},
                      out=tmp_path, preset="none", loggers="tensorboard", quiet=True, executor_cfg={"workers": 1})
    assert isinstance(frame, pd.DataFrame) and len(frame) == 1
    row = frame.iloc[0]
    assert (row["suite"], row["task"], row["algo"], row["seed"], row["status"]) == (
        "quick", "pendulum-random", "mbpo", 1, "finished"
    )
    result = json.loads((Path(row["run_dir"]) / "result.json").read_text())
    assert row["score"] == result["score"] and row["return"] == result["return"] and row["steps"] == 200
    assert list((Path(row["run_dir"]) / "tensorboard").glob("events.out.tfevents.*"))
    again = zoo.bench("quick", "mbpo", seeds=[1], tasks="pendulum-random", overrides={**TINY, "steps": 200},
                      out=tmp_path, preset="none", quiet=True, dry_run=True)
    assert again.drop(columns=["wall_s"]).equals(frame.drop(columns=["wall_s"]))  # finished runs are read back
