"""``zoo data``: collect, list, locate, inspect and download datasets (DESIGN.md, "Data and tasks").

A CLI layer above both ``zoo.data`` and ``zoo.tasks`` (so it lives outside them), mounted by ``zoo/cli.py``
as ``app.add_typer(data_app, name="data")``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from zoo.paths import data_dir

data_app = typer.Typer(
    name="data",
    help="Datasets: collect local ones, list the cache, inspect and download task datasets.",
    no_args_is_help=True,
    add_completion=False,
)
_out = Console()
_err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err.print(f"[red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cached_datasets() -> list[dict[str, Any]]:
    """Every dataset in the caches: D4RL HDF5 files (the zoo's and ``$D4RL_DATASET_DIR``), NeoRL npz files,
    local and Minari datasets (``data_dir()/"minari"`` and Minari's own folder). No network."""
    from zoo.data.collect import local_root
    from zoo.data.d4rl import d4rl_dataset_dir, zoo_d4rl_dir
    from zoo.data.minari_io import minari_datasets_dir
    from zoo.data.neorl import neorl_dir

    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()

    def add(kind: str, name: str, path: Path) -> None:
        real = path.resolve()
        if real in seen:
            return
        seen.add(real)
        rows.append({"kind": kind, "name": name, "size": _tree_size(path), "path": str(path)})

    def dataset_files(folder: Path, pattern: str) -> list[Path]:
        # A directory or an empty file with a dataset's name is not a dataset (an aborted copy, a mistake).
        if not folder.is_dir():
            return []
        return [f for f in sorted(folder.glob(pattern)) if f.is_file() and f.stat().st_size > 0]

    for label, folder in (("d4rl", zoo_d4rl_dir()), ("d4rl", d4rl_dataset_dir())):
        for f in dataset_files(folder, "*.hdf5"):
            add(label, f.stem.replace("_", "-"), f)
    for f in dataset_files(neorl_dir(), "*.npz"):
        add("neorl", f.stem, f)
    for label, root in (("local", local_root()), ("minari", minari_datasets_dir())):
        if root.is_dir():
            for meta in sorted(root.rglob("data/metadata.json")):
                ds = meta.parent.parent
                rel = ds.relative_to(root)
                if any(part.startswith(".") for part in rel.parts):
                    continue  # a collection in progress
                add(label, rel.as_posix(), ds)
    return rows


@data_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """What is in the caches: D4RL, NeoRL, local and Minari datasets, with sizes."""
    rows = cached_datasets()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        _out.print(f"no cached datasets (data dir: {data_dir()})", highlight=False)
        return
    table = Table(title=f"cached datasets (data dir: {data_dir()})")
    for col in ("kind", "dataset", "size", "path"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["kind"], r["name"], _size(r["size"]), r["path"])
    _out.print(table)


@data_app.command("path")
def path_cmd() -> None:
    """Print the zoo's data directory ($ZOO_DATA, default ~/.cache/zoo)."""
    typer.echo(str(data_dir()))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@data_app.command("info")
def info_cmd(
    task: Annotated[str, typer.Argument(help="Task name, e.g. hopper-medium-v2 or mujoco/hopper/medium-v0.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    loader: Annotated[str, typer.Option(help="D4RL loader mode: keep_timeouts or olk.")] = "keep_timeouts",
) -> None:
    """Dataset file, transitions, episodes, terminals, timeouts, dims and returns of a cached task dataset."""
    from zoo.data.errors import DatasetError
    from zoo.tasks.task import get_task

    try:
        t = get_task(task)
    except KeyError as err:
        raise _fail(str(err)) from None
    try:
        path = t.dataset_path()
    except DatasetError as err:  # e.g. a directory where the file should be
        raise _fail(str(err)) from None
    if path is None:
        raise _fail(f"task {t.name}: dataset {t.dataset_id} is not in the cache; {t.how_to_get()}")
    try:
        data = t.load(loader=loader, download=False)
    except (DatasetError, FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    info: dict[str, Any] = {"task": t.name, "source": t.source, "dataset_id": t.dataset_id, "path": str(path)}
    info.update(data.summary())
    info["loader"] = loader if t.source == "d4rl" else t.source
    info["fingerprint"] = data.fingerprint()
    info["size"] = _tree_size(path)
    info["eval_env"] = t.env_id
    info = {k: _json_safe(v) for k, v in info.items()}
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table(title=f"{t.name}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in info.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    _out.print(table)


@data_app.command("download")
def download_cmd(
    task: Annotated[str, typer.Argument(help="Task name whose dataset to download (local tasks: collect).")],
) -> None:
    """Download a task's dataset into the cache (local tasks are collected instead)."""
    from zoo.tasks.task import get_task

    try:
        t = get_task(task)
    except KeyError as err:
        raise _fail(str(err)) from None
    existing = t.dataset_path()
    if existing is not None:
        typer.echo(str(existing))
        return
    try:
        path = t.download()
    except (FileNotFoundError, ValueError, OSError) as err:
        raise _fail(str(err)) from None
    typer.echo(str(path))


@data_app.command("collect")
def collect_cmd(
    env: Annotated[str, typer.Option("--env", help="Gymnasium env id.")] = "Pendulum-v1",
    quality: Annotated[
        str, typer.Option(help="Behaviour quality: random, medium, medium-replay or expert.")
    ] = "random",
    episodes: Annotated[int, typer.Option(min=1, help="Number of episodes.")] = 100,
    seed: Annotated[int, typer.Option(help="Episode k is reset with seed + k; the policy is seeded too.")] = 0,
    dataset_id: Annotated[
        str | None,
        typer.Option("--dataset-id", help="Minari id (default zoo/<env>/<quality>-v<collection protocol>)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset.")] = False,
) -> None:
    """Collect behaviour data into a local Minari dataset under the data dir (no download needed)."""
    from zoo.data.collect import collect_quality, default_dataset_id, read_local_metadata

    dataset_id = dataset_id or default_dataset_id(env, quality)
    try:
        path = collect_quality(
            env, quality=quality, episodes=episodes, dataset_id=dataset_id, seed=seed, overwrite=overwrite
        )
    except (FileExistsError, ValueError) as err:
        raise _fail(str(err)) from None
    meta = read_local_metadata(dataset_id) or {}
    _err.print(
        f"collected {episodes} {quality} episodes of {env} -> {dataset_id} "
        f"(fingerprint {meta.get('zoo_fingerprint', '?')})",
        highlight=False,
    )
    typer.echo(str(path))
