"""The words and numbers of a leaderboard, shared by every renderer: cell texts, rows, headers, notes
(evaluation.md §5)."""

from __future__ import annotations

import math

from zoo.bench.leaderboard.model import Cell, Leaderboard
from zoo.bench.stats import Interval

DIVERGED_MARK = "†"  # a cell with a seed stopped by the divergence guard


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def cell_text(cell: Cell | None, pm: str = "±") -> str:
    if cell is None:
        return "—"
    mark = DIVERGED_MARK if cell.diverged else ""
    if cell.n > 1:
        return f"{cell.mean:.1f} {pm} {cell.std:.1f} ({cell.n}){mark}"
    return f"{cell.mean:.1f} ({cell.n}){mark}"


def ref_text(value: tuple[float, float | None] | None, pm: str = "±") -> str:
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:.1f}" if std is None else f"{mean:.1f} {pm} {std:.1f}"


def iqm_text(iv: Interval | None) -> str:
    if iv is None:
        return "—"
    return f"{iv.point:.1f} [{iv.low:.1f}, {iv.high:.1f}]"


def total_text(board: Leaderboard, label: str) -> str:
    total, k = board.total(label)
    if k == 0:
        return "—"
    return f"{total:.1f}" if k == len(board.tasks) else f"{total:.1f} ({k}/{len(board.tasks)} tasks)"


def budget_text(board: Leaderboard) -> str:
    budgets = {lab: steps for lab, steps in board.steps.items() if steps}
    distinct = sorted({s for steps in budgets.values() for s in steps})
    if len(distinct) == 1:
        return f"{distinct[0]:,} learner steps per run"
    return "learner steps: " + ", ".join(f"{lab} {'/'.join(f'{s:,}' for s in st)}" for lab, st in budgets.items())


def info_text(board: Leaderboard) -> str:
    parts = [budget_text(board)]
    for key, values in board.info.items():
        if values:
            parts.append(f"{key} {', '.join(values)}")
    return "; ".join(parts)


def rows(board: Leaderboard, pm: str = "±") -> list[tuple[str, list[str], set[int]]]:
    """(row name, cell texts, indices of marked cells) for the task rows and the aggregate rows."""
    out = []
    for task in board.tasks:
        best = board.best(task)
        texts = [cell_text(board.cells.get((task, lab)), pm) for lab in board.labels]
        texts += [ref_text(board.reference_cell(col, task), pm) for col in board.references]
        out.append((task, texts, {i for i, lab in enumerate(board.labels) if lab in best}))
    best = board.best_total()
    texts = [total_text(board, lab) for lab in board.labels]
    texts += [_fmt(board.reference_total(col)) for col in board.references]
    out.append(("total", texts, {i for i, lab in enumerate(board.labels) if lab in best}))
    best = board.best_iqm()
    texts = [iqm_text(board.iqm.get(lab)) for lab in board.labels] + ["" for _ in board.references]
    out.append(("IQM [95% CI]", texts, {i for i, lab in enumerate(board.labels) if lab in best}))
    return out


def headers(board: Leaderboard) -> list[str]:
    return ["task", *board.labels, *(col.header for col in board.references)]


def notes(board: Leaderboard) -> list[str]:
    out = [
        "Cells: mean ± sample std (ddof 1) over seeds of the final normalized score (mean of the last "
        "eval.last_k evaluations), seed count in parentheses; the best mean of each row is marked.",
        "total: sum of the per-task means. IQM: interquartile mean of every (task, seed) score with a "
        f"stratified-bootstrap 95% interval ({next(iter(board.iqm.values())).reps if board.iqm else 0} "
        "replicates, percentile method, as rliable).",
    ]
    if board.references:
        sources = sorted({f"{c.source} ({c.grade}): {c.citation}" for c in board.references})
        out.append("Published scores (reference only; other code and eval envs): " + "; ".join(sources) + ".")
    if board.noisy:
        out.append("Noisy-observation evaluation: never compare with clean tables.")
    for label, items in sorted(board.failed.items()):
        out.append(f"failed runs of {label} (not in the table): " + "; ".join(items))
    if board.any_diverged:
        out.append(
            f"{DIVERGED_MARK} a seed of this cell was stopped by the divergence guard; its score (the mean of "
            "its last evaluations) is counted."
        )
    if board.unreadable:
        out.append(
            "unreadable run files (not in the table; `zoo bench --retry-failed` reruns them): "
            + "; ".join(board.unreadable)
        )
    return out


def improvement_text(iv: Interval) -> str:
    return f"{iv.point:.2f} [{iv.low:.2f}, {iv.high:.2f}]"


def aggregate_notes(board: Leaderboard) -> list[str]:
    """What the performance profiles and the P(improvement) matrix show (Agarwal et al., 2021; rliable)."""
    out = []
    if board.profiles:
        reps = next(iter(board.profiles.values())).reps
        out.append(
            "Performance profiles: the fraction of (task, seed) runs whose final normalized score is above τ, "
            f"with a pointwise 95% stratified-bootstrap band ({reps} replicates), rliable's score distributions."
        )
    if board.improvement:
        reps = next(iter(board.improvement.values())).reps
        out.append(
            "P(X > Y): for each task both columns ran, the probability that a run of X scores above a run of Y "
            "(Mann-Whitney U / (n_X·n_Y), ties one half), averaged over those tasks; 95% interval from "
            f"{reps} stratified bootstrap replicates resampling X's and Y's seeds independently within each task "
            "(rliable). Green: the interval is above 0.5; red: below."
        )
    return out
