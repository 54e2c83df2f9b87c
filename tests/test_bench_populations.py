"""Populations in ``zoo bench`` (issue 15, item 6): which runs share a train job (``--population auto|N|1``: at
most N runs of one suite, task, recipe and population signature, in seed order; recipes without population support
alone; resumable runs only with runs whose checkpoints stopped at the same step), the scheduler's handling of a
population job (after the pretraining of every member; a failed member fails alone; a failure of the whole job
fails every member; Ctrl-C; --retry-failed per run) with a scripted executor, and the dry run's lines. The end-to-end
sweep comparing a population with single runs is in test_bench_sweep.py (slow tier)."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from tests.test_bench_scheduler import ScriptedExecutor, quiet_view
from zoo.bench.grid import Plan, RunSpec, expand_grid
from zoo.bench.jobs import WorkerEnv
from zoo.bench.populations import (
    AUTO_MAX_POPULATION,
    auto_population,
    checkpoint_step,
    group_runs,
    parse_population,
)
from zoo.bench.progress import SweepView
from zoo.bench.scheduler import SweepInterrupted, run_plan
from zoo.cli import app
from zoo.engine.population import check_population
from zoo.engine.run import RunId, RunLockedError


def seeds_of(groups: list[Any]) -> list[list[int]]:
    return [g.seeds for g in groups]


def mopo_plan(seeds: list[int], **kwargs: Any) -> Plan:
    return expand_grid(["quick"], ["mopo"], seeds, tasks=["pendulum-random"], **kwargs)


# -- the grouping rule -------------------------------------------------------------------------------------------


def test_population_option_values() -> None:
    assert parse_population("auto") == "auto" and parse_population(None) == "auto"
    assert parse_population("AUTO") == "auto" and parse_population("+2") == 2
    assert parse_population("3") == 3 and parse_population(3) == 3 and parse_population("1") == 1
    for bad in ("0", "-2", "two", "2.5", "", "3x"):
        with pytest.raises(ValueError, match=r"--population .*expected auto, or a whole number >= 1"):
            parse_population(bad)


def test_auto_is_8_on_the_cpu_and_what_the_least_free_gpu_holds_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import zoo.bench.executors as executors
    import zoo.bench.sweep as sweep

    assert AUTO_MAX_POPULATION == 8
    assert auto_population("cpu") == 8 and auto_population("cpu", [1.0], 50.0, 4) == 8  # no GPU memory rule
    assert auto_population("cuda") == 8  # free memory unknown
    assert auto_population("cuda", [139.0], 1.4, 4) == 8  # a big GPU: capped at 8
    assert auto_population("cuda", [40.0, 16.0], 1.5, 2) == 4  # floor(0.9 * 16 / 2 / 1.5): the least free GPU decides
    assert auto_population("cuda", [2.0], 3.0, 1) == 1  # never below one run

    class Runner:  # what resolve_population reads of the local executor
        gpu_names = ["0", "1"]
        slots = 4

    free = {"0": 20.0, "1": 30.0}
    monkeypatch.setattr(executors, "gpu_free_memory_gb", lambda gpus: [free[g] for g in gpus])
    monkeypatch.setattr(sweep, "plan_gpu_memory_gb", lambda plan: 1.5)
    plan = mopo_plan([0])
    assert sweep.resolve_population("auto", "cuda", Runner(), plan) == 6  # 0.9 * 20 / (4 jobs / 2 GPUs) / 1.5
    assert sweep.resolve_population("auto", "cuda:1", Runner(), plan) == 4  # every job on GPU 1: 0.9 * 30 / 4 / 1.5
    # on the CPU: 8, or fewer so that every worker slot gets a job (ceil(runs / slots))
    assert sweep.resolve_population("auto", "cpu", Runner(), plan) == 1  # one run, 4 slots
    assert sweep.resolve_population("auto", "cpu", Runner(), mopo_plan(list(range(10)))) == 3  # ceil(10 / 4)
    assert sweep.resolve_population("auto", "cpu", Runner(), mopo_plan(list(range(40)))) == 8
    assert sweep.resolve_population("auto", "cpu", None, mopo_plan(list(range(10)))) == 8  # slots unknown
    assert auto_population("cpu", runs=96, slots=2) == 8 and auto_population("cpu", runs=8, slots=8) == 1
    assert sweep.resolve_population("3", "cuda", Runner(), plan) == 3
    assert sweep.resolve_population(1, "cpu", None, plan) == 1


def test_groups_of_at_most_n_in_seed_order_and_1_is_one_run_per_job() -> None:
    plan = mopo_plan([4, 0, 3, 1, 2])  # plan order follows the seed list
    groups = group_runs(plan.runs, 2)
    assert seeds_of(groups) == [[4], [0, 1], [2, 3]]  # chunks in seed order; jobs in the plan order of their first run
    assert all(g.resume and not g.alone for g in groups)
    assert len({g.id for g in groups}) == 3 and groups[0].id == plan.runs[0].id  # a single run's job id is its id
    assert groups[1].describe() == "mopo pendulum-random seeds 0,1 (population of 2)"
    assert groups[0].describe() == "mopo pendulum-random seed 4"
    assert seeds_of(group_runs(plan.runs, 8)) == [[0, 1, 2, 3, 4]]
    singles = group_runs(plan.runs, 1)
    assert [g.specs for g in singles] == [[spec] for spec in plan.runs]  # today's jobs, in plan order
    with pytest.raises(ValueError, match="population size"):
        group_runs(plan.runs, 0)


def test_recipes_without_population_support_always_train_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = expand_grid(["quick"], ["rombrl", "combo", "mopo"], [0, 1, 2], tasks=["pendulum-random"])
    groups = group_runs(plan.runs, 8)
    by_algo: dict[str, list[Any]] = {}
    for g in groups:
        by_algo.setdefault(g.specs[0].algo, []).append(g)
    assert seeds_of(by_algo["mopo"]) == [[0, 1, 2]] and by_algo["mopo"][0].alone == ""
    assert seeds_of(by_algo["combo"]) == [[0, 1, 2]]  # CQL supports populations
    assert seeds_of(by_algo["rombrl"]) == [[0], [1], [2]]
    assert by_algo["rombrl"][0].alone == "rule 'rombrl' has no population support"
    # A learner without population support (every shipped one has it now): what population_support says decides.
    from zoo.registry import REGISTRY

    monkeypatch.setattr(REGISTRY.get("learner", "td3bc"), "supports_population", False)
    td3bc = mopo_plan([0, 1], overrides=['learner.name="td3bc"'])
    groups = group_runs(td3bc.runs, 8)
    assert seeds_of(groups) == [[0], [1]] and groups[0].alone == "learner 'td3bc' has no population support"


def test_different_tasks_recipes_or_configs_never_share_a_population() -> None:
    plan = expand_grid(["quick"], ["mopo", "mbpo"], [0, 1], tasks=["pendulum-random", "pendulum-medium"])
    groups = group_runs(plan.runs, 8)
    assert len(groups) == 4 and all(g.size == 2 for g in groups)
    assert all(len({(s.task, s.algo) for s in g.specs}) == 1 for g in groups)
    # A swept key that is not population-able (network sizes): one population per sweep point ...
    hidden = mopo_plan([0, 1], sweep={"learner.hidden": ["[64, 64]", "[32, 32]"]})
    groups = group_runs(hidden.runs, 8)
    assert seeds_of(groups) == [[0, 1], [0, 1]] and all(len({s.label for s in g.specs}) == 1 for g in groups)
    # ... a population-able one (SAC's gamma) may share one: its points differ only in that key ...
    gamma = mopo_plan([0], sweep={"learner.gamma": ["0.99", "0.98"]})
    (group,) = group_runs(gamma.runs, 8)
    assert group.seeds == [0, 0] and len({s.cfg.hash() for s in group.specs}) == 2
    assert group.describe() == (
        "mopo[learner.gamma=0.99], mopo[learner.gamma=0.98] pendulum-random seeds 0,0 (population of 2)"
    )
    # ... as far as the engine takes it (check_population); what it refuses is split per config, never dropped.
    gamma = mopo_plan([0, 1], sweep={"learner.gamma": ["0.99", "0.98"]})
    groups = group_runs(gamma.runs, 8)
    assert sorted(s.id for g in groups for s in g.specs) == sorted(s.id for s in gamma.runs)
    for g in groups:
        check_population([s.cfg for s in g.specs])


def write_checkpoint(spec: RunSpec, out: Path, step: int | None) -> None:
    path = spec.run_dir(out) / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    if step is None:
        path.write_bytes(b"not a torch file")
    else:
        torch.save({"step": step, "learner": {"w": torch.zeros(3)}, "model_buffer": None}, path)


def test_resumable_runs_share_a_population_only_at_the_same_checkpoint_step(tmp_path: Path) -> None:
    plan = mopo_plan(list(range(7)))
    spec = {s.seed: s for s in plan.runs}
    for seed, step in ((0, 100), (1, 100), (2, 200), (5, 100)):
        write_checkpoint(spec[seed], tmp_path, step)
    write_checkpoint(spec[6], tmp_path, None)  # unreadable
    assert checkpoint_step(spec[0].run_dir(tmp_path)) == 100 and checkpoint_step(spec[3].run_dir(tmp_path)) is None
    with pytest.raises(Exception):  # noqa: B017 (whatever torch raises for a file that is not its own)
        checkpoint_step(spec[6].run_dir(tmp_path))
    groups = group_runs(plan.runs, 8, tmp_path, restart={spec[5].id})
    shape = sorted((tuple(g.seeds), g.resume) for g in groups)
    assert shape == [
        ((0, 1), True),  # both stopped at step 100: resumed together
        ((2,), True),  # step 200: alone
        ((3, 4), True),  # no checkpoint: start together
        ((5,), False),  # --retry-failed: from scratch, whatever its checkpoint says
        ((6,), True),  # an unreadable checkpoint: alone (the trainer says what is wrong with it)
    ]
    assert seeds_of(group_runs(plan.runs, 8)) == [list(range(7))]  # without a results directory: all fresh


# -- the scheduler with population jobs --------------------------------------------------------------------------


class PopulationExecutor(ScriptedExecutor):
    """ScriptedExecutor that also runs population jobs: per member what train_configs leaves behind (result.json, or
    error.json for a member scripted to fail: ``member:<algo>:seed<k>``); ``defer`` names pretraining jobs left
    pending until the view's next poll."""

    slots = 3

    def __init__(self, out: Path, script: dict[str, list[BaseException]] | None = None, defer: tuple[str, ...] = ()):
        super().__init__(out, script)
        self.defer = set(defer)
        self.pending: list[cf.Future] = []
        self.pretrain_futures: dict[str, cf.Future] = {}
        self.payloads: list[dict[str, Any]] = []
        self.member_errors: dict[str, str] = {}
        self.done_at_submit: dict[str, bool] = {}

    def release(self) -> None:
        for fut in self.pending:
            fut.set_result({"key": "k", "cached": False, "wall_s": 0.0})
        self.pending.clear()

    def submit(self, fn: Any, payload: dict[str, Any]) -> cf.Future:
        self.payloads.append(payload)
        if fn.__name__ == "pretrain_job":
            name = f"pretrain_job:{payload['run_id']['algo']}:seed{payload['run_id']['seed']}"
            if name in self.defer:
                self.calls.append((fn.__name__, name))
                fut: cf.Future = cf.Future()
                self.pending.append(fut)
            else:
                fut = super().submit(fn, payload)
            self.pretrain_futures[name] = fut
            return fut
        if fn.__name__ != "train_population_job":
            return super().submit(fn, payload)
        members = payload["members"]
        algo = members[0]["run_id"]["algo"]
        name = f"train_population_job:{algo}:seeds{','.join(str(m['seed']) for m in members)}"
        self.calls.append((fn.__name__, name))
        self.done_at_submit[name] = all(f.done() for f in self.pretrain_futures.values())
        fut = cf.Future()
        planned = self.script.get(name)
        if planned:
            fut.set_exception(planned.pop(0))
            return fut
        reports = []
        for m in members:
            rid = m["run_id"]
            run_dir = RunId(**rid).path(self.out)
            run_dir.mkdir(parents=True, exist_ok=True)
            message = self.member_errors.get(f"member:{algo}:seed{rid['seed']}")
            if message:
                (run_dir / "error.json").write_text(json.dumps({"error": message, "traceback": "tb", "step": 7}))
                reports.append({"error": message, "traceback": "tb", "files": {}})
                continue
            result = {"task": rid["task"], "suite": rid["suite"], "algo": algo, "seed": rid["seed"], "score": 1.0}
            (run_dir / "result.json").write_text(json.dumps(result))
            reports.append({"result": result, "files": {}})
        fut.set_result({"members": reports})
        return fut


class ReleasingView(SweepView):
    """Completes the executor's deferred pretraining at its third poll: the scheduler has gone round its loop (and
    submitted what it had queued) twice before."""

    def __init__(self, executor: PopulationExecutor, stream: io.StringIO) -> None:
        super().__init__(Console(file=stream, width=200), live=False)
        self.executor = executor
        self.polls = 0

    def poll(self, out: Path) -> None:
        self.polls += 1
        if self.polls >= 3:
            self.executor.release()


def test_a_population_is_one_job_after_the_pretraining_of_every_member(tmp_path: Path) -> None:
    plan = expand_grid(["quick"], ["mopo", "rombrl"], [0, 1, 2], tasks=["pendulum-random"])
    ex = PopulationExecutor(tmp_path, defer=("pretrain_job:mopo:seed2",))  # the last member's ensemble comes late
    stream = io.StringIO()
    report = run_plan(plan, tmp_path, ex, WorkerEnv(), ReleasingView(ex, stream), population=3)
    trains = [name for kind, name in ex.calls if kind != "pretrain_job"]
    assert sorted(trains) == [
        "train_job:rombrl:seed0", "train_job:rombrl:seed1", "train_job:rombrl:seed2",  # no population support
        "train_population_job:mopo:seeds0,1,2",
    ]
    assert ex.done_at_submit == {"train_population_job:mopo:seeds0,1,2": True}
    (payload,) = [p for p in ex.payloads if "members" in p]
    assert [m["seed"] for m in payload["members"]] == [0, 1, 2] and payload["resume"] is True
    assert [m["id"] for m in payload["members"]] == [s.id for s in plan.runs if s.algo == "mopo"]
    assert len(report.finished) == 6 and not report.failed
    for spec in plan.runs:  # every run of a population knows its leaderboard column and has its result
        assert json.loads((spec.run_dir(tmp_path) / "bench.json").read_text())["label"] == spec.label
        assert (spec.run_dir(tmp_path) / "result.json").is_file()
    text = stream.getvalue()
    assert "started mopo pendulum-random seeds 0,1,2 (population of 3)" in text
    assert "started rombrl pendulum-random seed 1" in text
    assert "done mopo pendulum-random seed 2" in text and "4 train jobs, 3 runs in 1 populations" in text


def test_a_failed_member_fails_alone_and_retry_failed_reruns_only_it(tmp_path: Path) -> None:
    plan = mopo_plan([0, 1, 2])
    ex = PopulationExecutor(tmp_path)
    ex.member_errors["member:mopo:seed1"] = "DivergenceError: critic loss is nan"
    report = run_plan(plan, tmp_path, ex, WorkerEnv(), quiet_view(), population=3)
    by_seed = {s.seed: s for s in plan.runs}
    assert report.failed == {by_seed[1].id: "DivergenceError: critic loss is nan"}
    assert sorted(s.seed for s in report.finished) == [0, 2]
    error = json.loads((by_seed[1].run_dir(tmp_path) / "error.json").read_text())
    assert error["step"] == 7  # the member's own error.json (what train_configs wrote) is kept
    # The next session reports it as failed without training anything ...
    again = PopulationExecutor(tmp_path)
    report = run_plan(plan, tmp_path, again, WorkerEnv(), quiet_view(), population=3)
    assert again.calls == [] and report.failed_before == [by_seed[1].id] and len(report.skipped) == 2
    # ... and --retry-failed reruns that run alone, from scratch.
    retry = PopulationExecutor(tmp_path)
    report = run_plan(plan, tmp_path, retry, WorkerEnv(), quiet_view(), retry_failed=True, population=3)
    assert [n for _, n in retry.calls] == ["pretrain_job:mopo:seed1", "train_job:mopo:seed1"]
    assert retry.payloads[-1]["resume"] is False and not report.failed and len(report.finished) == 1


def test_a_failure_of_the_whole_population_fails_every_member(tmp_path: Path) -> None:
    plan = mopo_plan([0, 1, 2])
    ex = PopulationExecutor(tmp_path, {"train_population_job:mopo:seeds0,1,2": [RuntimeError("setup exploded")]})
    report = run_plan(plan, tmp_path, ex, WorkerEnv(), quiet_view(), population=3)
    assert set(report.failed) == {s.id for s in plan.runs} and not report.finished
    for spec in plan.runs:
        error = json.loads((spec.run_dir(tmp_path) / "error.json").read_text())
        assert error["error"] == "RuntimeError: setup exploded" and "setup exploded" in error["traceback"]
    # A worker that dies twice under a population fails every member (once: the population runs again).
    died = BrokenProcessPool("worker died")
    out = tmp_path / "died"
    ex = PopulationExecutor(out, {"train_population_job:mopo:seeds0,1,2": [died, died]})
    report = run_plan(plan, out, ex, WorkerEnv(), quiet_view(), population=3)
    assert set(report.failed) == {s.id for s in plan.runs} and ex.restarts == 2
    assert all("worker process died twice" in e for e in report.failed.values())
    # A member's run directory locked by another process: the job fails, no directory is marked.
    out = tmp_path / "locked"
    ex = PopulationExecutor(out, {"train_population_job:mopo:seeds0,1,2": [RunLockedError("seed1 is being written")]})
    report = run_plan(plan, out, ex, WorkerEnv(), quiet_view(), population=3)
    assert set(report.failed) == {s.id for s in plan.runs} and not list(out.rglob("error.json"))


def test_a_failed_pretraining_fails_its_member_and_the_others_train_together(tmp_path: Path) -> None:
    plan = mopo_plan([0, 1, 2])
    ex = PopulationExecutor(tmp_path, {"pretrain_job:mopo:seed1": [ValueError("bad ensemble")]})
    report = run_plan(plan, tmp_path, ex, WorkerEnv(), quiet_view(), population=3)
    by_seed = {s.seed: s for s in plan.runs}
    assert list(report.failed) == [by_seed[1].id] and "pretraining failed: ValueError: bad ensemble" in (
        report.failed[by_seed[1].id]
    )
    assert [n for k, n in ex.calls if k != "pretrain_job"] == ["train_population_job:mopo:seeds0,2"]
    assert sorted(s.seed for s in report.finished) == [0, 2]


def test_ctrl_c_stops_a_population_without_recording_failures(tmp_path: Path) -> None:
    plan = mopo_plan([0, 1, 2])
    ex = PopulationExecutor(tmp_path, {"train_population_job:mopo:seeds0,1,2": [KeyboardInterrupt()]})

    class InterruptingView(SweepView):
        def poll(self, out: Path) -> None:
            if any(kind == "train_population_job" for kind, _ in ex.calls):
                raise KeyboardInterrupt

    stream = io.StringIO()
    with pytest.raises(SweepInterrupted):
        run_plan(plan, tmp_path, ex, WorkerEnv(), InterruptingView(Console(file=stream, width=200), live=False),
                 population=3)
    assert not list(tmp_path.rglob("error.json")) and not list(tmp_path.rglob("result.json"))
    assert stream.getvalue().count("(checkpointed; resumes next time)") == 3


# -- the dry run ---------------------------------------------------------------------------------------------------


def test_the_dry_run_shows_the_populations(tmp_path: Path) -> None:
    from zoo.bench.api import run_sweep

    def dry(population: str | int) -> str:
        stream = io.StringIO()
        run_sweep("quick", ["mopo", "rombrl"], seeds=3, tasks="pendulum-random", out=tmp_path, dry_run=True,
                  console=Console(file=stream, width=200), population=population, executor_cfg={"workers": 2})
        return stream.getvalue()

    text = dry("auto")
    assert "4 train jobs (--population auto = 3): 3 runs in 1 populations, 3 runs alone" in text  # 6 runs, 2 slots
    assert "  mopo pendulum-random seeds 0,1,2 (population of 3)" in text
    assert "  rombrl: one run per job (rule 'rombrl' has no population support)" in text
    text = dry(1)
    assert "6 train jobs (--population 1): 0 runs in 0 populations, 6 runs alone" in text
    assert "population of" not in text
    result = CliRunner().invoke(
        app,
        ["bench", "--dry-run", "--algos", "mopo", "--tasks", "pendulum-random", "--seeds", "3", "--population", "2",
         "--out", str(tmp_path)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "mopo pendulum-random seeds 0,1 (population of 2)" in result.output
    assert "2 train jobs (--population 2): 2 runs in 1 populations, 1 runs alone" in result.output
