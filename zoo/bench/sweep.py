"""``zoo bench`` as a function: plan, dry run with a cost estimate, datasets, jobs, leaderboard (issue 5).

:func:`bench` is what the command line calls; tests call it directly.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from zoo.bench.grid import Plan, expand_grid, parse_seeds, parse_sweep
from zoo.bench.presets import Preset, load_bench_preset

DEFAULT_SUITE = "quick"
DEFAULT_SEEDS = 5  # evaluation.md §5.3
# Learner steps per second and pretraining seconds assumed when results/ has no history yet (a CPU core).
DEFAULT_STEPS_PER_S = {"cpu": 100.0, "cuda": 300.0}
DEFAULT_PRETRAIN_S = {"cpu": 120.0, "cuda": 60.0}


@dataclass
class BenchOutcome:
    plan: Plan
    report: Any = None  # scheduler.BenchReport (None for a dry run)
    boards: list[Any] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    estimate: dict[str, Any] = field(default_factory=dict)


def all_recipes() -> list[str]:
    """Every recipe in the config directories (``configs/algos``, ``--config-dir`` ones included)."""
    from zoo.paths import list_configs

    return sorted(list_configs("algos"))


def split_list(values: list[str] | str | None) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else values
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def choose_preset(preset: str | None, suites: list[str]) -> Preset | None:
    """``auto``: the ``quick`` preset for the quick suite alone, recipe budgets otherwise; ``none``: recipe
    budgets; anything else: that preset."""
    if preset in (None, "", "none"):
        return None
    if preset == "auto":
        return load_bench_preset("quick") if suites == [DEFAULT_SUITE] else None
    return load_bench_preset(preset)


def _history(out: Path) -> tuple[dict[str, list[float]], list[float], dict[str, list[float]]]:
    """Seconds per learner step by algo, and pretraining seconds (all, and by dynamics config) from earlier
    runs in ``out``."""
    import pandas as pd

    from zoo.results import load_runs

    per_step: dict[str, list[float]] = {}
    runs = load_runs(out)
    for r in runs[runs["status"] == "finished"].itertuples():
        if not pd.isna(r.steps) and r.steps > 0 and r.wall_s > 0:  # NaN wall_s compares False
            per_step.setdefault(str(r.algo), []).append(float(r.wall_s) / float(r.steps))
    pretrain_all: list[float] = []
    pretrain_by: dict[str, list[float]] = {}
    for path in (out / "cache" / "dynamics").glob("*/meta.json") if (out / "cache").is_dir() else []:
        try:
            m = json.loads(path.read_text())
            pretrain_all.append(float(m["wall_s"]))
            pretrain_by.setdefault(json.dumps(m["dynamics"], sort_keys=True), []).append(float(m["wall_s"]))
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            continue
    return per_step, pretrain_all, pretrain_by


def estimate_cost(plan: Plan, todo: list[Any], out: Path, slots: int, device: str = "cpu") -> dict[str, Any]:
    """A rough cost: learner steps × seconds per step (from earlier runs of the same algorithm in ``out``,
    else a default rate) plus pretraining jobs × their past duration; wall time = total / slots."""
    per_step, pretrain_all, pretrain_by = _history(out)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    run_s, from_history = 0.0, 0
    for spec in todo:
        rates = per_step.get(spec.algo)
        if rates:
            from_history += 1
            rate = statistics.median(rates)
        else:
            rate = 1.0 / DEFAULT_STEPS_PER_S[kind]
        run_s += spec.cfg.steps * rate
    pretrain_s = 0.0
    jobs = plan.pretrain_jobs(todo)
    for job in jobs:
        known = pretrain_by.get(json.dumps(job.runs[0].cfg.dynamics.as_dict(), sort_keys=True))
        past = known or pretrain_all
        pretrain_s += statistics.median(past) if past else DEFAULT_PRETRAIN_S[kind]
    total = run_s + pretrain_s
    return {
        "runs": len(todo),
        "pretrain_jobs": len(jobs),
        "learner_steps": sum(spec.cfg.steps for spec in todo),
        "compute_s": total,
        "wall_s": total / max(1, slots),
        "slots": slots,
        "runs_with_history": from_history,
    }


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(
    console: Console,
    plan: Plan,
    state: Any,
    estimate: dict[str, Any],
    executor: Any,
    groups: list[Any] | None = None,
    population: str = "1",
) -> None:
    table = Table(title="plan", show_lines=False)
    table.add_column("run id", overflow="fold")
    table.add_column("column")
    table.add_column("steps", justify="right")
    table.add_column("status")
    done = {s.id for s in state.done}
    failed = {s.id for s in state.failed}
    unreadable = getattr(state, "unreadable", {})
    for spec in plan.runs:
        status = (
            "finished"
            if spec.id in done
            else "unreadable result file (--retry-failed reruns it)"
            if spec.id in failed and spec.id in unreadable
            else "failed (--retry-failed reruns it)"
            if spec.id in failed
            else ("resume" if (spec.run_dir(Path(estimate["out"])) / "checkpoints" / "last.pt").is_file() else "to run")
        )
        table.add_row(Text(spec.id), Text(spec.label), f"{spec.cfg.steps:,}", status)
    console.print(table)
    bad = f" ({len(unreadable)} of them with an unreadable result file)" if unreadable else ""
    console.print(
        f"{len(plan.runs)} runs: {len(state.done)} finished, {len(state.failed)} failed{bad}, {len(state.todo)} "
        f"to run; {estimate['pretrain_jobs']} ensembles to pretrain (one per distinct task × seed × dynamics config)",
        highlight=False,
    )
    for text in unreadable.values():
        console.print(Text(f"warning: {text}", style="yellow"))
    if groups is not None:
        print_groups(console, plan, groups, population)
    basis = (
        f"{estimate['runs_with_history']}/{estimate['runs']} runs priced from earlier runs in {estimate['out']}"
        if estimate["runs"]
        else "nothing to run"
    )
    console.print(
        f"estimated cost: {estimate['learner_steps']:,} learner steps, about {_hours(estimate['compute_s'])} of "
        f"compute, about {_hours(estimate['wall_s'])} wall time on {executor.describe()} ({basis}; rough)",
        highlight=False,
    )


def print_groups(console: Console, plan: Plan, groups: list[Any], population: str) -> None:
    """The train jobs of the runs to run: a line per population, and which recipes train alone and why."""
    populations = [g for g in groups if g.size > 1]
    console.print(
        f"{len(groups)} train jobs (--population {population}): {sum(g.size for g in populations)} runs in "
        f"{len(populations)} populations, {len(groups) - len(populations)} runs alone",
        highlight=False,
    )
    with_suite = len(plan.suites) > 1
    for group in populations:
        console.print(Text(f"  {group.describe(with_suite)}"))
    alone = {g.specs[0].algo: g.alone for g in groups if g.alone}
    for algo, why in alone.items():
        console.print(Text(f"  {algo}: one run per job ({why})"))


def resolve_population(population: str | int | None, device: str, runner: Any, plan: Plan) -> int:
    """``--population`` as a number (:mod:`zoo.bench.populations`): auto is 8 on the CPU (fewer when the plan's
    runs would leave worker slots idle) and, on the local executor's GPUs, what the least free GPU's memory holds
    for its jobs at the plan's per-run bound."""
    from zoo.bench.populations import AUTO, auto_population, parse_population

    choice = parse_population(population)
    if choice != AUTO:
        return int(choice)
    gpus = list(getattr(runner, "gpu_names", None) or [])
    if not device.startswith("cuda"):
        return auto_population(device, runs=len(plan.runs), slots=int(getattr(runner, "slots", 1) or 1))
    if not gpus:
        return auto_population(device)
    from zoo.bench.executors import gpu_free_memory_gb

    if device.startswith("cuda:"):  # every job on that one GPU
        index = int(device.split(":", 1)[1])
        gpus, jobs_per_gpu = gpus[index : index + 1] or gpus[:1], runner.slots
    else:
        jobs_per_gpu = -(-runner.slots // len(gpus))
    return auto_population(device, gpu_free_memory_gb(gpus), plan_gpu_memory_gb(plan), jobs_per_gpu)


def bench(
    suites: list[str] | None = None,
    algos: list[str] | None = None,
    seeds: int | None = None,
    seed_list: str | None = None,
    overrides: list[str] | None = None,
    sweep: list[str] | None = None,
    preset: str | None = "auto",
    tasks: list[str] | None = None,
    out: Path | str = "results",
    executor: str = "local",
    executor_cfg: dict[str, Any] | None = None,
    retry_failed: bool = False,
    download: bool = False,
    dry_run: bool = False,
    device: str | None = None,
    plugins: list[str] | None = None,
    config_dirs: list[str] | None = None,
    console: Console | None = None,
    live: bool | None = None,
    formats: tuple[str, ...] | None = None,
    reps: int | None = None,
    loggers: list[str] | str | None = None,
    population: str | int | None = "auto",
) -> BenchOutcome:
    """Expand the grid, run what is not finished, write and print the leaderboard. ``loggers``: extra loggers
    (kind ``logger``) of every run, checked before anything starts. ``population``: ``auto``, N or 1, how many
    runs of one recipe on one task may train as one population (:mod:`zoo.bench.populations`)."""
    from zoo.bench.executors import make_executor
    from zoo.bench.jobs import WorkerEnv
    from zoo.bench.leaderboard import FORMATS, render_rich, write_leaderboards
    from zoo.bench.populations import group_runs, parse_population
    from zoo.bench.progress import SweepView
    from zoo.bench.scheduler import classify, ensure_datasets, restart_ids, run_plan
    from zoo.loggers import check_loggers, logger_names

    parse_population(population)  # a bad value is an error before anything is resolved
    console = console or Console()
    out = Path(out).resolve()
    extra_loggers = logger_names(loggers)[1:]
    check_loggers(extra_loggers)
    suites = split_list(suites) or [DEFAULT_SUITE]
    recipes = split_list(algos) or all_recipes()
    chosen = choose_preset(preset, suites)
    seed_values = parse_seeds(seeds, seed_list, (chosen.seeds if chosen and chosen.seeds else DEFAULT_SEEDS))
    runner = make_executor(executor, **(executor_cfg or {}))
    device = run_device(runner, device)  # explicit, so the config hashes name the device the runs get
    plan = expand_grid(
        suites,
        recipes,
        seed_values,
        overrides=overrides,
        sweep=parse_sweep(sweep),
        preset=chosen,
        tasks=split_list(tasks) or None,
        device=device,
    )
    if device.startswith("cuda") and hasattr(runner, "size_for_gpu"):
        runner.size_for_gpu(max(plan_gpu_memory_gb(plan), 0.0))
    state = classify(plan, out, retry_failed)
    estimate = estimate_cost(plan, state.todo, out, runner.slots, device)
    estimate["out"] = str(out)
    size = resolve_population(population, device, runner, plan)
    estimate["population"] = size
    outcome = BenchOutcome(plan=plan, estimate=estimate)
    if dry_run:
        groups = group_runs(state.todo, size, out, restart_ids(state, out))
        shown = f"{population} = {size}" if str(population) != str(size) else str(size)
        print_plan(console, plan, state, estimate, runner, groups, shown)
        return outcome
    for text in state.unreadable.values():  # never lost silently: named before the sweep starts
        console.print(Text(f"warning: {text}", style="yellow"))
    if state.todo:
        ensure_datasets(plan.tasks, download, log=lambda msg: console.print(msg, highlight=False))
    env = WorkerEnv(
        plugins=tuple(plugins or ()),
        config_dirs=tuple(str(Path(d).resolve()) for d in config_dirs or ()),
        sys_path=tuple(sys.path),
        data_dir=os.environ.get("ZOO_DATA"),
        device=device,
    )
    view = SweepView(console, live=live)
    if state.todo:
        runner.start(env)
    outcome.report = run_plan(
        plan, out, runner, env, view, retry_failed=retry_failed, device=device, loggers=extra_loggers, population=size
    )
    outcome.boards, outcome.written = write_leaderboards(out, suites=plan.suites, formats=formats or FORMATS, reps=reps)
    mine = {spec.setting.key() for spec in plan.runs}
    for board in outcome.boards:
        if board.setting.key() in mine:
            console.print(render_rich(board))
    if outcome.written:
        console.print(f"leaderboard written to {out / 'leaderboard'}", highlight=False)
    return outcome


def run_device(runner: Any, requested: str | None) -> str:
    """The device of a sweep's runs as its executor places them (``cpu``, ``cuda`` or ``cuda:N``)."""
    if hasattr(runner, "run_device"):
        return str(runner.run_device(requested))
    from zoo.device import device_kind

    return device_kind("auto") if requested in (None, "auto") else str(requested)


def plan_gpu_memory_gb(plan: Plan) -> float:
    """The largest GPU memory bound of a plan's runs (:func:`zoo.bench.executors.run_gpu_memory_gb`)."""
    from zoo.bench.executors import run_gpu_memory_gb
    from zoo.tasks.task import get_task

    dims: dict[str, tuple[int, int]] = {}
    worst = 0.0
    for spec in plan.runs:
        if spec.task not in dims:
            try:
                env_spec = get_task(spec.task).spec()
                dims[spec.task] = (env_spec.obs_dim, env_spec.act_dim)
            except Exception:  # a task whose env cannot be built here: a generous shape
                dims[spec.task] = (64, 16)
        worst = max(worst, run_gpu_memory_gb(spec.cfg, *dims[spec.task]))
    return worst
