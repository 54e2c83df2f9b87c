"""The result store: ``<out>/runs`` is the source of truth (issue 5, items 2 and 5).

A run directory holds ``result.json`` once finished, ``error.json`` when it failed, and ``bench.json`` when a
sweep planned it (its leaderboard column and setting). Reading the store never changes it; the leaderboard
is a pure function of what is read here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zoo.bench.grid import Setting

TRAIN_SETTING = Setting(preset="zoo train")  # runs written by `zoo train`, without bench.json


@dataclass
class RunRecord:
    """One run directory as the leaderboard sees it."""

    suite: str
    task: str
    algo: str
    label: str
    seed: int
    setting: Setting
    status: str  # finished | failed
    run_dir: Path
    config_hash: str
    score: float = math.nan
    steps: int = 0
    wall_s: float = math.nan
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    def curve(self) -> list[tuple[int, float]]:
        return load_curve(self.run_dir)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_run(run_dir: Path) -> RunRecord | None:
    """The record of one run directory, or None when it holds neither a result nor an error."""
    result = _read_json(run_dir / "result.json")
    error = None if result is not None else _read_json(run_dir / "error.json")
    if result is None and error is None:
        return None
    bench = _read_json(run_dir / "bench.json") or {}
    try:
        seed = int(run_dir.name.removeprefix("seed"))
    except ValueError:
        return None
    algo_dir, task_dir, suite_dir = run_dir.parent.parent, run_dir.parent.parent.parent, run_dir.parents[3]
    src = result or bench
    suite = str(src.get("suite") or bench.get("suite") or suite_dir.name)
    task = str(src.get("task") or bench.get("task") or task_dir.name)
    algo = str(src.get("algo") or bench.get("algo") or algo_dir.name)
    setting = Setting.from_dict(bench["setting"]) if "setting" in bench else TRAIN_SETTING
    environment = _read_json(run_dir / "environment.json") or {}
    kind = (result or {}).get("device_kind") or environment.get("device_kind") or setting.device
    setting = replace(setting, device=str(kind))  # GPU runs get tables of their own
    record = RunRecord(
        suite=suite,
        task=task,
        algo=algo,
        label=str(bench.get("label") or algo),
        seed=seed,
        setting=setting,
        status="finished" if result is not None else "failed",
        run_dir=run_dir,
        config_hash=run_dir.parent.name,
    )
    if result is not None:
        record.result = result
        record.score = float(result.get("score", math.nan))
        record.steps = int(result.get("steps", 0))
        record.wall_s = float(result.get("wall_s", math.nan))
    else:
        assert error is not None
        record.error = str(error.get("error", "unknown error"))
    return record


def scan_runs(out: Path, suites: list[str] | None = None) -> list[RunRecord]:
    """Every finished or failed run under ``<out>/runs`` (of the given suites), in a fixed order. When one
    (suite, setting, column, task, seed) has several run directories (a recipe edited between sweeps), the
    most recent result wins."""
    from zoo.tasks.task import safe_name

    root = Path(out) / "runs"
    if not root.is_dir():
        return []
    wanted = {safe_name(s) for s in suites} if suites else None
    records: dict[tuple[str, ...], tuple[float, RunRecord]] = {}
    for suite_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if wanted is not None and suite_dir.name not in wanted:
            continue
        for run_dir in sorted(suite_dir.glob("*/*/*/seed*")):
            record = read_run(run_dir)
            if record is None:
                continue
            key = (record.suite, record.setting.key(), record.label, record.task, str(record.seed))
            marker = run_dir / ("result.json" if record.status == "finished" else "error.json")
            # A finished run always beats a failed one; among equals the newest file wins.
            rank = (1.0 if record.status == "finished" else 0.0, marker.stat().st_mtime)
            previous = records.get(key)
            if previous is None or rank > previous[0]:
                records[key] = (rank, record)
    return [rec for _, rec in sorted(records.values(), key=lambda item: _order(item[1]))]


def _order(rec: RunRecord) -> tuple[Any, ...]:
    return (rec.suite, rec.setting.key(), rec.task, rec.label, rec.seed)


def load_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, normalized score) of every evaluation in a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    curve = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == "eval" and "score" in record:
            curve.append((int(record["step"]), float(record["score"])))
    return curve


def last_progress(run_dir: Path) -> tuple[int, float | None]:
    """(last logged step, last evaluation score) from the tail of ``metrics.jsonl`` (live progress)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return 0, None
    step, score = 0, None
    for line in tail.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = max(step, int(record.get("step", 0)))
        if record.get("kind") == "eval":
            score = float(record.get("score", math.nan))
    return step, score
