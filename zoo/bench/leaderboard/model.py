"""The leaderboard tables as data: one :class:`Leaderboard` per (suite, setting), built from the frames of
:mod:`zoo.results` (issue 5, item 5; issue 12, item 3; evaluation.md §5)."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from zoo.bench.grid import Setting
from zoo.bench.references import ReferenceColumn, reference_columns, reference_task
from zoo.bench.stats import (
    BOOTSTRAP_REPS,
    PROFILE_REPS,
    Interval,
    Profile,
    mean_std,
    performance_profile,
    probability_of_improvement,
    stratified_bootstrap_iqm,
)
from zoo.results import latest_runs, load_curves


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    scores: dict[int, float]  # seed -> final score
    diverged: tuple[int, ...] = ()  # seeds stopped by the divergence guard (scored, marked)


@dataclass
class Leaderboard:
    """One (suite, setting) table."""

    suite: str
    setting: Setting
    description: str
    noisy: bool
    tasks: list[str]
    labels: list[str]
    cells: dict[tuple[str, str], Cell]
    failed: dict[str, list[str]]  # label -> "task seed k: error"
    references: list[ReferenceColumn]
    iqm: dict[str, Interval]
    steps: dict[str, list[int]]  # label -> distinct step budgets
    info: dict[str, list[str]]  # loader, eval env, mujoco, noise: distinct values
    curves: dict[str, dict[str, list[list[tuple[int, float]]]]] = field(default_factory=dict)  # task->label->seeds
    unreadable: list[str] = field(default_factory=list)  # "path: why" of run files that cannot be read
    reps: int = BOOTSTRAP_REPS  # bootstrap replicates of the IQM and P(improvement) intervals
    profiles: dict[str, Profile] = field(default_factory=dict)  # label -> performance profile (add_aggregates)
    improvement: dict[tuple[str, str], Interval] = field(default_factory=dict)  # (x, y) -> P(x > y)

    @property
    def title(self) -> str:
        return f"{self.suite} · {self.setting.describe()}"

    def best(self, task: str) -> set[str]:
        means = {lab: self.cells[(task, lab)].mean for lab in self.labels if (task, lab) in self.cells}
        return _argmax(means)

    def total(self, label: str) -> tuple[float, int]:
        """(sum over tasks of the per-task means, how many tasks have a result)."""
        means = [self.cells[(t, label)].mean for t in self.tasks if (t, label) in self.cells]
        return float(sum(means)), len(means)

    def best_total(self) -> set[str]:
        complete = {lab: self.total(lab)[0] for lab in self.labels if self.total(lab)[1] == len(self.tasks)}
        return _argmax(complete)

    def best_iqm(self) -> set[str]:
        return _argmax({lab: iv.point for lab, iv in self.iqm.items()})

    def reference_cell(self, col: ReferenceColumn, task: str) -> tuple[float, float | None] | None:
        key = reference_task(task)
        return col.scores.get(key) if key else None

    def reference_total(self, col: ReferenceColumn) -> float | None:
        cells = [self.reference_cell(col, t) for t in self.tasks]
        if any(c is None for c in cells):
            return None
        return float(sum(c[0] for c in cells if c is not None))

    def score_groups(self, label: str) -> list[list[float]]:
        """The per-seed final scores of one column, one list per task with a result (the bootstrap's strata)."""
        return [list(self.cells[(t, label)].scores.values()) for t in self.tasks if (t, label) in self.cells]

    @property
    def any_diverged(self) -> bool:
        return any(cell.diverged for cell in self.cells.values())

    @property
    def slug(self) -> str:
        return self.setting.slug()


def _argmax(values: dict[str, float]) -> set[str]:
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if not finite:
        return set()
    top = max(finite.values())
    return {k for k, v in finite.items() if v == top}


_NUMBER = re.compile(r"(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


def label_order(label: str) -> tuple[tuple[int, float, str], ...]:
    """Sort key for column labels: text in alphabetical order, numbers by value, so a sweep
    ``penalty.coef=1.0,5.0,20.0`` gives the columns 1.0, 5.0, 20.0 (not 1.0, 20.0, 5.0)."""
    key = []
    for k, part in enumerate(_NUMBER.split(label)):
        if k % 2:
            key.append((0, float(part), ""))
        elif part:
            key.append((1, 0.0, part))
    return tuple(key)


def setting_of(key: str) -> Setting:
    """The :class:`Setting` of a ``setting_key`` column value."""
    d = json.loads(key)
    return Setting(d.get("preset"), tuple(d.get("set", ())), str(d.get("device", "cpu")))


def _suite_info(suite: str) -> tuple[list[str], str, bool]:
    try:
        from zoo.tasks.suites import load_suite

        s = load_suite(suite)
        return list(s.task_names), s.description, s.noisy
    except Exception:  # a suite file removed since: order what the runs hold
        return [], "", False


INFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("loader", "loader"),
    ("eval env", "eval_env"),
    ("mujoco", "mujoco"),
    ("noise", "noise"),
)


CLAMP_KEY = "target clamp (learner.target_min)"  # the critic-target clamp, config key learner.target_min (sac.md §6 #5)


def clamp_texts(finished: pd.DataFrame, labels: list[str]) -> list[str]:
    """The critic-target clamp of the table's runs (``learner.target_min``; -inf means none): one value when
    every column shares it, else one entry per column ("mobile 0.0"); nothing when no config records it."""
    column = "cfg.learner.target_min"
    if column not in finished.columns:
        return []

    def text(v: float) -> str:
        return "off" if v == -math.inf else str(v)

    per_label = {}
    for label in labels:
        values = sorted({float(v) for v in finished.loc[finished["label"] == label, column].dropna()})
        if values:
            per_label[label] = "/".join(text(v) for v in values)
    if len(set(per_label.values())) == 1:
        return [next(iter(per_label.values()))]
    return [f"{label} {value}" for label, value in per_label.items()]


def build_leaderboards(
    runs: pd.DataFrame, reps: int | None = None, with_curves: bool = True, curves: pd.DataFrame | None = None
) -> list[Leaderboard]:
    """Group a :func:`zoo.results.load_runs` frame into (suite, setting) tables. Each cell counts the run of
    :func:`zoo.results.latest_runs`; ``curves`` (a :func:`zoo.results.load_curves` frame) is read from the run
    directories when not given."""
    if runs.empty:
        return []
    unreadable = runs[runs["status"] == "unreadable"]
    # A finished run without a score (eval.episodes = 0: nothing was evaluated) never enters a table, nor
    # displaces a scored run of its cell as the latest one.
    runs = runs[(runs["status"] != "finished") | runs["score"].notna()]
    runs = latest_runs(runs[runs["status"] != "unreadable"])
    runs = runs.sort_values(["suite", "setting_key", "task", "label", "seed"], kind="stable")
    if with_curves and curves is None:
        curves = load_curves(runs=runs[runs["status"] == "finished"])
    boards = []
    for (suite, key), group in runs.groupby(["suite", "setting_key"], sort=True):
        bad = unreadable[(unreadable["suite"] == suite) & (unreadable["setting_key"] == key)]
        board = _build_one(str(suite), setting_of(str(key)), group, reps or BOOTSTRAP_REPS)
        board.reps = reps or BOOTSTRAP_REPS
        board.unreadable = [f"{r.unreadable_file}: {r.error}" for r in bad.itertuples()]
        if with_curves and curves is not None:
            _attach_curves(board, group, curves)
        boards.append(board)
    done = {(b.suite, b.setting.key()) for b in boards}
    for (suite, key), bad in unreadable.groupby(["suite", "setting_key"], sort=True):  # nothing else readable
        if (suite, key) not in done:
            board = _build_one(str(suite), setting_of(str(key)), bad.iloc[:0], reps or BOOTSTRAP_REPS)
            board.unreadable = [f"{r.unreadable_file}: {r.error}" for r in bad.itertuples()]
            boards.append(board)
    return sorted(boards, key=lambda b: (b.suite, b.setting.key()))


def _build_one(suite: str, setting: Setting, recs: pd.DataFrame, reps: int) -> Leaderboard:
    suite_tasks, description, noisy = _suite_info(suite)
    present = set(recs["task"])
    tasks = [t for t in suite_tasks if t in present] + sorted(present - set(suite_tasks))
    labels = sorted(set(recs["label"]), key=label_order)
    finished = recs[recs["status"] == "finished"]
    by_cell: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    diverged: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in finished.itertuples():
        by_cell[(r.task, r.label)][int(r.seed)] = float(r.score)
        if r.diverged:
            diverged[(r.task, r.label)].append(int(r.seed))
    cells = {}
    for key, seeds in by_cell.items():
        scores = dict(sorted(seeds.items()))
        mean, std, n = mean_std(list(scores.values()))
        cells[key] = Cell(mean, std, n, scores, tuple(sorted(diverged.get(key, ()))))
    failed: dict[str, list[str]] = defaultdict(list)
    for r in recs[recs["status"] == "failed"].itertuples():
        error = r.error if isinstance(r.error, str) and r.error else "?"
        failed[r.label].append(f"{r.task} seed {r.seed}: {error}")
    iqm = {}
    for label in labels:
        per_task = [list(cells[(t, label)].scores.values()) for t in tasks if (t, label) in cells]
        if per_task:
            iqm[label] = stratified_bootstrap_iqm(per_task, reps=reps)
    steps = {lab: sorted({int(s) for s in finished.loc[finished["label"] == lab, "steps"]}) for lab in labels}
    info: dict[str, list[str]] = {}
    for key, column in INFO_FIELDS:
        info[key] = sorted({str(v) for v in finished[column].dropna()})
        if key == "loader":
            info[CLAMP_KEY] = clamp_texts(finished, labels)
    clean_d4rl = not noisy and any(reference_task(t) for t in tasks) and suite.startswith("d4rl")
    refs = reference_columns(sorted(set(recs["algo"])), tasks) if clean_d4rl else []
    return Leaderboard(
        suite=suite,
        setting=setting,
        description=description,
        noisy=noisy,
        tasks=tasks,
        labels=labels,
        cells=cells,
        failed=dict(failed),
        references=refs,
        iqm=iqm,
        steps=steps,
        info=info,
    )


def _attach_curves(board: Leaderboard, recs: pd.DataFrame, curves: pd.DataFrame) -> None:
    """task -> label -> one [(step, score)] list per finished seed, in the order of the table's runs."""
    if curves.empty:
        return
    finished = recs[recs["status"] == "finished"]
    wanted = set(zip(finished["task"], finished["label"], finished["seed"], finished["config_hash"], strict=True))
    mine = curves[(curves["suite"] == board.suite) & (curves["setting_key"] == board.setting.key())]
    per_run: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for c in mine.itertuples():
        key = (c.task, c.label, c.seed, c.config_hash)
        if key in wanted:
            per_run[key].append((int(c.step), float(c.score)))
    for r in finished.itertuples():
        curve = per_run.get((r.task, r.label, r.seed, r.config_hash))
        if curve:
            board.curves.setdefault(r.task, {}).setdefault(r.label, []).append(curve)


def profile_taus(board: Leaderboard, points: int = 101) -> np.ndarray:
    """Thresholds of the performance profiles: from min(0, lowest score) to max(100, highest score)."""
    scores = [s for cell in board.cells.values() for s in cell.scores.values() if math.isfinite(s)]
    low = min([0.0, *scores])
    high = max([100.0, *scores])
    return np.linspace(low, high, points)


def add_aggregates(board: Leaderboard) -> Leaderboard:
    """Fill ``board.profiles`` (every column, rliable's run-score distribution with its stratified-bootstrap
    band) and ``board.improvement`` (every ordered pair of columns, P(x > y) with its interval); both are
    deterministic (fixed bootstrap seed)."""
    taus = profile_taus(board)
    for label in board.labels:
        groups = board.score_groups(label)
        if groups:
            board.profiles[label] = performance_profile(groups, taus, reps=min(board.reps, PROFILE_REPS))
    for i, x in enumerate(board.labels):
        for y in board.labels[i + 1 :]:
            board.improvement[(x, y)] = iv = improvement(board, x, y)
            board.improvement[(y, x)] = _mirror(iv)
    return board


def _mirror(iv: Interval) -> Interval:
    return Interval(1.0 - iv.point, 1.0 - iv.high, 1.0 - iv.low, iv.reps, iv.n_tasks, iv.n_scores)


def improvement(board: Leaderboard, x: str, y: str) -> Interval:
    """P(x > y) over the table's tasks where both columns have scores (:func:`probability_of_improvement`).
    It is computed for the pair in the table's column order; the other order is its mirror image, replicate by
    replicate P(y > x) = 1 - P(x > y), so the interval is (1 - high, 1 - low)."""
    if board.labels.index(x) > board.labels.index(y):
        return _mirror(improvement(board, y, x))
    xs = [list(board.cells[(t, x)].scores.values()) if (t, x) in board.cells else [] for t in board.tasks]
    ys = [list(board.cells[(t, y)].scores.values()) if (t, y) in board.cells else [] for t in board.tasks]
    return probability_of_improvement(xs, ys, reps=board.reps)


def compare_columns(boards: list[Leaderboard], x: str, y: str) -> list[tuple[Leaderboard, Interval]]:
    """P(x > y) in every table that has both columns (each table's own tasks and seeds)."""
    return [(b, improvement(b, x, y)) for b in boards if x in b.labels and y in b.labels]
