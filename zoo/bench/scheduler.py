"""Running a plan: datasets first, then one pretraining job per distinct ensemble, then the runs that need it
(issue 5, item 2).

- The store is the source of truth (read through :func:`zoo.results.run_status`): a run with a readable
  ``result.json`` is skipped; one with ``error.json``, or with a result file that cannot be read, is
  reported as failed and skipped unless ``retry_failed`` (then it starts again from scratch, an unreadable file
  kept beside it as ``<name>.unreadable``); any other run
  starts, or resumes from its checkpoint when an interrupted sweep left one.
- Every distinct (task, loader, dynamics config, ``data.normalize_obs``, seed) is pretrained by exactly one
  job, before any run that needs it starts; those runs then load it from the cache (``mopo`` and ``mbpo``
  share theirs). A failed pretraining fails its runs, with its error.
- A train job trains one run or a population of runs (``population``; :mod:`zoo.bench.populations` says which
  runs share one). A population starts once the pretraining of every member is done (a member whose pretraining
  failed is failed and the others train without it) and occupies one slot of the executor. Its runs finish or
  fail one by one (a failed member writes its own ``error.json``); an error of the whole job (the population
  refused, a worker that died twice) fails every member, as it fails a single run.
- A failing run writes ``error.json`` and the sweep goes on. A worker process that dies takes the jobs it
  was running down with it: they are queued once more, then recorded as failed.
- Ctrl-C: running jobs are asked to stop at their next step (they checkpoint), queued jobs are dropped; a
  second Ctrl-C stops at once. Running the same command again resumes.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
import traceback
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.bench.executors import Executor
from zoo.bench.grid import Plan, PretrainJob, RunSpec
from zoo.bench.jobs import RunFailed, WorkerEnv, pretrain_job, train_job, train_population_job
from zoo.bench.populations import TrainGroup, group_runs
from zoo.engine.run import RunLockedError
from zoo.io import atomic_write_text

INTERRUPT_GRACE_S = 30.0  # how long running jobs get to checkpoint after a Ctrl-C


class SweepInterrupted(KeyboardInterrupt):
    """The sweep stopped on Ctrl-C; running the same command again resumes it."""


@dataclass
class Job:
    kind: str  # pretrain | run
    id: str
    group: TrainGroup | None = None  # a run job's runs: one, or a population
    pretrain: PretrainJob | None = None
    attempts: int = 0
    started: float = 0.0

    @property
    def specs(self) -> list[RunSpec]:
        return self.group.specs if self.group is not None else []

    @property
    def spec(self) -> RunSpec | None:
        """The run of a single-run job (the first run of a population)."""
        return self.group.specs[0] if self.group is not None else None


@dataclass
class BenchReport:
    """What happened to every run of the plan."""

    finished: list[RunSpec] = field(default_factory=list)  # trained by this sweep
    skipped: list[RunSpec] = field(default_factory=list)  # finished before
    failed: dict[str, str] = field(default_factory=dict)  # run id -> error (this sweep or before)
    failed_before: list[str] = field(default_factory=list)
    pretrained: dict[str, dict[str, Any]] = field(default_factory=dict)  # group key -> pretrain job result
    interrupted: bool = False
    wall_s: float = 0.0


@dataclass
class RunState:
    """Classification of a plan's runs from the store. A run whose result.json or error.json cannot be read is
    never finished: it is in ``unreadable`` and counted with the failed ones (rerun by ``retry_failed``)."""

    done: list[RunSpec]
    failed: list[RunSpec]
    todo: list[RunSpec]
    unreadable: dict[str, str] = field(default_factory=dict)  # run id -> "unreadable result.json (why): path"


def classify(plan: Plan, out: Path, retry_failed: bool = False) -> RunState:
    from zoo.results import run_status

    done, failed, todo, unreadable = [], [], [], {}
    for spec in plan.runs:
        state = run_status(spec.run_dir(out))
        if state.status == "unreadable":
            unreadable[spec.id] = f"{state.detail}: {state.file}"
        if state.status == "finished":
            done.append(spec)
        elif state.status in ("failed", "unreadable") and not retry_failed:
            failed.append(spec)
        else:
            todo.append(spec)
    return RunState(done, failed, todo, unreadable)


def read_error(run_dir: Path) -> str:
    from zoo.results import run_status

    state = run_status(run_dir)
    if state.status == "unreadable":
        return f"{state.detail}: {state.file}"
    try:
        return str(json.loads((run_dir / "error.json").read_text()).get("error", "unknown error"))
    except (OSError, AttributeError, json.JSONDecodeError):
        return "unknown error"


def set_aside_unreadable(run_dir: Path) -> list[Path]:
    """Rename a run's unreadable result.json / error.json to ``<name>.unreadable`` (kept for inspection, never
    deleted) so that the run can start again; returns the new paths."""
    from zoo.results import run_status

    moved = []
    for _ in range(2):  # result.json first, then error.json if it is unreadable too
        state = run_status(run_dir)
        if state.status != "unreadable" or state.file is None:
            break
        target = state.file.with_name(state.file.name + ".unreadable")
        state.file.replace(target)
        moved.append(target)
    return moved


def write_error(run_dir: Path, message: str, tb: str = "", overwrite: bool = False) -> None:
    path = run_dir / "error.json"
    if path.exists() and not overwrite:
        return
    atomic_write_text(path, json.dumps({"error": message, "traceback": tb, "step": None}, indent=2))


def ensure_datasets(tasks: list[str], download: bool, log: Any = print) -> None:
    """Collect (local tasks) or download (with ``download``) every dataset the plan needs, before any job;
    a missing dataset that may not be downloaded is an error naming every such task and how to get it."""
    from zoo.data.errors import DatasetUnavailableError
    from zoo.tasks.task import get_task

    missing = []
    for name in tasks:
        task = get_task(name)
        if task.dataset_path() is not None:
            continue
        if task.source == "local" or download:
            log(f"collecting the dataset of {name} ..." if task.source == "local" else f"downloading {name} ...")
            task.download()
        else:
            missing.append(f"{name} ({task.how_to_get()})")
    if missing:
        raise DatasetUnavailableError(
            "datasets not in the cache: " + "; ".join(missing) + ". Pass --download to fetch them all first."
        )


def _run_id(spec: RunSpec) -> dict[str, Any]:
    return {
        "suite": spec.suite, "task": spec.task, "algo": spec.algo, "config_hash": spec.cfg.hash(), "seed": spec.seed
    }


def _payload(spec: RunSpec, out: Path, device: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "recipe": spec.recipe,
        "task": spec.task,
        "seed": spec.seed,
        "suite": spec.suite,
        "overrides": list(spec.overrides),
        "preset": spec.preset_layer,
        "device": device,
        "out": str(out),
        "run_id": _run_id(spec),
        **extra,
    }


def _population_payload(specs: list[RunSpec], out: Path, device: str | None, **extra: Any) -> dict[str, Any]:
    """:func:`train_population_job`'s payload: what the runs share, then per run its seed, overrides and id."""
    first = specs[0]
    return {
        "recipe": first.recipe,
        "task": first.task,
        "suite": first.suite,
        "preset": first.preset_layer,
        "device": device,
        "out": str(out),
        "members": [
            {"seed": spec.seed, "overrides": list(spec.overrides), "run_id": _run_id(spec), "id": spec.id}
            for spec in specs
        ],
        **extra,
    }


def restart_ids(state: RunState, out: Path) -> set[str]:
    """Runs to train that start again from scratch, not from a checkpoint: failed before (``--retry-failed``)."""
    return {
        spec.id for spec in state.todo if (spec.run_dir(out) / "error.json").is_file() or spec.id in state.unreadable
    }


def run_plan(
    plan: Plan,
    out: Path,
    executor: Executor,
    env: WorkerEnv,
    view: Any,
    retry_failed: bool = False,
    device: str | None = None,
    loggers: list[str] | None = None,
    population: int = 1,
) -> BenchReport:
    """Run every unfinished run of ``plan``, in populations of at most ``population`` runs
    (:func:`zoo.bench.populations.group_runs`; 1: one run per job); returns the report (raises SweepInterrupted on
    Ctrl-C)."""
    out = Path(out)
    start = time.time()
    state = classify(plan, out, retry_failed)
    report = BenchReport(skipped=list(state.done))
    for spec in state.failed:
        report.failed[spec.id] = read_error(spec.run_dir(out))
        report.failed_before.append(spec.id)
    for spec in [*state.done, *state.failed]:  # e.g. a run trained by `zoo train` with the same config
        _write_bench_meta(spec, out)

    for spec in state.todo:  # --retry-failed: a run with an unreadable result file starts again from scratch
        if spec.id in state.unreadable:
            set_aside_unreadable(spec.run_dir(out))
    restart_fresh = restart_ids(state, out)
    groups = group_runs(state.todo, population, out, restart_fresh)
    pretrain_jobs = plan.pretrain_jobs(state.todo)
    # A group waits for the pretraining of every member: pending[id(group)] holds the keys not yet done.
    waiting: dict[str, list[TrainGroup]] = {job.key: [] for job in pretrain_jobs}
    pending: dict[int, set[str]] = {}
    queue: deque[Job] = deque(Job("pretrain", job.id, pretrain=job) for job in pretrain_jobs)
    for group in groups:
        keys = {spec.pretrain for spec in group.specs if spec.pretrain is not None}
        if not keys:
            queue.append(Job("run", group.id, group=group))
        pending[id(group)] = keys
        for key in keys:
            waiting[key].append(group)
    view.start(plan, state, pretrain_jobs, executor, groups=groups)
    inflight: dict[cf.Future, Job] = {}

    def submit(job: Job) -> None:
        job.attempts += 1
        job.started = time.time()
        if job.kind == "pretrain":
            assert job.pretrain is not None
            payload = _payload(job.pretrain.runs[0], out, device)
            fut = executor.submit(pretrain_job, payload)
        else:
            assert job.group is not None
            for spec in job.specs:
                _write_bench_meta(spec, out)
            extra = {"resume": job.group.resume, "return_files": executor.returns_files, "loggers": list(loggers or [])}
            if job.group.size == 1:
                fut = executor.submit(train_job, _payload(job.specs[0], out, device, **extra))
            else:
                fut = executor.submit(train_population_job, _population_payload(job.specs, out, device, **extra))
        inflight[fut] = job
        view.job_started(job)

    def fail_run(spec: RunSpec, message: str, tb: str = "", overwrite: bool = False, since: float = 0.0) -> None:
        run_dir = spec.run_dir(out)
        _write_bench_meta(spec, out)
        path = run_dir / "error.json"
        stale = path.is_file() and path.stat().st_mtime < since  # left by an earlier attempt
        write_error(run_dir, message, tb, overwrite=overwrite or stale)
        report.failed[spec.id] = read_error(run_dir)
        view.run_failed(spec, report.failed[spec.id])

    def pretrained(key: str, failed: str | None = None, tb: str = "") -> None:
        """The pretraining ``key`` is done (or ``failed`` with that message): queue the groups it completes."""
        for group in waiting.pop(key, []):
            if failed is not None:  # its members fail; the rest of their population trains without them
                for spec in [s for s in group.specs if s.pretrain == key]:
                    fail_run(spec, failed, tb, overwrite=True)
                group.specs = [s for s in group.specs if s.pretrain != key]
            keys = pending[id(group)]
            keys.discard(key)
            if not keys and group.specs:
                queue.append(Job("run", group.id, group=group))

    def finish(fut: cf.Future, job: Job, interrupting: bool = False) -> None:
        err = fut.exception()
        if job.kind == "pretrain":
            assert job.pretrain is not None
            if err is None:
                report.pretrained[job.pretrain.key] = fut.result()
                view.pretrain_done(job, fut.result())
                pretrained(job.pretrain.key)
            elif interrupting:  # stopped by the Ctrl-C: the next session pretrains it again
                waiting.pop(job.pretrain.key, None)
                view.pretrain_failed(job, "stopped by Ctrl-C")
            else:
                message = f"pretraining failed: {type(err).__name__}: {err}"
                view.pretrain_failed(job, message)
                pretrained(job.pretrain.key, failed=message, tb=_format_tb(err))
            return
        specs = job.specs
        if err is None:
            value = fut.result()
            outcomes = value["members"] if "members" in value else [value]
            for spec, outcome in zip(specs, outcomes, strict=True):
                _restore_files(spec.run_dir(out), outcome.get("files", {}))
                if "error" in outcome:  # a failed member of a population (its error.json is written)
                    fail_run(spec, outcome["error"], outcome.get("traceback", ""), since=job.started)
                else:
                    report.finished.append(spec)
                    view.run_done(spec, outcome.get("result") or {})
        elif interrupting or isinstance(err, KeyboardInterrupt):
            # Stopped by the Ctrl-C (with a checkpoint when it got that far; Ray reports a cancelled task as an
            # error of its own): never recorded as a failure, the next session resumes it.
            for spec in specs:
                view.run_interrupted(spec)
        elif isinstance(err, RunLockedError):  # another process writes that run: its directory is not ours to mark
            for spec in specs:
                report.failed[spec.id] = str(err)
                view.run_failed(spec, str(err))
        else:
            for spec in specs:
                if isinstance(err, RunFailed):
                    _restore_files(spec.run_dir(out), err.members.get(spec.id, err.files if len(specs) == 1 else {}))
                fail_run(spec, f"{type(err).__name__}: {err}", _format_tb(err), since=job.started)

    try:
        while queue or inflight:
            while queue and len(inflight) < executor.slots:
                submit(queue.popleft())
            done, _ = cf.wait(list(inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in done:
                job = inflight.pop(fut)
                if isinstance(fut.exception(), BrokenProcessPool):
                    broken = True
                    if job.attempts < 2:
                        queue.appendleft(job)
                        continue
                    err = fut.exception()
                    if job.kind == "run":
                        for spec in job.specs:
                            fail_run(spec, f"worker process died twice while running it ({err})")
                    else:
                        finish(fut, job)
                    continue
                finish(fut, job)
            if broken:
                for fut, job in list(inflight.items()):  # the pool is gone: its other jobs go back in the queue
                    inflight.pop(fut)
                    queue.appendleft(job)
                executor.restart()
            view.poll(out)
    except KeyboardInterrupt:
        report.interrupted = True
        view.interrupting(len(inflight))
        executor.interrupt()
        try:
            deadline = time.time() + INTERRUPT_GRACE_S
            while inflight and time.time() < deadline:
                done, _ = cf.wait(list(inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    job = inflight.pop(fut)
                    if not isinstance(fut.exception(), BrokenProcessPool):
                        finish(fut, job, interrupting=True)
        except KeyboardInterrupt:
            pass
        executor.shutdown(wait=False)
        report.wall_s = time.time() - start
        view.stop(report)
        raise SweepInterrupted(
            f"sweep interrupted: {len(report.finished)} run(s) finished in this session; "
            "run the same command again to resume"
        ) from None
    except BaseException:
        executor.shutdown(wait=False)
        view.stop(report)
        raise
    executor.shutdown(wait=True)
    report.wall_s = time.time() - start
    view.stop(report)
    return report


def _write_bench_meta(spec: RunSpec, out: Path) -> None:
    path = spec.run_dir(out) / "bench.json"
    if not path.is_file():
        atomic_write_text(path, json.dumps(spec.bench_meta(), indent=2))


def _format_tb(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


def _restore_files(run_dir: Path, files: dict[str, str]) -> None:
    """Write back a remote worker's run files where this machine does not already have them."""
    if not files or ((run_dir / "result.json").is_file() and "result.json" in files):
        return
    for name, text in files.items():
        atomic_write_text(run_dir / name, text)
