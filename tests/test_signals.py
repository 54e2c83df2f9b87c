"""Signals, locks and orphans through real processes (issue 11, items 2, 4 and 9; the ``slow`` tier). SIGTERM's
clean stop of ``zoo train`` and the resumed run's wall time are in tests/test_train_e2e.py.

- A second ``zoo train`` on a run directory that another one writes is refused, naming its pid and host; that
  first one, started with SIGINT ignored (a background job of a non-interactive shell), still stops on Ctrl-C
  while it pretrains.
- A local-executor worker dies with its driver, even when the driver is killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def train_args(out: Path, steps: int, overrides: list[str]) -> list[str]:
    args = [sys.executable, "-m", "zoo.cli", "train", "--algo", "mbpo", "--task", "pendulum-random", "--steps",
            str(steps), "--out", str(out), "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    return args


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended early: {proc.communicate()[0]}")
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_second_writer_refused_and_ctrl_c_stops_pretraining_with_sigint_ignored(
    quick_env: Path, tmp_path: Path
) -> None:
    from zoo.tasks.task import get_task

    get_task("pendulum-random").load()
    env = {**os.environ, "ZOO_DATA": str(quick_env), "PYTHONPATH": str(REPO)}
    # The recipe's full-size ensemble with a long patience: pretraining takes far longer than this test waits.
    args = train_args(tmp_path, 100_000, ["dynamics.max_epochs=5000", "dynamics.patience=5000"])
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # what a non-interactive shell's `&` does
    )
    wait_for(lambda: bool(list(tmp_path.rglob("config.toml"))), 120, proc)
    (config,) = list(tmp_path.rglob("config.toml"))
    before = {p.name: p.read_bytes() for p in config.parent.iterdir() if p.is_file() and p.name != ".lock"}

    # A second writer on the same run directory is refused, in one line naming the owner; it changes nothing.
    second = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert f"is being written by another process (pid {proc.pid} on host" in second.stderr
    assert {p.name: p.read_bytes() for p in config.parent.iterdir() if p.is_file() and p.name != ".lock"} == before

    proc.send_signal(signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("Ctrl-C was ignored during pretraining") from None
    assert proc.returncode == 130, output
    assert "interrupted before training started" in output


DRIVER = textwrap.dedent(
    """
    import sys, time
    from zoo.bench.executors import LocalExecutor
    from zoo.bench.jobs import WorkerEnv
    from tests.test_signals import sleepy_job

    executor = LocalExecutor(LocalExecutor.Config(workers=1, threads=1))
    executor.start(WorkerEnv())
    executor.submit(sleepy_job, sys.argv[1])
    time.sleep(600)
    """
)


def sleepy_job(env: object, pid_file: str) -> None:
    """A job that outlives any test unless its worker is ended: it writes its pid, then sleeps."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(300)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaps counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_worker_dies_when_its_driver_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(pid_file)], env=env, cwd=REPO)
    try:
        wait_for(lambda: pid_file.is_file() and pid_file.read_text() != "", 120, driver)
        worker = int(pid_file.read_text())
        assert process_alive(worker)
        driver.kill()  # SIGKILL: no cleanup code of the driver runs
        driver.wait(timeout=10)
        deadline = time.time() + 15
        while process_alive(worker) and time.time() < deadline:
            time.sleep(0.2)
        assert not process_alive(worker), "the worker outlived its driver"
    finally:
        if driver.poll() is None:
            driver.kill()
        if pid_file.is_file() and pid_file.read_text() and process_alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
