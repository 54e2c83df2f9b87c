"""End-to-end training runs on tiny budgets (the ``slow`` tier): determinism, the shared pretraining
cache, divergence handling, Ctrl-C and resume, and errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.engine.pretrain import cached_keys
from zoo.engine.rollout import DivergenceError
from zoo.engine.run import train_run

pytestmark = pytest.mark.slow

TINY = [
    "rollout.batch=400",
    "rollout.every=200",
    "eval.every=200",
    "eval.episodes=2",
    "eval.last_k=2",
    "dynamics.max_epochs=2",
    "dynamics.hidden=[64, 64]",
    "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]",
    "learner.hidden=[64, 64]",
    "log_every=100",
    "checkpoint_every=200",
]


def metrics_without_timing(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("sps", None)
        out.append(record)
    return out


def run_dir_of(out: Path, algo: str, task: str = "pendulum-random") -> Path:
    (result,) = list((out / "runs" / "quick" / task / algo).glob("*/seed*/result.json"))
    return result.parent


def test_same_seed_same_metrics_and_result_files(quick_env: Path, tmp_path: Path) -> None:
    a = train_run("mopo", "pendulum-random", seed=3, out=tmp_path / "a", overrides=TINY, steps=400, progress=False)
    b = train_run("mopo", "pendulum-random", seed=3, out=tmp_path / "b", overrides=TINY, steps=400, progress=False)
    da, db = run_dir_of(tmp_path / "a", "mopo"), run_dir_of(tmp_path / "b", "mopo")
    assert metrics_without_timing(da) == metrics_without_timing(db)
    assert a["score"] == b["score"] and a["return"] == b["return"]
    for key in ("task", "suite", "algo", "seed", "score", "best", "return", "steps", "wall_s", "config_hash",
                "dataset_fingerprint", "loader", "eval_env", "mujoco", "noise"):
        assert key in a, key
    assert a["suite"] == "quick" and a["steps"] == 400 and a["score_evals"] == 2
    assert (da / "config.toml").is_file() and (da / "checkpoints" / "last.pt").is_file()
    env = json.loads((da / "environment.json").read_text())
    assert "torch" in env["versions"] and env["git_revision"]
    c = train_run("mopo", "pendulum-random", seed=4, out=tmp_path / "a", overrides=TINY, steps=400, progress=False)
    assert c["return"] != a["return"]


def test_mopo_and_mbpo_share_one_pretrained_ensemble(quick_env: Path, tmp_path: Path) -> None:
    mopo = train_run("mopo", "pendulum-random", seed=0, out=tmp_path, overrides=TINY, steps=200, progress=False)
    mbpo = train_run("mbpo", "pendulum-random", seed=0, out=tmp_path, overrides=TINY, steps=200, progress=False)
    assert mopo["pretrain_cached"] is False and mbpo["pretrain_cached"] is True
    assert mopo["pretrain_key"] == mbpo["pretrain_key"]
    assert cached_keys(tmp_path / "cache") == [mopo["pretrain_key"]]
    # MOBILE's dynamics section differs (max_epochs 30 vs none): its own entry; another seed: another entry.
    no_cap = [o for o in TINY if not o.startswith("dynamics.max_epochs")]
    train_run("mobile", "pendulum-random", seed=0, out=tmp_path, overrides=no_cap, steps=200, progress=False)
    train_run("mopo", "pendulum-random", seed=1, out=tmp_path, overrides=TINY, steps=200, progress=False)
    assert len(cached_keys(tmp_path / "cache")) == 3


@pytest.fixture
def exploding_penalty():
    """A target-stage penalty (registered like a user plugin) that blows the critic targets up after step 150."""
    from zoo.registry import REGISTRY

    @REGISTRY.register("penalty", "test_explode_after_150")
    class ExplodeAfter150:
        """Test-only: −1e12 on model rows after step 150."""

        stage = "target"

        def __call__(self, batch, learner, ctx):
            scale = -1e12 if ctx.step > 150 else 0.0
            return batch.is_model * scale

    yield "test_explode_after_150"
    REGISTRY._items["penalty"].pop("test_explode_after_150", None)


def test_diverging_critic_stops_and_keeps_last_good_checkpoint(
    quick_env: Path, tmp_path: Path, exploding_penalty: str
) -> None:
    overrides = [*TINY, f"penalty.name={exploding_penalty}", "log_every=50", "checkpoint_every=50"]
    with pytest.raises(DivergenceError, match="diverged by step 200"):
        train_run("mbpo", "pendulum-random", seed=0, out=tmp_path, overrides=overrides, steps=1000, progress=False)
    (err,) = list((tmp_path / "runs").rglob("error.json"))
    run_dir = err.parent
    info = json.loads(err.read_text())
    assert "DivergenceError" in info["error"] and "last good checkpoint" in info["error"]
    assert not (run_dir / "result.json").exists()
    import torch

    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["step"] == 150


def test_unknown_component_and_missing_dataset_errors(quick_env: Path, tmp_path: Path) -> None:
    from zoo.data.errors import DatasetUnavailableError
    from zoo.registry import UnknownComponentError

    with pytest.raises(UnknownComponentError, match="registered penalty components"):
        train_run("mopo", "pendulum-random", out=tmp_path, overrides=["penalty.name=nosuch"], progress=False)
    with pytest.raises(DatasetUnavailableError, match="download"):
        train_run("mopo", "hopper-medium-v2", out=tmp_path, steps=10, progress=False)


def test_cli_sigterm_then_resume(quick_env: Path, tmp_path: Path) -> None:
    """SIGTERM (what `timeout`, `docker stop` and SLURM send) is Ctrl-C's clean stop: it finishes the current step,
    writes a checkpoint although periodic checkpoints are off, and exits 130; --resume completes the run, and its
    wall_s counts both segments. (Both signals share one handler, zoo.engine.trainer.STOP_SIGNALS.)"""
    # Collect the dataset in this process first, so the subprocess starts training at once.
    from zoo.tasks.task import get_task

    get_task("pendulum-random").load()
    args = [sys.executable, "-m", "zoo.cli", "train", "--algo", "mbpo", "--task", "pendulum-random", "--steps",
            "3000", "--out", str(tmp_path), "--no-progress"]
    for o in [*TINY, "log_every=50", "checkpoint_every=0"]:
        args += ["--set", o]
    env = {**os.environ, "ZOO_DATA": str(quick_env)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    metrics = None
    while time.time() < deadline:
        found = list((tmp_path / "runs").rglob("metrics.jsonl")) if (tmp_path / "runs").exists() else []
        if found and sum(1 for ln in found[0].read_text().splitlines() if '"kind": "train"' in ln) >= 2:
            metrics = found[0]
            break
        time.sleep(0.5)
    assert metrics is not None, "training did not start"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "SIGTERM" in output and "--resume" in output
    run_dir = metrics.parent
    import torch

    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    stopped_at = checkpoint["step"]
    assert 0 < stopped_at < 3000 and not (run_dir / "result.json").exists()
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming at step {stopped_at}" in done.stdout
    result = json.loads((run_dir / "result.json").read_text())
    assert result["steps"] == 3000 and result["wall_s"] > checkpoint["wall_s"] > 0
    steps = [json.loads(ln)["step"] for ln in metrics.read_text().splitlines() if '"kind": "train"' in ln]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == 3000


def test_divergence_after_evaluations_is_recorded_with_its_score_and_marked(
    quick_env: Path, tmp_path: Path, exploding_penalty: str
) -> None:
    """A run the guard stops after it has been evaluated is finished-with-divergence: result.json holds the score
    of its last evaluations and ``diverged``; the leaderboard keeps the seed in the cell and marks it."""
    from zoo.bench.leaderboard import build_leaderboards, render_markdown, render_tex
    from zoo.bench.leaderboard.text import DIVERGED_MARK
    from zoo.results import load_runs

    overrides = [*TINY, f"penalty.name={exploding_penalty}", "log_every=50", "eval.every=50", "eval.last_k=2"]
    result = train_run("mbpo", "pendulum-random", seed=0, out=tmp_path, overrides=overrides, steps=1000,
                       progress=False)
    (path,) = list((tmp_path / "runs").rglob("result.json"))
    on_disk = json.loads(path.read_text())
    assert on_disk == json.loads(json.dumps(result, default=str))
    assert result["diverged"] is True and result["status"] == "diverged"
    assert "diverged by step 200" in result["divergence"]
    assert not (path.parent / "error.json").exists()
    evals = [json.loads(ln) for ln in (path.parent / "metrics.jsonl").read_text().splitlines() if '"eval"' in ln]
    assert [e["step"] for e in evals] == [50, 100, 150]  # the guard stops at the train line of step 200
    assert result["score"] == pytest.approx((evals[1]["score"] + evals[2]["score"]) / 2) and result["score_evals"] == 2
    (board,) = build_leaderboards(load_runs(tmp_path), reps=100, with_curves=False)
    cell = board.cells[("pendulum-random", "mbpo")]
    assert cell.n == 1 and cell.diverged == (0,) and cell.mean == pytest.approx(result["score"])
    md = render_markdown([board])
    assert f"(1){DIVERGED_MARK}" in md and "stopped by the divergence guard" in md
    assert "(1)\\dag{}" in render_tex([board])


def test_cli_seed_list_trains_one_population_whose_members_are_the_single_runs(quick_env: Path, tmp_path: Path) -> None:
    """`zoo train --seed-list 0,1` trains one population: two ordinary run directories (the single runs' config hash),
    each with "population": 2 in its result, and seed 1's run equals `zoo train --seed 1` (tests/test_population.py
    has the exact comparisons; here: through the CLI, with evaluation)."""
    import torch

    from zoo.cli import main

    def zoo(*args: str, out: Path) -> None:
        argv = ["zoo", "train", "--algo", "mopo", "--task", "pendulum-random", "--steps", "400", "--out", str(out),
                "--no-progress", *args]
        for o in TINY:
            argv += ["--set", o]
        old = sys.argv
        sys.argv = argv
        try:
            with pytest.raises(SystemExit) as done:
                main()
            assert done.value.code in (0, None)
        finally:
            sys.argv = old

    zoo("--seed-list", "0,1", out=tmp_path / "pop")
    zoo("--seed", "1", out=tmp_path / "single")
    pop = {int(p.parent.name[4:]): p.parent for p in (tmp_path / "pop" / "runs").rglob("result.json")}
    single = next((tmp_path / "single" / "runs").rglob("result.json")).parent
    assert sorted(pop) == [0, 1] and pop[1].parent.name == single.parent.name  # the same config hash
    member, alone = (json.loads((d / "result.json").read_text()) for d in (pop[1], single))
    assert member["population"] == 2 and alone["population"] == 1
    assert member["score"] == pytest.approx(alone["score"], abs=0.5)
    a, b = (torch.load(d / "checkpoints" / "last.pt", weights_only=False)["learner"]["actor"] for d in (pop[1], single))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
