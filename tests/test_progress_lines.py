"""Plain progress lines when stdout is not a terminal (issue 12, item 1): ``zoo train`` writes one flushed line per
evaluation (and at least every minute) that a file redirect sees before the run ends; ``zoo bench`` one line per
run started, finished or failed, with the overall counts and the ETA."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

import zoo.engine.trainer as trainer_module
from tests.test_bench_scheduler import ScriptedExecutor
from zoo.bench.grid import expand_grid
from zoo.bench.jobs import WorkerEnv
from zoo.bench.progress import SweepView
from zoo.bench.scheduler import run_plan

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^mopo pendulum-random step (\d+)/(\d+) \(\d+%\) · elapsed \d+:\d\d · ETA \d+:\d\d · score -?\d+\.\d · "
    r"return -?\d+\.\d · critic_loss \S+ · actor_loss \S+ · alpha \S+$"
)


def test_plain_lines_at_each_evaluation_and_every_minute(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(trainer_module.time, "time", lambda: now[0])
    progress = trainer_module._Progress(1000, 0, enabled=True, label="mopo task", plain=True)
    with progress:
        now[0] += 30
        progress.advance(100)  # 30 s: nothing yet
        progress.losses = {"critic_loss": 2.5, "actor_loss": -1.25, "q_mean": 3.0}
        progress.evaluated(250, 12.34, -456.78)
        now[0] += 61
        progress.advance(299)  # not a multiple of 100: not even a clock read
        progress.advance(300)  # 61 s after the last line
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "mopo task step 250/1000 (25%) · elapsed 0:30 · ETA 1:30 · score 12.3 · return -456.8 · critic_loss 2.5 · "
        "actor_loss -1.25",
        "mopo task step 300/1000 (30%) · elapsed 1:31 · ETA 3:32 · score 12.3 · return -456.8 · critic_loss 2.5 · "
        "actor_loss -1.25",
    ]
    silent = trainer_module._Progress(1000, 0, enabled=False, label="x", plain=True)  # --no-progress
    with silent:
        silent.evaluated(250, 1.0, 1.0)
    assert capsys.readouterr().out == ""


def test_bench_prints_a_line_per_run_started_and_finished_with_counts_and_eta(tmp_path: Path) -> None:
    plan = expand_grid(["quick"], ["mopo", "mbpo"], [0, 1], tasks=["pendulum-random"])
    stream = io.StringIO()
    run_plan(plan, tmp_path, ScriptedExecutor(tmp_path), WorkerEnv(), SweepView(Console(file=stream, width=80)))
    lines = stream.getvalue().splitlines()
    started = [line for line in lines if line.startswith("started ")]
    done = [line for line in lines if line.startswith("done ")]
    assert len(started) == 4 and len(done) == 4
    assert {re.sub(r" ·.*", "", line[len("started "):]) for line in started} == {
        f"{algo} pendulum-random seed {seed}" for algo in ("mopo", "mbpo") for seed in (0, 1)
    }
    finished = [int(re.search(r"· (\d)/4 done, \d running, 0 failed, elapsed \d+:\d\d, ETA ", line).group(1))
                for line in done]
    assert finished == [1, 2, 3, 4]


@pytest.mark.slow
def test_zoo_train_into_a_file_shows_progress_lines_before_it_ends(quick_env: Path, tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    cmd = [sys.executable, "-m", "zoo.cli", "train", "--algo", "mopo", "--task", "pendulum-random", "--steps", "800",
           "--out", str(tmp_path / "out"), "--set", "eval.every=200", "--set", "eval.episodes=2",
           "--set", "rollout.batch=400", "--set", "rollout.every=200", "--set", "dynamics.max_epochs=2",
           "--set", "log_every=100", "--set", "learner.hidden=[64, 64]", "--set", "dynamics.hidden=[64, 64]",
           "--set", "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        seen_while_running = False
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline:
            if any(LINE.match(line) for line in log.read_text().splitlines()):
                seen_while_running = proc.poll() is None
                break
            time.sleep(0.2)
        assert proc.wait(timeout=240) == 0, log.read_text()
    text = log.read_text()
    lines = [line for line in text.splitlines() if LINE.match(line)]
    assert seen_while_running, text
    assert [int(LINE.match(line).group(1)) for line in lines] == [200, 400, 600, 800]  # one per evaluation
    assert "\x1b[" not in text  # no terminal control sequences in a file
    assert re.search(r"^fitting dynamics: started \(elapsed 0:00\)\nfitting dynamics: done, epoch 2 holdout ", text,
                     re.MULTILINE)  # pretraining reports too
