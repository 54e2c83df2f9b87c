"""Published D4RL -v2 normalized scores, shown beside ours in clean D4RL leaderboards (evaluation.md §6).

Reference only: they were produced with other code, budgets and evaluation envs (D4RL's gym-v2 MuJoCo,
where we evaluate on Gymnasium v4). Grades as in evaluation.md §6: B = a rerun published by the codebase's
maintainers, C = a third-party compilation of paper values. Noisy suites never get reference columns.
"""

from __future__ import annotations

from dataclasses import dataclass

_TASKS_9 = (
    "halfcheetah-medium",
    "hopper-medium",
    "walker2d-medium",
    "halfcheetah-medium-replay",
    "hopper-medium-replay",
    "walker2d-medium-replay",
    "halfcheetah-medium-expert",
    "hopper-medium-expert",
    "walker2d-medium-expert",
)
_TASKS_12 = (
    "halfcheetah-random",
    "hopper-random",
    "walker2d-random",
    *_TASKS_9,
)


@dataclass(frozen=True)
class ReferenceColumn:
    """Published per-task scores of one algorithm from one source."""

    algo: str  # the zoo recipe it corresponds to
    source: str  # short label shown in the table header
    grade: str
    citation: str
    scores: dict[str, tuple[float, float | None]]  # task (without -v2) -> (mean, std or None)

    @property
    def header(self) -> str:
        return f"{self.algo} ({self.source}, {self.grade})"


def _column(algo: str, source: str, grade: str, citation: str, tasks: tuple[str, ...], cells: str) -> ReferenceColumn:
    values: list[tuple[float, float | None]] = []
    for cell in cells.split():
        mean, _, std = cell.partition("±")
        values.append((float(mean), float(std) if std else None))
    if len(values) != len(tasks):
        raise ValueError(f"reference column {algo}/{source}: {len(values)} values for {len(tasks)} tasks")
    return ReferenceColumn(algo, source, grade, citation, dict(zip(tasks, values, strict=True)))


_OLK = "OfflineRL-Kit README, 'Benchmark Results (4 seeds)' (evaluation.md §6.1)"
_PAPERS = "paper values via a third-party compilation (evaluation.md §6.2)"

REFERENCE_COLUMNS: tuple[ReferenceColumn, ...] = (
    _column(
        "mopo",
        "OLK",
        "B",
        _OLK,
        _TASKS_9,
        "72.4±4.2 62.8±38.1 84.1±3.2 72.1±3.8 92.7±20.7 85.9±5.3 83.6±12.5 74.6±44.2 108.2±4.3",
    ),
    _column(
        "rambo",
        "OLK",
        "B",
        _OLK,
        _TASKS_9,
        "78.7±1.1 82.1±38.0 86.1±1.0 68.5±3.6 93.4±11.4 73.7±6.5 98.8±4.3 85.0±30.7 78.4±45.4",
    ),
    _column(
        "combo",
        "OLK",
        "B",
        _OLK,
        _TASKS_9,
        "71.9±8.5 84.7±9.3 83.9±2.0 66.5±6.5 90.1±25.2 89.4±6.4 98.2±0.2 108.8±2.6 110.0±0.2",
    ),
    _column(
        "mobile",
        "OLK",
        "B",
        _OLK,
        _TASKS_9,
        "75.8±0.8 103.6±1.0 88.3±2.5 71.9±3.2 105.1±1.3 90.5±1.7 100.9±1.5 112.5±0.2 114.5±2.2",
    ),
    _column("combo", "paper", "C", _PAPERS, _TASKS_12, "38.8 17.9 7.0 54.2 97.2 81.9 55.1 89.5 56.0 90.0 111.1 103.3"),
    _column(
        "mobile", "paper", "C", _PAPERS, _TASKS_12, "39.3 31.9 17.9 74.6 106.6 87.7 71.7 103.9 89.9 108.2 112.6 115.2"
    ),
    _column("rambo", "paper", "C", _PAPERS, _TASKS_12, "40.0 21.6 11.5 77.6 92.8 86.9 68.9 96.6 85.0 93.7 83.3 68.3"),
)


def reference_task(task: str) -> str | None:
    """The §6 table key of a clean D4RL task name (``hopper-medium-v2`` → ``hopper-medium``), else None."""
    return task.removesuffix("-v2") if task.endswith("-v2") else None


def reference_columns(algos: list[str], tasks: list[str]) -> list[ReferenceColumn]:
    """The published columns for the recipes among ``algos`` that cover at least one of ``tasks``."""
    keys = {reference_task(t) for t in tasks} - {None}
    return [col for col in REFERENCE_COLUMNS if col.algo in algos and keys & set(col.scores)]
