"""The scheduler's bookkeeping with a scripted in-process executor (no training): pretraining before the runs
that need it and once per distinct ensemble, finished runs skipped, failures recorded without stopping the
others, a dead worker's jobs queued once more, a failed pretraining failing its runs, Ctrl-C."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from zoo.bench.grid import Plan, expand_grid
from zoo.bench.jobs import WorkerEnv
from zoo.bench.progress import SweepView
from zoo.bench.scheduler import SweepInterrupted, run_plan
from zoo.engine.run import RunId


class ScriptedExecutor:
    """Runs nothing: completes each job at once with the outcome its script names (default: success)."""

    slots = 2
    returns_files = False

    def __init__(self, out: Path, script: dict[str, list[BaseException]] | None = None) -> None:
        self.out = out
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.calls: list[tuple[str, str]] = []
        self.restarts = 0
        self.interrupted = False

    def describe(self) -> str:
        return "scripted executor"

    def start(self, env: WorkerEnv) -> None:
        pass

    def submit(self, fn: Any, payload: dict[str, Any]) -> cf.Future:
        rid = payload["run_id"]
        name = f"{fn.__name__}:{rid['algo']}:seed{rid['seed']}"
        self.calls.append((fn.__name__, name))
        fut: cf.Future = cf.Future()
        planned = self.script.get(name)
        if planned:
            fut.set_exception(planned.pop(0))
        elif fn.__name__ == "pretrain_job":
            fut.set_result({"key": "k", "cached": False, "wall_s": 0.0})
        else:  # what train_run leaves behind
            run_dir = RunId(**rid).path(self.out)
            run_dir.mkdir(parents=True, exist_ok=True)
            result = {
                "task": rid["task"],
                "suite": rid["suite"],
                "algo": rid["algo"],
                "seed": rid["seed"],
                "score": 1.0,
                "steps": 10,
                "wall_s": 0.1,
            }
            (run_dir / "result.json").write_text(json.dumps(result))
            fut.set_result({"result": result, "files": {}})
        return fut

    def interrupt(self) -> None:
        self.interrupted = True

    def restart(self) -> None:
        self.restarts += 1

    def shutdown(self, wait: bool = True) -> None:
        pass


def quiet_view() -> SweepView:
    return SweepView(Console(file=io.StringIO(), width=200), live=False)


@pytest.fixture
def plan() -> Plan:
    return expand_grid(["quick"], ["mopo", "mbpo"], [0, 1], tasks=["pendulum-random"])


def test_pretraining_once_and_first_finished_runs_skipped(plan: Plan, tmp_path: Path) -> None:
    done = next(s for s in plan.runs if s.algo == "mopo" and s.seed == 1)
    done.run_dir(tmp_path).mkdir(parents=True)
    (done.run_dir(tmp_path) / "result.json").write_text("{}")
    ex = ScriptedExecutor(tmp_path)
    report = run_plan(plan, tmp_path, ex, WorkerEnv(), quiet_view())
    kinds = [k for k, _ in ex.calls]
    assert kinds == ["pretrain_job", "pretrain_job", "train_job", "train_job", "train_job"]
    assert [s.id for s in report.skipped] == [done.id] and len(report.finished) == 3 and not report.failed
    for spec in plan.runs:  # every run knows its leaderboard column
        assert json.loads((spec.run_dir(tmp_path) / "bench.json").read_text())["label"] == spec.label


def test_event_lines_print_sweep_labels_and_messages_verbatim(tmp_path: Path) -> None:
    """Sweep labels and error messages contain square brackets, which rich would read as markup tags."""
    plan = expand_grid(["quick"], ["mopo"], [0], sweep={"penalty.coef": ["2.0"]}, tasks=["pendulum-random"])
    (spec,) = plan.runs
    ex = ScriptedExecutor(tmp_path, {"train_job:mopo:seed0": [RuntimeError("shape [E, B] != [7, 256]")]})
    stream = io.StringIO()
    run_plan(plan, tmp_path, ex, WorkerEnv(), SweepView(Console(file=stream, width=200), live=False))
    assert spec.label == "mopo[penalty.coef=2.0]"
    assert "failed mopo[penalty.coef=2.0] pendulum-random seed 0: RuntimeError: shape [E, B] != [7, 256]" in (
        stream.getvalue()
    )


def test_failures_are_recorded_and_the_sweep_goes_on(plan: Plan, tmp_path: Path) -> None:
    script = {
        "train_job:mopo:seed0": [RuntimeError("model exploded")],
        "train_job:mbpo:seed0": [BrokenProcessPool("worker died")],  # once: queued again, then fine
        "train_job:mbpo:seed1": [BrokenProcessPool("worker died"), BrokenProcessPool("worker died again")],
    }
    ex = ScriptedExecutor(tmp_path, script)
    report = run_plan(plan, tmp_path, ex, WorkerEnv(), quiet_view())
    by_id = {s.algo + str(s.seed): s for s in plan.runs}
    assert {s.id for s in report.finished} == {by_id["mopo1"].id, by_id["mbpo0"].id}
    assert set(report.failed) == {by_id["mopo0"].id, by_id["mbpo1"].id}
    error = json.loads((by_id["mopo0"].run_dir(tmp_path) / "error.json").read_text())
    assert error["error"] == "RuntimeError: model exploded" and "model exploded" in error["traceback"]
    assert "worker process died twice" in report.failed[by_id["mbpo1"].id]
    assert ex.restarts == 3  # each broken pool is replaced
    # A second session skips the finished runs and reports the failed ones without rerunning them ...
    again = ScriptedExecutor(tmp_path)
    report = run_plan(plan, tmp_path, again, WorkerEnv(), quiet_view())
    assert again.calls == [] and len(report.skipped) == 2 and len(report.failed_before) == 2
    # ... unless asked to retry them (from scratch: no resume).
    retry = ScriptedExecutor(tmp_path)
    report = run_plan(plan, tmp_path, retry, WorkerEnv(), quiet_view(), retry_failed=True)
    assert sorted(n for _, n in retry.calls) == [
        "pretrain_job:mbpo:seed1",
        "pretrain_job:mopo:seed0",
        "train_job:mbpo:seed1",
        "train_job:mopo:seed0",
    ]
    assert len(report.finished) == 2 and not report.failed


def test_a_run_locked_by_another_process_is_failed_here_but_its_directory_untouched(plan: Plan, tmp_path: Path) -> None:
    from zoo.engine.run import RunLockedError

    locked = "is being written by another process (pid 12 on host h)"
    ex = ScriptedExecutor(tmp_path, {"train_job:mopo:seed0": [RunLockedError(f"that run {locked}")]})
    report = run_plan(plan, tmp_path, ex, WorkerEnv(), quiet_view())
    (spec,) = [s for s in plan.runs if s.algo == "mopo" and s.seed == 0]
    assert locked in report.failed[spec.id] and len(report.finished) == 3
    assert not (spec.run_dir(tmp_path) / "error.json").exists()  # its owner writes its result or error


def test_a_failed_pretraining_fails_only_its_runs(plan: Plan, tmp_path: Path) -> None:
    ex = ScriptedExecutor(tmp_path, {"pretrain_job:mopo:seed0": [ValueError("bad ensemble config")]})
    report = run_plan(plan, tmp_path, ex, WorkerEnv(), quiet_view())
    failed = {s.algo + str(s.seed) for s in plan.runs if s.id in report.failed}
    assert failed == {"mopo0", "mbpo0"}  # the two runs sharing the seed-0 ensemble
    assert all("pretraining failed: ValueError: bad ensemble config" in e for e in report.failed.values())
    assert len(report.finished) == 2


def test_ctrl_c_stops_without_recording_failures(plan: Plan, tmp_path: Path) -> None:
    class InterruptingView(SweepView):
        def poll(self, out: Path) -> None:
            raise KeyboardInterrupt

    class SlowExecutor(ScriptedExecutor):
        def submit(self, fn: Any, payload: dict[str, Any]) -> cf.Future:
            if fn.__name__ == "train_job":
                self.calls.append((fn.__name__, payload["run_id"]["algo"]))
                fut: cf.Future = cf.Future()
                fut.set_exception(KeyboardInterrupt())  # what a run stopped by Ctrl-C reports
                return fut
            return super().submit(fn, payload)

    ex = SlowExecutor(tmp_path)
    with pytest.raises(SweepInterrupted, match="run the same command again"):
        run_plan(plan, tmp_path, ex, WorkerEnv(), InterruptingView(Console(file=io.StringIO()), live=False))
    assert ex.interrupted
    assert not list(tmp_path.rglob("error.json")) and not list(tmp_path.rglob("result.json"))
