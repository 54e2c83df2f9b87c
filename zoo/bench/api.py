"""``zoo.bench(...)`` from Python (issue 12, item 4): the code path of ``zoo bench``, returning one row per run.

Also the helpers that the Python API and the command line share: :func:`setup` (recipe directories and plugins)
and :func:`override_strings` (``{"penalty.coef": 2.0}`` -> ``["penalty.coef=2.0"]``). :mod:`zoo.api` re-exports
them with ``zoo.train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def setup(config_dirs: list[str | Path] | None = None, plugins: list[str] | None = None) -> None:
    """Make recipe directories and plugin modules known to this process (``--config-dir``, ``--plugin``)."""
    from zoo.paths import add_config_dir
    from zoo.registry import REGISTRY

    for d in config_dirs or []:
        add_config_dir(Path(d))
    if config_dirs:
        from zoo.tasks.suites import register_suites

        register_suites()  # the user's suites join the registry
    for module in plugins or []:
        REGISTRY.load_module(module)


def bench(
    suites: list[str] | str | None = None,
    algos: list[str] | str | None = None,
    seeds: int | list[int] | None = None,
    seed_list: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    sweep: list[str] | None = None,
    preset: str | None = "auto",
    tasks: list[str] | str | None = None,
    out: str | Path = "results",
    executor: str = "local",
    executor_cfg: dict[str, Any] | None = None,
    device: str | None = None,
    retry_failed: bool = False,
    download: bool = False,
    loggers: list[str] | str | None = None,
    plugins: list[str] | None = None,
    config_dirs: list[str | Path] | None = None,
    console: Any = None,
    live: bool | None = None,
    quiet: bool = False,
    dry_run: bool = False,
    population: str | int = "auto",
) -> pd.DataFrame:
    """Run suites × algorithms × seeds (finished runs are skipped), write the leaderboards, and return one row
    per run of the plan (the columns of :func:`zoo.results.load_runs`; status finished, failed, unreadable or
    not run). ``seeds``: N for seeds 0…N−1, or a list of seeds
    (``seed_list="3,7"`` as on the command line); ``quiet`` silences the console; ``dry_run`` prints the plan and
    its cost and runs nothing; ``population``: ``"auto"`` (default), N or 1, the most runs of one recipe on one
    task trained together as one population (:mod:`zoo.bench.populations`; 1: one run per job)."""
    outcome = run_sweep(**locals())
    return plan_frame(Path(out).resolve(), outcome.plan.runs)


def run_sweep(
    suites: list[str] | str | None = None,
    algos: list[str] | str | None = None,
    seeds: int | list[int] | None = None,
    seed_list: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    sweep: list[str] | None = None,
    preset: str | None = "auto",
    tasks: list[str] | str | None = None,
    out: str | Path = "results",
    executor: str = "local",
    executor_cfg: dict[str, Any] | None = None,
    device: str | None = None,
    retry_failed: bool = False,
    download: bool = False,
    loggers: list[str] | str | None = None,
    plugins: list[str] | None = None,
    config_dirs: list[str | Path] | None = None,
    console: Any = None,
    live: bool | None = None,
    quiet: bool = False,
    dry_run: bool = False,
    population: str | int = "auto",
) -> Any:
    """:func:`bench` without the frame: the sweep's ``BenchOutcome`` (plan, report, leaderboards), what
    ``zoo bench`` needs for its exit status."""
    from rich.console import Console

    from zoo.bench.sweep import bench as run_bench

    setup(config_dirs, plugins)
    if quiet:
        console = Console(quiet=True)
    if isinstance(seeds, list | tuple):
        seeds, seed_list = None, ",".join(str(s) for s in seeds)
    return run_bench(
        suites=[suites] if isinstance(suites, str) else suites,
        algos=[algos] if isinstance(algos, str) else algos,
        seeds=seeds,
        seed_list=seed_list,
        overrides=override_strings(overrides),
        sweep=sweep,
        preset=preset,
        tasks=[tasks] if isinstance(tasks, str) else tasks,
        out=out,
        executor=executor,
        executor_cfg=executor_cfg,
        retry_failed=retry_failed,
        download=download,
        dry_run=dry_run,
        device=device,
        plugins=plugins,
        config_dirs=[str(Path(d).resolve()) for d in config_dirs or []],
        console=console,
        live=live,
        loggers=loggers,
        population=population,
    )


def override_strings(overrides: list[str] | dict[str, Any] | None) -> list[str] | None:
    """``{"penalty.coef": 2.0, "device": "cpu"}`` -> ``["penalty.coef=2.0", 'device="cpu"']`` (TOML literals)."""
    if overrides is None or isinstance(overrides, list | tuple):
        return list(overrides) if overrides is not None else None
    return [f"{key}={toml_literal(value)}" for key, value in overrides.items()]


def toml_literal(value: Any) -> str:
    """A Python value as a one-line TOML literal (what ``--set key=...`` takes)."""
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"override value {value!r} has no TOML form; pass it as a --set string")


def plan_frame(out: Path, specs: list[Any]) -> pd.DataFrame:
    """The :func:`zoo.results.load_runs` rows of a plan's runs, in plan order; a run without a result or an error
    yet (a dry run, a stopped sweep) is a row with status ``not run``."""
    from zoo.results import RUN_COLUMNS, load_runs

    runs = load_runs(out, suites=sorted({spec.suite for spec in specs}))
    position = {run_dir: k for k, run_dir in enumerate(runs["run_dir"])}
    found, missing, order = [], [], []
    for k, spec in enumerate(specs):
        run_dir = str(spec.run_dir(out))
        if run_dir in position:
            found.append(position[run_dir])
            order.append(k)
        else:
            missing.append({
                "suite": spec.suite, "task": spec.task, "algo": spec.algo, "label": spec.label,
                "config_hash": spec.cfg.hash(), "seed": spec.seed, "status": "not run", "run_dir": run_dir,
            })
    frame = runs.iloc[found]
    if missing:
        rows = pd.DataFrame(missing).astype({key: RUN_COLUMNS[key] for key in missing[0]})
        frame = pd.concat([frame, rows], ignore_index=True)
        order += [k for k, spec in enumerate(specs) if str(spec.run_dir(out)) not in position]
    frame = frame.assign(_plan=order).sort_values("_plan", kind="stable").drop(columns="_plan")
    return frame.reset_index(drop=True)
