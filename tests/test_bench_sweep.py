"""``zoo bench`` end to end with the local executor (``slow`` tier): a sweep over mopo, mbpo and a recipe file
using a plugin's rule × 2 seeds on tiny budgets, interrupted with Ctrl-C and resumed without rerunning finished
runs; one pretrained ensemble per seed shared by all three recipes; a deliberately failing run recorded without
losing the others; --retry-failed; every leaderboard format; zoo eval on a saved policy."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zoo.bench.leaderboard import FORMATS, write_leaderboards
from zoo.cli import EXIT_RUNS_FAILED, app
from zoo.engine.pretrain import cached_keys

pytestmark = pytest.mark.slow

PLUGIN_MODULE = "zoo_bench_test_plugin"
PLUGIN_SOURCE = '''
"""A user module registering a component from outside the package (passed to zoo with --plugin)."""
from dataclasses import dataclass

from zoo.protocols import Rule
from zoo.registry import register


@register("rule", "bench_test_flaky")
class FlakyRule(Rule):
    """MLE's fixed model; update() raises for the run whose seed is fail_seed (a deliberately failing run)."""

    @dataclass
    class Config:
        every: int = 100
        fail_seed: int = -1

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.every = cfg.every

    def update(self, ctx):
        if ctx.extras["config"].seed == self.cfg.fail_seed:
            raise RuntimeError("deliberate failure of the bench test plugin")
        return {"flaky/updates": 1.0}
'''

# A recipe given on the command line: MBPO (so its ensemble equals mopo's and mbpo's) with the plugin's rule.
RECIPE = 'base = "mbpo"\nrule = { name = "bench_test_flaky", every = 100, fail_seed = 1 }\n'

TINY = [
    "steps=200",
    "rollout.batch=400",
    "rollout.every=100",
    "eval.every=100",
    "eval.episodes=2",
    "eval.last_k=2",
    "dynamics.max_epochs=2",
    "dynamics.hidden=[64, 64]",
    "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]",
    "learner.hidden=[64, 64]",
    "log_every=50",
    "checkpoint_every=50",
]


def write_plugin(root: Path) -> tuple[Path, Path]:
    """(directory to put on PYTHONPATH, recipe file)."""
    plugin_dir = root / "plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    recipe = root / "flaky.toml"
    recipe.write_text(RECIPE)
    return plugin_dir, recipe


def bench_args(out: Path, recipe: Path, *extra: str) -> list[str]:
    args = ["bench", "--suite", "quick", "--tasks", "pendulum-random", "--algos", f"mopo,mbpo,{recipe}",
            "--seeds", "2", "--preset", "none", "--plugin", PLUGIN_MODULE, "--out", str(out), "--no-live"]
    for item in TINY:
        args += ["--set", item]
    return [*args, *extra]


def zoo_env(plugin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_dir), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "200"
    return env


def zoo_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "zoo.cli", *args]


def run_zoo(args: list[str], plugin_dir: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        zoo_command(args), env=zoo_env(plugin_dir), capture_output=True, text=True, timeout=timeout
    )


def results_of(out: Path) -> dict[str, dict]:
    """run id (relative to runs/) -> result.json."""
    return {
        p.parent.relative_to(out / "runs").as_posix(): json.loads(p.read_text())
        for p in sorted((out / "runs").rglob("result.json"))
    }


def errors_of(out: Path) -> dict[str, dict]:
    return {
        p.parent.relative_to(out / "runs").as_posix(): json.loads(p.read_text())
        for p in sorted((out / "runs").rglob("error.json"))
    }



def _snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {p.as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "runs").rglob("result.json")}


def _counts(output: str) -> tuple[int, int, int]:
    found = re.search(r"(\d+) run\(s\) trained, (\d+) already finished, (\d+) failed", output)
    assert found, output
    return int(found[1]), int(found[2]), int(found[3])


def test_local_sweep_interrupt_resume_share_fail_retry_and_leaderboard(quick_env: Path, tmp_path: Path) -> None:
    plugin_dir, recipe = write_plugin(tmp_path)
    out = tmp_path / "results"
    args = bench_args(out, recipe, "--workers", "2")

    # 1. Start the sweep and stop it with SIGTERM (what `timeout`, `docker stop` and SLURM send; the same clean stop
    # as Ctrl-C) once the first run has finished.
    proc = subprocess.Popen(
        zoo_command(args), env=zoo_env(plugin_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while not list((out / "runs").rglob("result.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    os.kill(proc.pid, signal.SIGTERM)
    first_output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, first_output
    assert "run the same command again to resume" in first_output
    finished_first = _snapshot(out)
    assert 1 <= len(finished_first) < 6, first_output

    # 2. The same command resumes: finished runs are skipped (their files untouched), the rest complete. One run
    # fails on purpose, so the sweep exits with EXIT_RUNS_FAILED.
    resumed = run_zoo(args, plugin_dir)
    assert resumed.returncode == EXIT_RUNS_FAILED, resumed.stdout + resumed.stderr
    assert "1 run(s) failed" in resumed.stderr
    trained, skipped, failed = _counts(resumed.stdout)
    assert skipped == len(finished_first) and trained + skipped == 5 and failed == 1, resumed.stdout
    after = _snapshot(out)
    for path, (data, mtime) in finished_first.items():
        assert after[path] == (data, mtime), f"{path} was rerun"

    # Every run finished except the plugin recipe's seed 1, which failed on purpose and says so.
    results, errors = results_of(out), errors_of(out)
    assert len(results) == 5 and len(errors) == 1
    (failed_id, error), = errors.items()
    assert failed_id.startswith("quick/pendulum-random/flaky/") and failed_id.endswith("seed1")
    assert "deliberate failure of the bench test plugin" in error["error"] and error["traceback"]
    assert {r["algo"] for r in results.values()} == {"mopo", "mbpo", "flaky"}  # the plugin recipe ran (seed 0)
    assert all(r["steps"] == 200 and r["status"] == "finished" for r in results.values())

    # One ensemble per seed, pretrained once before the runs, shared by mopo, mbpo and the plugin recipe.
    keys = cached_keys(out / "cache")
    assert len(keys) == 2
    assert all(r["pretrain_cached"] is True and r["pretrain_key"] in keys for r in results.values())
    by_seed = {}
    for r in results.values():
        by_seed.setdefault(r["seed"], set()).add(r["pretrain_key"])
    assert all(len(v) == 1 for v in by_seed.values()) and len(by_seed) == 2

    # The leaderboard of the sweep: every format, the failure reported, the plugin recipe a column.
    board = out / "leaderboard"
    for fmt in FORMATS:
        assert (board / f"quick.{fmt}").is_file(), fmt
    md = (board / "quick.md").read_text()
    assert "| task | flaky | mbpo | mopo |" in md
    assert "failed runs of flaky (not in the table): pendulum-random seed 1: RuntimeError" in md
    assert re.search(r"\| pendulum-random \| \**-?\d+\.\d \(1\)\** \|", md), md
    assert (board / "curves" / "quick").is_dir()

    # 3. --retry-failed reruns only the failed run (it fails again, deterministically).
    before_retry = _snapshot(out)
    error_file = out / "runs" / failed_id / "error.json"
    error_mtime = error_file.stat().st_mtime_ns
    retried = run_zoo([*args, "--retry-failed"], plugin_dir)
    assert retried.returncode == EXIT_RUNS_FAILED, retried.stdout + retried.stderr
    assert _counts(retried.stdout) == (0, 5, 1)
    assert error_file.stat().st_mtime_ns > error_mtime
    assert _snapshot(out) == before_retry

    # 4. zoo eval: the saved mopo policy of seed 0 again, under the d4rl-noisy suite's observation noise.
    (mopo_dir,) = [out / "runs" / rid for rid in results if "/mopo/" in rid and rid.endswith("seed0")]
    runner = CliRunner()
    noisy = runner.invoke(app, ["eval", str(mopo_dir), "--suite", "d4rl-noisy", "--episodes", "2"])
    assert noisy.exit_code == 0, noisy.output
    record = json.loads((mopo_dir / "evals" / "d4rl-noisy-2ep.json").read_text())
    assert record["noise"] == "relative_delta:0.05" and record["checkpoint_step"] == 200
    assert record["episodes"] == 2 and len(record["returns"]) == 2 and record["in_suite"] is False
    clean = runner.invoke(app, ["eval", str(mopo_dir), "--episodes", "2"])
    assert clean.exit_code == 0, clean.output
    clean_record = json.loads((mopo_dir / "evals" / "quick-2ep.json").read_text())
    assert clean_record["noise"] == "none" and clean_record["returns"] != record["returns"]

    # 5. Regenerating the leaderboard from results/runs rewrites the same bytes and retrains nothing.
    _, written = write_leaderboards(out, suites=["quick"], dest=tmp_path / "regenerated")
    for path in written:
        original = board / path.relative_to(tmp_path / "regenerated")
        assert path.read_bytes() == original.read_bytes(), path.name
    assert _snapshot(out) == before_retry


def _train_lines(run_dir: Path) -> dict[int, dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r for r in lines if r.get("kind") == "train"}


def test_a_population_sweep_resumes_as_a_population_and_matches_single_runs(quick_env: Path, tmp_path: Path) -> None:
    """--population 3 over 3 seeds of mopo: one job training the three runs together, stopped by SIGTERM (one
    checkpoint step for all three) and resumed as a population; its runs compute what --population 1 computes, up
    to the last bits of batched versus single reductions."""
    import torch

    from zoo.bench.populations import checkpoint_step

    def args(out: Path, population: str) -> list[str]:
        base = ["bench", "--suite", "quick", "--tasks", "pendulum-random", "--algos", "mopo", "--seeds", "3",
                "--preset", "none", "--out", str(out), "--no-live", "--workers", "1", "--population", population]
        for item in [*TINY, "steps=300"]:
            base += ["--set", item]
        return base

    out = tmp_path / "population"
    proc = subprocess.Popen(
        zoo_command(args(out, "3")), env=zoo_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    deadline = time.time() + 600
    while len(list((out / "runs").rglob("last.pt"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    os.kill(proc.pid, signal.SIGTERM)
    first_output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, first_output
    assert "started mopo pendulum-random seeds 0,1,2 (population of 3)" in first_output
    assert not list((out / "runs").rglob("result.json")), first_output  # the population stops together ...
    run_dirs = sorted(p.parent.parent for p in (out / "runs").rglob("last.pt"))
    steps = {checkpoint_step(d) for d in run_dirs}
    assert len(run_dirs) == 3 and len(steps) == 1 and 0 < steps.pop() < 300  # ... at one step

    resumed = run_zoo(args(out, "3"), tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "started mopo pendulum-random seeds 0,1,2 (population of 3)" in resumed.stdout  # resumed together
    assert _counts(resumed.stdout) == (3, 0, 0)
    single = run_zoo(args(tmp_path / "single", "1"), tmp_path)
    assert single.returncode == 0, single.stdout + single.stderr
    assert _counts(single.stdout) == (3, 0, 0) and "population of" not in single.stdout

    together, alone = results_of(out), results_of(tmp_path / "single")
    assert sorted(together) == sorted(alone) and len(together) == 3  # the same run directories
    for run_id, result in together.items():
        seed = result["seed"]
        population_dir, single_dir = out / "runs" / run_id, tmp_path / "single" / "runs" / run_id
        assert result["steps"] == alone[run_id]["steps"] == 300 and result["status"] == "finished"
        assert json.loads((population_dir / "environment.json").read_text())["population"] == [0, 1, 2]
        assert json.loads((single_dir / "environment.json").read_text())["population"] == [seed]
        lines, reference = _train_lines(population_dir), _train_lines(single_dir)
        assert sorted(lines) == sorted(reference) and len(lines) == 6
        for step, line in lines.items():
            for key in ("critic_loss", "actor_loss", "alpha", "q_mean", "log_pi"):
                assert line[key] == pytest.approx(reference[step][key], rel=1e-4, abs=1e-6), (run_id, step, key)
        mine = torch.load(population_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
        theirs = torch.load(single_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
        assert mine["step"] == theirs["step"] == 300
        for net in ("actor", "critic"):
            torch.testing.assert_close(mine["learner"][net], theirs["learner"][net], rtol=1e-4, atol=1e-5)
