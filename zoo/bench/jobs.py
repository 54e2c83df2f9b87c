"""What a worker runs: one ensemble pretraining, one training run, or one population of runs (issue 5, items 2
and 3; issue 15, item 6).

Each job function takes a :class:`WorkerEnv` (the sweep's plugins, recipe directories and import path, and the
torch thread count) and a plain-data payload, so that any executor can ship them: a local process pool or a
Ray task on another machine. Nothing here imports torch at module level: a worker sets its thread counts
(``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``torch.set_num_threads``) before torch does any work.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

THREAD_ENV_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
# Small files of a run directory that are sent back when a worker's filesystem is not the driver's.
RUN_FILES: tuple[str, ...] = ("config.toml", "environment.json", "metrics.jsonl", "result.json", "error.json")


@dataclass(frozen=True)
class WorkerEnv:
    """What every worker sets up before its first job."""

    plugins: tuple[str, ...] = ()
    config_dirs: tuple[str, ...] = ()
    sys_path: tuple[str, ...] = field(default_factory=lambda: tuple(sys.path))
    threads: int = 0  # torch intra-op threads per job; 0 leaves torch's default
    data_dir: str | None = None  # ZOO_DATA of the driver
    device: str | None = None  # the sweep's device (cpu | cuda | cuda:N): which GPU a local worker is shown


_PREPARED: set[WorkerEnv] = set()


def set_threads(threads: int) -> None:
    """Thread counts of this process: environment variables for libraries not yet loaded, then torch."""
    if threads <= 0:
        return
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already started in this process
        pass


def prepare_worker(env: WorkerEnv) -> None:
    """Idempotent per process: threads, import path, recipe directories, plugins."""
    if env in _PREPARED:
        return
    set_threads(env.threads)
    for entry in env.sys_path:
        if entry not in sys.path and (entry == "" or Path(entry).exists()):
            sys.path.append(entry)
    if env.data_dir and Path(env.data_dir).is_dir():  # the driver's dataset cache, where this machine sees it
        os.environ["ZOO_DATA"] = env.data_dir
    from zoo.paths import add_config_dir
    from zoo.registry import REGISTRY

    for d in env.config_dirs:
        add_config_dir(d)
    if env.config_dirs:
        from zoo.tasks.suites import register_suites

        register_suites()
    for module in env.plugins:
        REGISTRY.load_module(module)
    _PREPARED.add(env)


def pretrain_job(env: WorkerEnv, payload: dict[str, Any]) -> dict[str, Any]:
    """Pretrain (or load from the cache) the ensemble of one run's config: ``Trainer.setup`` without training."""
    prepare_worker(env)
    from zoo.engine.run import resolve_run
    from zoo.engine.trainer import Trainer
    from zoo.tasks.task import get_task

    start = time.time()
    cfg = resolve_run(
        payload["recipe"],
        payload["task"],
        payload["seed"],
        payload["overrides"],
        device=payload.get("device"),
        preset=payload.get("preset"),
    )
    out = Path(payload["out"])
    trainer = Trainer(cfg, get_task(payload["task"]), out / "cache" / "setup", cache_dir=out / "cache", progress=False)
    trainer.setup()
    return {
        "key": trainer.pretrain_key,
        "cached": trainer.pretrain_cached,
        "wall_s": time.time() - start,
        "host": os.uname().nodename,
    }


def train_job(env: WorkerEnv, payload: dict[str, Any]) -> dict[str, Any]:
    """Train one run (resuming from its checkpoint when asked); returns its result and, when asked, its files."""
    prepare_worker(env)
    from zoo.engine.run import RunId, train_run

    out = Path(payload["out"])
    error: BaseException | None = None
    result: dict[str, Any] | None = None
    try:
        result = train_run(
            payload["recipe"],
            payload["task"],
            seed=payload["seed"],
            out=out,
            overrides=payload["overrides"],
            device=payload.get("device"),
            suite=payload["suite"],
            resume=payload["resume"],
            progress=False,
            preset=payload.get("preset"),
            loggers=payload.get("loggers"),
        )
    except Exception as err:  # the run's error.json is written by train_run; send the files back below
        error = err
    files = _run_files(RunId(**payload["run_id"]).path(out)) if payload.get("return_files") else {}
    if error is not None:
        if files:
            raise RunFailed(str(error), files) from error
        raise error
    return {"result": result, "files": files, "host": os.uname().nodename}


def train_population_job(env: WorkerEnv, payload: dict[str, Any]) -> dict[str, Any]:
    """Train several runs of one recipe on one task as one population (:func:`zoo.engine.run.train_configs`).

    ``payload`` is :func:`train_job`'s without ``seed``, ``overrides`` and ``run_id``, with ``members``: per run
    its ``seed``, ``overrides``, ``run_id`` and ``id`` (the scheduler's run id). Returns ``members``: per run (in
    that order) its ``result``, or its ``error`` and ``traceback`` (a failed member: its error.json is written, the
    others finish), and its files when asked. An error of the whole population (refused population, a locked run
    directory, Ctrl-C) is raised, as a single run's is by :func:`train_job`."""
    prepare_worker(env)
    import traceback

    from zoo.engine.run import RunId, resolve_run, train_configs

    out = Path(payload["out"])
    members = payload["members"]
    run_dirs = [RunId(**m["run_id"]).path(out) for m in members]
    try:
        cfgs = [
            resolve_run(
                payload["recipe"],
                payload["task"],
                m["seed"],
                m["overrides"],
                device=payload.get("device"),
                preset=payload.get("preset"),
            )
            for m in members
        ]
        outcomes = train_configs(
            cfgs,
            payload["task"],
            out,
            suite=payload["suite"],
            resume=payload["resume"],
            progress=False,
            loggers=payload.get("loggers"),
        )
    except Exception as err:  # every member fails with it; send back whatever files they have
        if payload.get("return_files"):
            files = {m["id"]: _run_files(d) for m, d in zip(members, run_dirs, strict=True)}
            if any(files.values()):
                raise RunFailed(str(err), {}, members=files) from err
        raise
    reports: list[dict[str, Any]] = []
    for run_dir, outcome in zip(run_dirs, outcomes, strict=True):
        report: dict[str, Any] = {"files": _run_files(run_dir) if payload.get("return_files") else {}}
        if isinstance(outcome, BaseException):
            report["error"] = f"{type(outcome).__name__}: {outcome}"
            report["traceback"] = "".join(traceback.format_exception(type(outcome), outcome, outcome.__traceback__))
        else:
            report["result"] = outcome
        reports.append(report)
    return {"members": reports, "host": os.uname().nodename}


def _run_files(run_dir: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file():
            files[name] = path.read_text()
    return files


class RunFailed(RuntimeError):
    """A failed run whose files travel back with the error (executors on other machines); a failed population
    sends its runs' files as ``members`` (run id -> files)."""

    def __init__(self, message: str, files: dict[str, str], members: dict[str, dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.files = files
        self.members = members or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (RunFailed, (str(self), self.files, self.members))


def worker_info(env: WorkerEnv, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """A job that only reports how its worker is set up (executor contract tests, debugging a cluster)."""
    prepare_worker(env)
    import torch

    from zoo.registry import REGISTRY

    return {
        "pid": os.getpid(),
        "host": os.uname().nodename,
        "torch_threads": torch.get_num_threads(),
        "env": {var: os.environ.get(var) for var in (*THREAD_ENV_VARS, "CUDA_VISIBLE_DEVICES", "ZOO_DATA")},
        "plugins": list(env.plugins),
        "rules": REGISTRY.names("rule"),
        "echo": (payload or {}).get("echo"),
    }
