"""One run = (suite, task, algorithm, resolved config, seed): its directory and its result file.

Layout (DESIGN.md, Conventions): ``<out>/runs/<suite>/<task>/<algo>/<config hash>/seed<k>/`` with
``config.toml`` (resolved), ``environment.json`` (package versions, git revision, device),
``metrics.jsonl``, ``checkpoints/last.pt`` and, once the run has finished, ``result.json``. A failed run
writes ``error.json`` instead; nothing is written half (every file is replaced atomically).
The pretraining cache lives in ``<out>/cache``.

One process at a time writes a run directory: ``.lock`` holds an exclusive ``flock`` and names its owner
(pid, host); a second writer is refused with that name. The kernel drops the lock of a process that dies, so a
lock file left by a dead process is stale and simply taken over.

A run stopped by the divergence guard after at least one evaluation is *finished with divergence*: its
``result.json`` has ``"diverged": true``, ``"status": "diverged"`` and the score of its last evaluations, so
aggregates keep that seed (the peer kits have no such stop and keep their bad seeds). A run that evaluated
nothing (``eval.episodes = 0``) has ``"score": null`` and never enters a leaderboard.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import socket
import subprocess
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from zoo.config import RunConfig, resolve
from zoo.device import describe_device, device_kind, resolve_device, set_exact_numerics
from zoo.io import atomic_write_text


@dataclass(frozen=True)
class RunId:
    suite: str
    task: str
    algo: str
    config_hash: str
    seed: int

    def path(self, out: Path) -> Path:
        from zoo.tasks.task import safe_name

        return (
            Path(out) / "runs" / safe_name(self.suite) / safe_name(self.task) / safe_name(self.algo)
            / self.config_hash / f"seed{self.seed}"
        )


class RunLockedError(RuntimeError):
    """Another live process writes this run directory."""


LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path, log: Any = None) -> Iterator[None]:
    """Hold the run directory's lock for the body; refuse (RunLockedError, naming the owner) when it is held."""
    path = Path(run_dir) / LOCK_FILE
    fh = open(path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "an unknown process"
            raise RunLockedError(
                f"{run_dir} is being written by another process ({owner}); wait for it to finish or stop it. "
                "Two writers would interleave metrics.jsonl and overwrite each other's result.json"
            ) from None
        fh.seek(0)
        previous = fh.read().strip()
        if previous and log is not None:  # its owner died without releasing it (the kernel dropped the flock)
            log(f"[yellow]taking over the stale lock of {run_dir} ({previous}, no longer running)[/]")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on host {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()  # empty = free; never unlinked, so two processes can never lock two different files
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in ("mbrl-zoo", "torch", "numpy", "gymnasium", "mujoco", "minari", "h5py"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_suite(task_name: str) -> str:
    """The first built-in suite that lists the task (clean suites before noisy ones), else "custom"."""
    from zoo.tasks.suites import load_suite, suite_names

    names = sorted(suite_names(), key=lambda n: ("noisy" in n, n))
    for name in names:
        try:
            if task_name in [t.name for t in load_suite(name).tasks]:
                return name
        except Exception:  # a broken user suite must not block a run of a built-in task
            continue
    return "custom"


def resolve_run(
    algo: str,
    task: str,
    seed: int,
    overrides: list[str] | None = None,
    steps: int | None = None,
    device: str | None = None,
    preset: dict[str, Any] | None = None,
) -> RunConfig:
    extra = list(overrides or [])
    extra.append(f"seed={seed}")
    if steps is not None:
        extra.append(f"steps={steps}")
    if device is not None:
        extra.append(f'device="{device}"')
    cfg = resolve(algo, task=task, overrides=extra, preset=preset)
    if cfg.device == "auto":  # config.toml names the device kind the run got, as its hash does (issue 13)
        cfg.device = device_kind("auto")
    return cfg


def train_run(
    algo: str,
    task: str,
    seed: int = 0,
    out: Path | str = "results",
    overrides: list[str] | None = None,
    steps: int | None = None,
    device: str | None = None,
    suite: str | None = None,
    resume: bool = False,
    progress: bool = True,
    preset: dict[str, Any] | None = None,
    download: bool = False,
    log: Any = None,
    loggers: list[str] | str | None = None,
) -> dict[str, Any]:
    """Resolve, build and train one run; write its directory; return the result record.

    ``loggers`` (names of kind ``logger``, besides the always-on jsonl and the config's ``loggers``) are checked
    before anything is written: an unknown name or a missing extra fails at once."""
    cfg = resolve_run(algo, task, seed, overrides, steps, device, preset)
    outcome = train_configs([cfg], task, out, suite, resume, progress, download, log, loggers)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def train_population(
    algo: str,
    task: str,
    seeds: list[int],
    out: Path | str = "results",
    overrides: list[str] | None = None,
    steps: int | None = None,
    device: str | None = None,
    suite: str | None = None,
    resume: bool = False,
    progress: bool = True,
    preset: dict[str, Any] | None = None,
    download: bool = False,
    log: Any = None,
    loggers: list[str] | str | None = None,
) -> list[dict[str, Any] | BaseException]:
    """Train the runs of ``seeds`` as one population (zoo.engine.population); per seed, its result record or the
    error that stopped it. Each run writes its usual directory, exactly as :func:`train_run` of its seed would."""
    if not seeds:
        raise ValueError("a population needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat in {seeds}")
    cfgs = [resolve_run(algo, task, seed, overrides, steps, device, preset) for seed in seeds]
    return train_configs(cfgs, task, out, suite, resume, progress, download, log, loggers)


def train_configs(
    cfgs: list[RunConfig],
    task: str,
    out: Path | str = "results",
    suite: str | None = None,
    resume: bool = False,
    progress: bool = True,
    download: bool = False,
    log: Any = None,
    loggers: list[str] | str | None = None,
) -> list[dict[str, Any] | BaseException]:
    """Train resolved configs of one task as one population; per config, its result record or its error. Runs
    that already have a result (and no ``resume``) are not trained again: their record is returned."""
    from zoo.engine.population import check_population
    from zoo.loggers import check_loggers, logger_names
    from zoo.tasks.suites import load_suite
    from zoo.tasks.task import get_task

    out = Path(out)
    task_obj = get_task(task)
    check_population(cfgs)
    suite_name = suite or default_suite(task)
    noise, noise_scale = "none", 0.05
    if suite_name != "custom":
        suite_obj = load_suite(suite_name)
        noise, noise_scale = suite_obj.noise, suite_obj.noise_scale
    extra_loggers = logger_names(loggers)[1:]
    for cfg in cfgs:
        check_loggers(logger_names(cfg.loggers, extra_loggers))
    run_ids = [RunId(suite_name, task, cfg.algo, cfg.hash(), cfg.seed) for cfg in cfgs]
    outcomes: list[dict[str, Any] | BaseException | None] = [None] * len(cfgs)
    todo = []
    for i, run_id in enumerate(run_ids):
        result_path = run_id.path(out) / "result.json"
        if result_path.exists() and not resume:
            outcomes[i] = json.loads(result_path.read_text())
        else:
            todo.append(i)
    if todo:
        resolve_device(cfgs[0].device)  # no CUDA: an error now, before anything is written
        for i in todo:
            run_ids[i].path(out).mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as locks:
            for i in todo:
                locks.enter_context(run_lock(run_ids[i].path(out), log))
            trained = _train_locked(
                [cfgs[i] for i in todo], task, task_obj, [run_ids[i] for i in todo], out, noise, noise_scale,
                resume, progress, download, log, extra_loggers,
            )
        for i, outcome in zip(todo, trained, strict=True):
            outcomes[i] = outcome
    return [o for o in outcomes if o is not None]


def _write_error(run_dir: Path, err: BaseException, step: int) -> None:
    atomic_write_text(
        run_dir / "error.json",
        json.dumps(
            {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(), "step": step}, indent=2
        ),
    )


def _train_locked(
    cfgs: list[RunConfig],
    task: str,
    task_obj: Any,
    run_ids: list[RunId],
    out: Path,
    noise: str,
    noise_scale: float,
    resume: bool,
    progress: bool,
    download: bool,
    log: Any,
    extra_loggers: list[str],
) -> list[dict[str, Any] | BaseException]:
    """The body of :func:`train_configs` while it holds the run directories' locks."""
    from zoo.engine.rollout import DivergenceError
    from zoo.engine.trainer import Trainer

    run_dirs = [run_id.path(out) for run_id in run_ids]
    versions = package_versions()
    device = resolve_device(cfgs[0].device)
    environment = json.dumps(
        {
            "versions": versions,
            "git_revision": git_revision(),
            "started": time.time(),
            **describe_device(device),
            "numerics": set_exact_numerics(),  # what the trainer runs under (no TF32)
            "population": [cfg.seed for cfg in cfgs],  # the seeds trained together as one program
        },
        indent=2,
    )
    for cfg, run_dir in zip(cfgs, run_dirs, strict=True):
        atomic_write_text(run_dir / "config.toml", cfg.to_toml())
        atomic_write_text(run_dir / "environment.json", environment)
        (run_dir / "error.json").unlink(missing_ok=True)
    trainer = Trainer(
        cfgs,
        task_obj,
        run_dirs,
        cache_dir=out / "cache",
        noise=noise,
        noise_scale=noise_scale,
        progress=progress,
        download=download,
        log=log,
        suite=run_ids[0].suite,
        loggers=extra_loggers,
    )
    try:
        trainer.setup()
        outcomes = trainer.train_members(resume=resume)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        for run_dir in run_dirs:
            _write_error(run_dir, err, trainer.step)
        if len(cfgs) == 1:
            raise
        return [err] * len(cfgs)
    results: list[dict[str, Any] | BaseException] = []
    for k, (cfg, run_id, outcome) in enumerate(zip(cfgs, run_ids, outcomes, strict=True)):
        run_dir = run_dirs[k]
        diverged: str | None = None
        if isinstance(outcome, DivergenceError):
            member = trainer.members[k]
            if not member.evaluations:  # nothing to score: a failed run
                try:
                    raise outcome
                except DivergenceError as err:
                    _write_error(run_dir, err, member.stopped_at or trainer.step)
                results.append(outcome)
                continue
            diverged = str(outcome)
            summary = trainer.summary(k)
            if log is not None:
                log(f"[yellow]{diverged}[/] Recorded as finished with divergence (score of its last evaluations).")
        else:
            summary = outcome
        result = {
            "task": task,
            "suite": run_id.suite,
            "algo": cfg.algo,
            "seed": cfg.seed,
            "config_hash": cfg.hash(),
            **summary,
            "loader": cfg.data.loader,
            "eval_env": task_obj.env_id,
            "mujoco": versions.get("mujoco"),
            "noise": noise if noise == "none" else f"{noise}:{noise_scale}",
            "normalize_obs": cfg.data.normalize_obs,
            "status": "diverged" if diverged else "finished",
            "diverged": diverged is not None,
        }
        if diverged:
            result["divergence"] = diverged
        atomic_write_text(run_dir / "result.json", json.dumps(result, indent=2, default=str))
        results.append(result)
    return results
