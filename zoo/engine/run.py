"""One run = (suite, task, algorithm, resolved config, seed): its directory and its result file.

Layout (DESIGN.md, Conventions): ``<out>/runs/<suite>/<task>/<algo>/<config hash>/seed<k>/`` with
``config.toml`` (resolved), ``environment.json`` (package versions, git revision, device),
``metrics.jsonl``, ``checkpoints/last.pt`` and, once the run has finished, ``result.json``. A failed run
writes ``error.json`` instead; nothing is written half (every file is replaced atomically).
The pretraining cache lives in ``<out>/cache``.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from zoo.config import RunConfig, resolve
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
    return resolve(algo, task=task, overrides=extra, preset=preset)


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
    from zoo.engine.trainer import Trainer
    from zoo.loggers import check_loggers, logger_names
    from zoo.tasks.suites import load_suite
    from zoo.tasks.task import get_task

    out = Path(out)
    task_obj = get_task(task)
    cfg = resolve_run(algo, task, seed, overrides, steps, device, preset)
    suite_name = suite or default_suite(task)
    noise, noise_scale = "none", 0.05
    if suite_name != "custom":
        suite_obj = load_suite(suite_name)
        noise, noise_scale = suite_obj.noise, suite_obj.noise_scale
    extra_loggers = logger_names(loggers)[1:]
    check_loggers(logger_names(cfg.loggers, extra_loggers))
    run_id = RunId(suite_name, task, cfg.algo, cfg.hash(), seed)
    run_dir = run_id.path(out)
    result_path = run_dir / "result.json"
    if result_path.exists() and not resume:
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    versions = package_versions()
    atomic_write_text(run_dir / "config.toml", cfg.to_toml())
    atomic_write_text(
        run_dir / "environment.json",
        json.dumps(
            {"versions": versions, "git_revision": git_revision(), "started": time.time()}, indent=2
        ),
    )
    (run_dir / "error.json").unlink(missing_ok=True)
    trainer = Trainer(
        cfg,
        task_obj,
        run_dir,
        cache_dir=out / "cache",
        noise=noise,
        noise_scale=noise_scale,
        progress=progress,
        download=download,
        log=log,
        suite=suite_name,
        loggers=extra_loggers,
    )
    try:
        trainer.setup()
        summary = trainer.train(resume=resume)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        atomic_write_text(
            run_dir / "error.json",
            json.dumps(
                {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(), "step": trainer.step},
                indent=2,
            ),
        )
        raise
    result = {
        "task": task,
        "suite": suite_name,
        "algo": cfg.algo,
        "seed": seed,
        "config_hash": cfg.hash(),
        **summary,
        "loader": cfg.data.loader,
        "eval_env": task_obj.env_id,
        "mujoco": versions.get("mujoco"),
        "noise": noise if noise == "none" else f"{noise}:{noise_scale}",
        "normalize_obs": cfg.data.normalize_obs,
        "status": "finished",
    }
    atomic_write_text(result_path, json.dumps(result, indent=2, default=str))
    return result
