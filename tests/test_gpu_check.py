"""The GPU check (benchmarks/gpu_check.py) runs on the CPU in its --dry form, so that it cannot rot unseen."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.paths import builtin_config_dir

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _load() -> object:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_dry_run_of_the_resume_check(tmp_path: Path) -> None:
    gpu_check = _load()
    out = tmp_path / "check.json"
    assert gpu_check.main(["--dry", "--only", "resume", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["device"] == "cpu" and [r["section"] for r in record["results"]] == ["resume"]
    assert record["results"][0]["ok"] and record["results"][0]["detail"] == "learner state identical"


def test_unknown_section_and_missing_gpu_are_told(capsys: pytest.CaptureFixture) -> None:
    gpu_check = _load()
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry", "--only", "warp"])
    assert "unknown section(s) warp" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert gpu_check.main([]) == 2
        assert "no CUDA device here" in capsys.readouterr().out


def _dry(sections: str, data: Path, tmp: Path) -> dict:
    out = tmp / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZOO_DATA": str(data)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry", "--only", sections, "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert {r["section"] for r in record["results"]} == set(sections.split(","))
    assert all(r["ok"] for r in record["results"]), record["results"]
    return record


@pytest.mark.slow
def test_dry_run_of_the_sync_and_rule_mode_checks_and_the_timing_table(tmp_path: Path) -> None:
    record = _dry("sync,modes,bench", tmp_path / "data", tmp_path)
    # The shipped recipes, which the subprocess sees: this process's list may hold config dirs that earlier tests
    # added (zoo.paths.add_config_dir is process-wide).
    recipes = len(list((builtin_config_dir() / "algos").glob("*.toml")))
    assert sum(r["section"] == "sync" for r in record["results"]) == recipes  # every recipe
    assert sum(r["section"] == "modes" for r in record["results"]) == 8  # rombrl 2 x 2, romi 2 x 2
    names = [t["measurement"] for t in record["timings"]]
    for piece in ("SAC update", "model rollout", "MOPO epoch", "ROMI iteration", "ROMBRL round"):
        assert any(piece in n for n in names), (piece, names)
    assert sum(n.startswith("short run") for n in names) == recipes  # one per recipe


def test_dry_run_of_the_population_section(tmp_path: Path) -> None:
    """Populations of 1 and 2 (1, 2, 4, 8, 16 on a GPU): the batched update and the loop, each with its ratio to P
    single runs measured in the same run."""
    record = _dry("populations", tmp_path / "data", tmp_path)
    assert [r["check"] for r in record["results"]] == ["P=1", "P=2"]
    notes = {t["measurement"]: t["note"] for t in record["timings"]}
    assert "1.00x P single updates" in notes["population update, P=1 (recipe sizes)"]
    assert "x P single runs" in notes["population loop, P=2, 4 steps"]


@pytest.mark.slow
def test_dry_run_of_a_recipe_through_the_executor_and_a_noisy_eval(quick_env: Path, tmp_path: Path) -> None:
    record = _dry("recipes", quick_env, tmp_path)
    assert any("noise relative_delta" in r["detail"] for r in record["results"])
