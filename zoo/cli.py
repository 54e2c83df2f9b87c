"""The ``zoo`` command line: ``bench``, ``leaderboard``, ``eval``, ``list``, ``train``, ``data``.

Built with typer: typed options are parsed and checked from the function signatures (no ``type=bool``
argparse pitfalls, sac.md §6 #1), help pages come for free, and rich renders tables and errors.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from zoo.registry import KINDS, REGISTRY

console = Console()
err_console = Console(stderr=True)

# Exit codes of every command (README, "Exit codes").
EXIT_USER_ERROR = 2  # bad input: the one-line message says what is wrong and what to do
EXIT_RUNS_FAILED = 3  # zoo bench, zoo train --seed-list: at least one of the runs failed (now or before)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: stopped cleanly, resumable
DEBUG_ENV = "ZOO_DEBUG"  # ZOO_DEBUG=1 (or --debug anywhere on the command line): tracebacks instead of one line


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (what `timeout`, `docker stop` and SLURM send) both raise KeyboardInterrupt, so both get
    the clean stop (checkpoint, resumable). SIGINT is reset even when the shell started us with it ignored (a
    background job of a non-interactive shell, as some CI runners do): Python keeps an inherited SIG_IGN."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


app = typer.Typer(
    name="zoo",
    help="mbrl-zoo: offline model-based RL from composable components.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _setup(config_dir: list[Path] | None, plugin: list[str] | None) -> None:
    from zoo.paths import add_config_dir

    for d in config_dir or []:
        add_config_dir(d)
    if config_dir:
        from zoo.tasks.suites import register_suites

        register_suites()  # the user's suites join the registry (zoo list, bench)
    for module in plugin or []:
        REGISTRY.load_module(module)


ConfigDirOpt = Annotated[
    list[Path] | None, typer.Option("--config-dir", help="Extra directory with algos/, suites/, presets/.")
]
PluginOpt = Annotated[list[str] | None, typer.Option("--plugin", help="Import a module that registers components.")]
LoggerOpt = Annotated[
    list[str] | None,
    typer.Option("--logger", help="Extra loggers besides metrics.jsonl, e.g. --logger tensorboard,wandb (zoo list)."),
]


@app.command("list")
def list_components(config_dir: ConfigDirOpt = None, plugin: PluginOpt = None) -> None:
    """Every component kind and its registered components, and the shipped recipes."""
    _setup(config_dir, plugin)
    from zoo.paths import list_configs

    table = Table(title="registered components")
    table.add_column("kind", style="bold")
    table.add_column("name", style="cyan")
    table.add_column("description")
    for kind in KINDS:
        names = REGISTRY.names(kind)
        if not names:
            table.add_row(kind, "-", "")
        for name in names:
            table.add_row(kind, name, REGISTRY.describe(kind, name))
    console.print(table)
    recipes = Table(title="algorithm recipes")
    recipes.add_column("algo", style="cyan")
    recipes.add_column("file")
    for name, path in list_configs("algos").items():
        recipes.add_row(name, str(path))
    console.print(recipes)


@app.command()
def train(
    algo: Annotated[str, typer.Option(help="Recipe name (configs/algos/NAME.toml) or a path to a TOML file.")],
    task: Annotated[str, typer.Option(help="Task name, e.g. hopper-medium-v2 or pendulum-medium.")],
    seed: Annotated[int, typer.Option(help="Seed driving torch, numpy and the environments.")] = 0,
    seed_list: Annotated[
        str | None,
        typer.Option(
            "--seed-list",
            help="Train these seeds (e.g. 0,1,2) as one population: one batched program, one run directory each.",
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Override the recipe's number of learner steps.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Dotted override, e.g. --set learner.actor_lr=1e-4")
    ] = None,
    suite: Annotated[str | None, typer.Option(help="Suite the run belongs to (decides eval noise).")] = None,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("results"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint.")] = False,
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not cached.")] = False,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved config and exit.")] = False,
    progress: Annotated[
        bool, typer.Option(help="Show progress: a bar on a terminal, one line per evaluation in a file or pipe.")
    ] = True,
    logger: LoggerOpt = None,
    config_dir: ConfigDirOpt = None,
    plugin: PluginOpt = None,
) -> None:
    """Train one algorithm on one task and write its run directory (with --seed-list: several seeds as one
    population, one run directory each)."""
    _setup(config_dir, plugin)
    from zoo.api import train as api_train
    from zoo.engine.run import resolve_run
    from zoo.tasks.task import get_task

    _stop_on_signals()
    seeds = None
    if seed_list is not None:
        from zoo.bench.grid import parse_seeds

        if seed != 0:
            raise ValueError("give either --seed or --seed-list, not both")
        seeds = parse_seeds(None, seed_list, 1)
    if print_config:
        get_task(task)  # an unknown task is an error here too, not a config printed for nothing
        cfg = resolve_run(algo, task, (seeds or [seed])[0], set_, steps, device)
        console.print(cfg.to_toml(), markup=False, highlight=False)
        raise typer.Exit(0)
    from zoo.engine.trainer import TrainingInterrupted

    try:
        outcome = api_train(
            algo,
            task,
            seed=seed,
            seeds=seeds,
            out=out,
            overrides=set_,
            steps=steps,
            device=device,
            suite=suite,
            resume=resume,
            progress=progress,
            download=download,
            log=console.print,
            loggers=logger,
        )
    except TrainingInterrupted as stop:
        err_console.print(f"[yellow]{escape(str(stop))}[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:  # before the loop (loading the data, pretraining): nothing to checkpoint yet
        err_console.print("[yellow]interrupted before training started; run the same command again[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if seeds is None:
        _print_result(outcome)
        return
    failed = 0
    for seed_k, result in zip(seeds, outcome, strict=True):
        if isinstance(result, BaseException):
            failed += 1
            err_console.print(f"[red]failed[/] {algo} on {task} seed {seed_k}: {escape(str(result))}", soft_wrap=True)
        else:
            _print_result(result)
    if failed:
        raise typer.Exit(EXIT_RUNS_FAILED)


def _print_result(result: dict[str, Any]) -> None:
    """The two closing lines of a trained run: a sentence, then its figures as one JSON line."""
    if result["score"] is None:
        score = "no score (eval.episodes = 0: nothing was evaluated)"
    else:
        score = f"score {result['score']:.1f} (return {result['return']:.1f}, last {result['score_evals']} evals)"
    status = "[bold yellow]diverged[/]" if result.get("diverged") else "[bold green]done[/]"
    console.print(f"{status} {result['algo']} on {result['task']} seed {result['seed']}: {score}", soft_wrap=True)
    # one line whatever the width (a script or a log file reads it)
    console.print(json.dumps({k: result[k] for k in ("score", "return", "steps", "wall_s")}), soft_wrap=True)


@app.command()
def bench(
    suite: Annotated[
        list[str] | None, typer.Option(help="Suite(s) to run (repeat or comma-separate). Default: quick.")
    ] = None,
    algos: Annotated[
        str | None, typer.Option(help="Comma-separated recipes (names or .toml paths). Default: every recipe.")
    ] = None,
    tasks: Annotated[str | None, typer.Option(help="Only these tasks of the suite(s), comma-separated.")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds 0..N-1 (default: the preset's, else 5).")] = None,
    seed_list: Annotated[str | None, typer.Option("--seed-list", help="Explicit seeds, e.g. 3,7.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Dotted override for every run, e.g. --set eval.episodes=5")
    ] = None,
    sweep: Annotated[
        list[str] | None, typer.Option(help="A hyperparameter axis, e.g. --sweep penalty.coef=0.5,1.0 (repeatable).")
    ] = None,
    preset: Annotated[
        str,
        typer.Option(help="Budget preset (configs/presets/NAME.toml); auto = quick for the quick suite; none."),
    ] = "auto",
    executor: Annotated[str, typer.Option(help="Executor: local (process pool) or ray.")] = "local",
    workers: Annotated[int | None, typer.Option(help="Runs at once (default: sensible for this machine).")] = None,
    threads: Annotated[
        int | None, typer.Option(help="Torch threads per local worker (default: cores // workers).")
    ] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local Ray instance).")] = None,
    executor_set: Annotated[
        list[str] | None, typer.Option("--executor-set", help="Executor option key=value, e.g. cpus_per_run=2")
    ] = None,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("results"),
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    download: Annotated[bool, typer.Option(help="Download missing datasets before starting.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed runs again from scratch.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and its estimated cost, then exit.")
    ] = False,
    population: Annotated[
        str,
        typer.Option(
            help="Runs of one recipe on one task trained together as one batched program: auto | N | 1. N: the "
            "seeds of a (task, recipe, config) in groups of at most N (recipes without population support: one run "
            "per job); 1: one run per job; auto: 8 on the CPU, on a GPU as many as its free memory holds (at most "
            "8). Each run keeps its own directory and result.",
        ),
    ] = "auto",
    live: Annotated[
        bool | None, typer.Option("--live/--no-live", help="Live progress view (default: on a terminal).")
    ] = None,
    logger: LoggerOpt = None,
    config_dir: ConfigDirOpt = None,
    plugin: PluginOpt = None,
) -> None:
    """Run suites × algorithms × seeds (skipping finished runs), then write and show the leaderboard.

    With no arguments: the quick suite, every recipe, the quick budget preset, 2 seeds."""
    _setup(config_dir, plugin)
    from zoo.bench.api import run_sweep
    from zoo.bench.scheduler import SweepInterrupted

    _stop_on_signals()
    if device is not None:  # no CUDA here: one error now, not a failed run per job
        from zoo.engine.trainer import resolve_device

        resolve_device(device)
    from zoo.config import parse_override

    executor_cfg: dict[str, object] = {}
    for text in executor_set or []:
        path, value = parse_override(text)
        executor_cfg[".".join(path)] = value
    for key, value in (("workers", workers), ("threads", threads), ("address", address)):
        if value is not None:
            executor_cfg[key] = value
    try:
        outcome = run_sweep(
            suites=suite,
            algos=[algos] if algos else None,
            seeds=seeds,
            seed_list=seed_list,
            overrides=set_,
            sweep=sweep,
            preset=preset,
            tasks=[tasks] if tasks else None,
            out=out,
            executor=executor,
            executor_cfg=executor_cfg,
            retry_failed=retry_failed,
            download=download,
            dry_run=dry_run,
            device=device,
            plugins=plugin,
            config_dirs=config_dir,
            console=console,
            live=live,
            loggers=logger,
            population=population,
        )
    except SweepInterrupted as stop:
        err_console.print(f"[yellow]{escape(str(stop))}[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:  # before any job started (e.g. while collecting a dataset)
        err_console.print("[yellow]interrupted; run the same command again to resume[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    report = outcome.report
    if report is not None and report.failed:
        err_console.print(
            f"[bold red]{len(report.failed)} run(s) failed[/] (their error.json says why; --retry-failed reruns them)",
            highlight=False,
        )
        raise typer.Exit(EXIT_RUNS_FAILED)


@app.command()
def leaderboard(
    suite: Annotated[list[str] | None, typer.Option(help="Only these suites (repeat or comma-separate).")] = None,
    format_: Annotated[
        list[str] | None,
        typer.Option("--format", help="md | csv | tex | html (repeatable; one format is also printed). Default: all."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Results directory holding runs/.")] = Path("results"),
    dest: Annotated[Path | None, typer.Option(help="Where to write (default: OUT/leaderboard).")] = None,
    plots: Annotated[bool, typer.Option(help="Write the learning-curve plots.")] = True,
    compare: Annotated[
        str | None,
        typer.Option(help="X,Y: print P(X > Y) with its 95% bootstrap interval for every table with both columns."),
    ] = None,
    config_dir: ConfigDirOpt = None,
    plugin: PluginOpt = None,
) -> None:
    """Regenerate the leaderboards from OUT/runs (nothing is retrained; the same runs give the same files)."""
    _setup(config_dir, plugin)

    def fail(message: str) -> NoReturn:
        err_console.print(f"[bold red]error:[/] {escape(message)}")
        raise typer.Exit(2)

    pair = [name.strip() for name in compare.split(",")] if compare is not None else []
    if compare is not None and (len(pair) != 2 or not all(pair) or pair[0] == pair[1]):
        fail(f"--compare takes two different column names separated by a comma (e.g. romi,rambo), not {compare!r}")
    from zoo.bench.leaderboard import (
        FORMATS,
        render_csv,
        render_html,
        render_markdown,
        render_rich,
        render_tex,
        write_leaderboards,
    )
    from zoo.bench.sweep import split_list

    formats = tuple(split_list(format_)) or FORMATS
    boards, written = write_leaderboards(out, suites=split_list(suite) or None, formats=formats, dest=dest, plots=plots)
    if not boards:
        err_console.print(f"[yellow]no finished or failed runs under {out / 'runs'}[/]")
        raise typer.Exit(1)
    if len(formats) == 1 and format_:
        render = {"md": render_markdown, "csv": render_csv, "tex": render_tex, "html": render_html}[formats[0]]
        by_suite: dict[str, list] = {}
        for board in boards:
            by_suite.setdefault(board.suite, []).append(board)
        for suite_boards in by_suite.values():
            typer.echo(render(suite_boards), nl=False)
    else:
        for board in boards:
            console.print(render_rich(board))
    if pair:
        from zoo.bench.leaderboard import compare_columns

        found = compare_columns(boards, pair[0], pair[1])
        if not found:
            columns = sorted({lab for board in boards for lab in board.labels})
            fail(f"no table has both columns {pair[0]!r} and {pair[1]!r}; columns: {', '.join(columns)}")
        for board, iv in found:
            typer.echo(
                f"{board.title}: P({pair[0]} > {pair[1]}) = {iv.point:.2f} [{iv.low:.2f}, {iv.high:.2f}] "
                f"(95% CI; {iv.n_tasks} tasks; {iv.reps:,} stratified bootstrap replicates)"
            )
    for board in boards:
        for text in board.unreadable:
            err_console.print(f"[yellow]warning: {escape(text)} (not in {escape(board.title)})[/]", highlight=False)
    err_console.print(f"{len(written)} file(s) written to {dest or out / 'leaderboard'}", highlight=False)


@app.command("eval")
def eval_run(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<suite>/<task>/<algo>/<hash>/seed<k>).")],
    suite: Annotated[
        str | None, typer.Option(help="Evaluate under this suite's noise setting, e.g. d4rl-noisy.")
    ] = None,
    episodes: Annotated[int | None, typer.Option(help="Episodes (default: the run's eval.episodes).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    config_dir: ConfigDirOpt = None,
    plugin: PluginOpt = None,
) -> None:
    """Re-evaluate a saved policy (e.g. under observation noise) without retraining."""
    _setup(config_dir, plugin)
    from zoo.bench.reeval import reevaluate

    record = reevaluate(run_dir, suite=suite, episodes=episodes, device=device)
    console.print(
        f"[bold green]evaluated[/] {record['algo']} on {record['task']} seed {record['seed']} "
        f"(step {record['checkpoint_step']}, suite {record['suite']}, noise {record['noise']}, "
        f"{record['episodes']} episodes): score {record['score']:.1f} ± {record['score_std']:.1f}, "
        f"return {record['return_mean']:.1f}"
    )
    if not record["in_suite"]:
        console.print(f"[yellow]note:[/] {record['task']} is not a task of suite {record['suite']}")
    console.print(json.dumps({k: record[k] for k in ("score", "score_std", "return_mean", "return_std", "episodes")}))


def _mount_data_commands() -> None:
    from zoo.cli_data import data_app

    app.add_typer(data_app, name="data", help="Datasets: collect, list, path, info, download.")


_mount_data_commands()


def _one_line(err: BaseException) -> str:
    """The message of an error on one line (KeyError quotes its argument; messages may span lines)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split())
    return text or type(err).__name__


def main() -> None:
    """Console entry point: every error is one line (its traceback with --debug or ZOO_DEBUG=1); the codes are
    EXIT_USER_ERROR for the user's mistakes and 1 for anything else, so scripts can tell them apart."""
    from zoo.bench.executors import MissingExtraError
    from zoo.data.errors import DatasetError, DatasetUnavailableError
    from zoo.registry import ConfigKeyError, UnknownComponentError

    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if "--debug" in sys.argv[1:]:
        debug = True
        sys.argv = [a for a in sys.argv if a != "--debug"]
    user_errors = (
        UnknownComponentError,
        ConfigKeyError,
        DatasetError,
        DatasetUnavailableError,
        MissingExtraError,
        ValueError,
        KeyError,  # UnknownTaskError and friends
        OSError,  # a file where a directory should be, permissions, a full disk
        ModuleNotFoundError,  # --plugin missing_module
        RuntimeError,  # e.g. --device cuda without CUDA, a checkpoint of another configuration
    )
    _stop_on_signals()  # every command: SIGTERM unwinds like Ctrl-C (temporary files removed, checkpoints written)
    try:
        app()
    except KeyboardInterrupt:  # outside the commands' own clean stops (e.g. collecting a dataset)
        err_console.print("[yellow]interrupted[/]")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as err:
        if debug:
            traceback.print_exc()
        user = isinstance(err, user_errors) or type(err).__module__.startswith("gymnasium")  # NameNotFound, ...
        kind = "" if user else f"{type(err).__name__}: "
        hint = "" if debug else f" (traceback: --debug or {DEBUG_ENV}=1)"
        err_console.print(f"[bold red]error:[/] {escape(kind + _one_line(err))}{hint}", highlight=False, soft_wrap=True)
        raise SystemExit(EXIT_USER_ERROR if user else 1) from None


if __name__ == "__main__":
    main()
