"""The ``zoo`` command line: ``list``, ``train``, ``data``.

Built with typer: typed options are parsed and checked from the function signatures (no ``type=bool``
argparse pitfalls, sac.md §6 #1), help pages come for free, and rich renders tables and errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from zoo.registry import KINDS, REGISTRY

console = Console()
err_console = Console(stderr=True)

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
PluginOpt = Annotated[
    list[str] | None, typer.Option("--plugin", help="Import a module that registers components.")
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
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    config_dir: ConfigDirOpt = None,
    plugin: PluginOpt = None,
) -> None:
    """Train one algorithm on one task and write its run directory."""
    _setup(config_dir, plugin)
    from zoo.engine.run import resolve_run, train_run

    if print_config:
        cfg = resolve_run(algo, task, seed, set_, steps, device)
        console.print(cfg.to_toml(), markup=False, highlight=False)
        raise typer.Exit(0)
    from zoo.engine.trainer import TrainingInterrupted

    try:
        result = train_run(
            algo,
            task,
            seed=seed,
            out=out,
            overrides=set_,
            steps=steps,
            device=device,
            suite=suite,
            resume=resume,
            progress=progress,
            download=download,
            log=console.print,
        )
    except TrainingInterrupted as stop:
        err_console.print(f"[yellow]{stop}[/]")
        raise typer.Exit(130) from None
    console.print(
        f"[bold green]done[/] {result['algo']} on {result['task']} seed {result['seed']}: "
        f"score {result['score']:.1f} (return {result['return']:.1f}, last {result['score_evals']} evals)"
    )
    console.print(json.dumps({k: result[k] for k in ("score", "return", "steps", "wall_s")}))


def _mount_data_commands() -> None:
    try:
        from zoo.data.commands import data_app
    except ModuleNotFoundError as err:  # only while the data commands module does not exist
        if err.name != "zoo.data.commands":
            raise
        return
    app.add_typer(data_app, name="data", help="Datasets: collect, list, path, info, download.")


_mount_data_commands()


def main() -> None:
    """Console entry point: clear one-line errors for the user's mistakes, tracebacks for ours."""
    from zoo.data.errors import DatasetError, DatasetUnavailableError
    from zoo.registry import ConfigKeyError, UnknownComponentError

    try:
        app()
    except (UnknownComponentError, ConfigKeyError, DatasetError, DatasetUnavailableError, FileNotFoundError) as err:
        err_console.print(f"[bold red]error:[/] {err}")
        raise SystemExit(2) from None
    except ValueError as err:
        err_console.print(f"[bold red]error:[/] {err}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
