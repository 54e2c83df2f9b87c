"""Results as pandas DataFrames: the one reader of ``<out>/runs`` (issue 12, item 3; issue 11, item 3).

A run directory (``runs/<suite>/<task>/<algo>/<config hash>/seed<k>/``, DESIGN.md "Conventions") holds
``result.json`` once finished, ``error.json`` when it failed, ``bench.json`` when a sweep planned it (its
leaderboard column and setting), ``config.toml`` (the resolved config) and ``metrics.jsonl``. The leaderboard,
the sweep planner and the cost estimate all read runs through this module; reading never changes a file.

:func:`load_runs` gives one row per run directory that holds a result, an error, or a file of either kind
that cannot be read. Columns and dtypes (:data:`RUN_COLUMNS`), then one ``cfg.<section>.<key>`` column per
resolved config key (``cfg.learner.target_min``; numbers float64 or int64, flags bool, text object, lists as
tuples, missing where a run's config lacks the key):

======================  ==========  ==========================================================================
column                  dtype       meaning
======================  ==========  ==========================================================================
suite, task, algo       string      from result.json, else bench.json, else the directory names
label                   string      leaderboard column: the recipe, plus sweep values (``mopo[penalty.coef=2]``)
setting                 string      what the sweep shared: ``preset quick``, ``recipe budgets``, ``preset zoo
                                    train`` (a run of ``zoo train``, without bench.json)
setting_key             string      the setting as canonical JSON (tables group by it)
config_hash             string      the run directory's hash part
seed                    Int64       from ``seed<k>``
status                  string      ``finished`` | ``failed`` | ``unreadable`` (a result.json or error.json that
                                    is not a JSON object: never counted as finished, never silently dropped)
diverged                bool        result.json says the divergence guard stopped the run (finished, marked)
score, return           float64     final normalized score and return (mean of the last ``eval.last_k`` evals)
steps                   Int64       learner steps done
wall_s                  float64     training seconds
device                  string      result.json's, else environment.json's, else the config's ``device``
noise, loader           string      evaluation noise setting and dataset loader mode
eval_env, mujoco        string      evaluation env id and MuJoCo version
error                   string      first line of error.json's message, or why a file is unreadable
unreadable_file         string      the path of the unreadable file (status ``unreadable``)
run_dir                 string      the run directory
mtime                   float64     modification time of the file that decided the status
======================  ==========  ==========================================================================

Missing values are ``<NA>`` (string, Int64) or NaN (float64). :func:`load_curves` gives one row per evaluation
in ``metrics.jsonl`` (:data:`CURVE_COLUMNS`). :func:`latest_runs` keeps, per leaderboard cell and seed, the run
the leaderboard counts.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

TRAIN_PRESET = "zoo train"  # the setting of runs written by `zoo train` (no bench.json)

RUN_COLUMNS: dict[str, str] = {
    "suite": "string",
    "task": "string",
    "algo": "string",
    "label": "string",
    "setting": "string",
    "setting_key": "string",
    "config_hash": "string",
    "seed": "Int64",
    "status": "string",
    "diverged": "bool",
    "score": "float64",
    "return": "float64",
    "steps": "Int64",
    "wall_s": "float64",
    "device": "string",
    "noise": "string",
    "loader": "string",
    "eval_env": "string",
    "mujoco": "string",
    "error": "string",
    "unreadable_file": "string",
    "run_dir": "string",
    "mtime": "float64",
}

CURVE_COLUMNS: dict[str, str] = {
    "suite": "string",
    "task": "string",
    "algo": "string",
    "label": "string",
    "setting_key": "string",
    "config_hash": "string",
    "seed": "Int64",
    "step": "int64",
    "score": "float64",
    "return_mean": "float64",
    "return_std": "float64",
    "length_mean": "float64",
}

CELL_KEY: tuple[str, ...] = ("suite", "setting_key", "label", "task", "seed")


class _Unreadable(Exception):
    """A run file that exists but is not a JSON object."""


def _read_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no such file; _Unreadable when it cannot be read."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _Unreadable(f"{type(err).__name__}: {err}") from None
    if not isinstance(data, dict):
        raise _Unreadable(f"expected a JSON object, found {type(data).__name__}")
    return data


def _lenient(path: Path) -> dict[str, Any]:
    try:
        return _read_object(path) or {}
    except _Unreadable:
        return {}


@dataclass(frozen=True)
class RunStatus:
    """What one run directory's result files say: ``finished``, ``failed``, ``unreadable`` or None (neither
    file: not started, or still running); ``detail`` is the error line or why a file is unreadable."""

    status: str | None
    detail: str = ""
    file: Path | None = None
    result: dict[str, Any] | None = None


def run_status(run_dir: Path) -> RunStatus:
    """Classify one run directory from its ``result.json`` and ``error.json`` (the planner's question)."""
    run_dir = Path(run_dir)
    result_path, error_path = run_dir / "result.json", run_dir / "error.json"
    try:
        result = _read_object(result_path)
    except _Unreadable as why:
        return RunStatus("unreadable", f"unreadable result.json ({why})", result_path)
    if result is not None:
        return RunStatus("finished", "", result_path, result)
    try:
        error = _read_object(error_path)
    except _Unreadable as why:
        return RunStatus("unreadable", f"unreadable error.json ({why})", error_path)
    if error is not None:
        first = str(error.get("error") or "unknown error").splitlines()
        return RunStatus("failed", first[0] if first else "unknown error", error_path)
    return RunStatus(None)


def setting_key(preset: str | None, overrides: list[str] | tuple[str, ...] = (), device: str = "cpu") -> str:
    """The canonical text of a sweep setting (equal to :meth:`zoo.bench.grid.Setting.key`); GPU runs (``device``
    kind ``cuda``) have settings of their own, CPU keys are as they were."""
    d: dict[str, Any] = {"preset": preset, "set": list(overrides)}
    if device != "cpu":
        d["device"] = device
    return json.dumps(d, sort_keys=True)


def describe_setting(preset: str | None, overrides: list[str] | tuple[str, ...] = (), device: str = "cpu") -> str:
    """Human text of a setting (equal to :meth:`zoo.bench.grid.Setting.describe`)."""
    text = f"preset {preset}" if preset else "recipe budgets"
    if overrides:
        text += " · --set " + " ".join(overrides)
    if device != "cpu":
        text += f" · on {device}"
    return text


def _device_kind(device: Any) -> str:
    """``cuda:1`` -> ``cuda``; missing or ``auto`` (a run older than the device records) counts as ``cpu``."""
    text = str(device or "cpu").split(":")[0]
    return "cpu" if text in ("", "auto") else text


def flatten_config(tree: dict[str, Any], prefix: str = "cfg.") -> dict[str, Any]:
    """``{"learner": {"target_min": 0.0}}`` -> ``{"cfg.learner.target_min": 0.0}``; lists become tuples."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((run_dir / "config.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return pd.NA


def _text(value: Any) -> Any:
    return pd.NA if value is None else str(value)


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """One row of :func:`load_runs` (config columns included), or None when the directory is not a run with
    a result, an error or an unreadable result file."""
    run_dir = Path(run_dir)
    try:
        seed = int(run_dir.name.removeprefix("seed"))
    except ValueError:
        return None
    state = run_status(run_dir)
    if state.status is None:
        return None
    bench = _lenient(run_dir / "bench.json")
    result = state.result or {}
    src = result or bench
    suite_dir, task_dir, algo_dir = run_dir.parents[3], run_dir.parents[2], run_dir.parents[1]
    algo = str(src.get("algo") or bench.get("algo") or algo_dir.name)
    if "setting" in bench:
        preset, overrides = bench["setting"].get("preset"), list(bench["setting"].get("overrides", ()))
    else:
        preset, overrides = TRAIN_PRESET, []
    config = _read_config(run_dir)
    device = result.get("device") or _lenient(run_dir / "environment.json").get("device") or config.get("device")
    kind = _device_kind(device)  # CPU and GPU scores never share a table (issue 13)
    row: dict[str, Any] = {
        "suite": str(src.get("suite") or bench.get("suite") or suite_dir.name),
        "task": str(src.get("task") or bench.get("task") or task_dir.name),
        "algo": algo,
        "label": str(bench.get("label") or algo),
        "setting": describe_setting(preset, overrides, kind),
        "setting_key": setting_key(preset, overrides, kind),
        "config_hash": run_dir.parent.name,
        "seed": seed,
        "status": state.status,
        "diverged": bool(result.get("diverged", False)),
        "score": _float(result.get("score")) if result else math.nan,
        "return": _float(result.get("return")) if result else math.nan,
        "steps": _int(result.get("steps", 0)) if result else pd.NA,
        "wall_s": _float(result.get("wall_s")) if result else math.nan,
        "device": _text(device),
        "noise": _text(result.get("noise")),
        "loader": _text(result.get("loader")),
        "eval_env": _text(result.get("eval_env")),
        "mujoco": _text(result.get("mujoco")),
        "error": state.detail or pd.NA,
        "unreadable_file": str(state.file) if state.status == "unreadable" else pd.NA,
        "run_dir": str(run_dir),
        "mtime": state.file.stat().st_mtime if state.file is not None else math.nan,
    }
    row.update(flatten_config(config))
    return row


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def _suite_dirs(path: Path, suites: list[str] | None) -> list[Path]:
    from zoo.tasks.task import safe_name

    root = Path(path) / "runs"
    if not root.is_dir():
        return []
    wanted = {safe_name(s) for s in suites} if suites else None
    return [p for p in sorted(root.iterdir()) if p.is_dir() and (wanted is None or p.name in wanted)]


def load_runs(path: str | Path = "results", suites: list[str] | None = None) -> pd.DataFrame:
    """One row per run directory under ``<path>/runs`` (of the given suites), sorted by suite, task, algo,
    config hash and seed; columns and dtypes as in this module's docstring."""
    rows = []
    for suite_dir in _suite_dirs(Path(path), suites):
        for run_dir in sorted(suite_dir.glob("*/*/*/seed*")):
            row = read_run(run_dir)
            if row is not None:
                rows.append(row)
    if not rows:
        return _empty(RUN_COLUMNS)
    frame = pd.DataFrame(rows)
    config_columns = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
    frame = frame[[*RUN_COLUMNS, *config_columns]].astype(RUN_COLUMNS)
    for column in config_columns:
        frame[column] = frame[column].infer_objects()
    return frame.reset_index(drop=True)


def latest_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (suite, setting, column, task, seed) the run a leaderboard counts: a finished run beats a failed or
    unreadable one, and among equals the newest file wins (a recipe edited between sweeps gives a cell runs
    under two config hashes). Rows keep the order of ``runs``."""
    if runs.empty:
        return runs
    order = range(len(runs))
    rank = runs.assign(_finished=(runs["status"] == "finished").astype(int), _order=order, _first=[-k for k in order])
    rank = rank.sort_values(["_finished", "mtime", "_first"], kind="stable")  # ties: the first directory wins
    keep = rank.drop_duplicates(list(CELL_KEY), keep="last")["_order"]
    return runs.iloc[sorted(keep)]


def read_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every evaluation record (``kind == "eval"`` with a score) of a run's ``metrics.jsonl``; lines that do
    not parse (a line cut by a kill) are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "eval" and "score" in record:
            records.append(record)
    return records


def load_curves(path: str | Path = "results", runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per evaluation of every run under ``<path>/runs`` (or of the rows of ``runs``, a
    :func:`load_runs` frame), with the run's identity columns; columns and dtypes :data:`CURVE_COLUMNS`."""
    runs = load_runs(path) if runs is None else runs
    rows = []
    ident = [c for c in CURVE_COLUMNS if c in RUN_COLUMNS]
    for run in runs[[*ident, "run_dir"]].itertuples(index=False):
        base = {c: getattr(run, c) for c in ident}
        for record in read_curve(run.run_dir):
            rows.append(
                {
                    **base,
                    "step": int(record.get("step", 0)),
                    "score": _float(record.get("score")),
                    "return_mean": _float(record.get("return_mean")),
                    "return_std": _float(record.get("return_std")),
                    "length_mean": _float(record.get("length_mean")),
                }
            )
    if not rows:
        return _empty(CURVE_COLUMNS)
    return pd.DataFrame(rows)[list(CURVE_COLUMNS)].astype(CURVE_COLUMNS).reset_index(drop=True)
