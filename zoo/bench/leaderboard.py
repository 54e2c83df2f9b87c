"""Leaderboards from ``<out>/runs`` (issue 5, item 5; evaluation.md §5).

One table per (suite, setting): a row per task, a column per algorithm (a recipe, or a recipe at one sweep
point), each cell the mean ± sample std over seeds of the per-seed final score (the mean of the last
``eval.last_k`` evaluations) with the seed count; the best mean of each row is marked. Below the tasks:
the per-suite total (sum of the per-task means, evaluation.md §5.5) and the IQM over every (task, seed) score
with its stratified-bootstrap 95% interval (:mod:`zoo.bench.stats`). Clean D4RL tables show the published
scores of evaluation.md §6 beside ours; noisy suites are separate tables without them. Each table also gets
a learning-curve plot per task (matplotlib PNG, mean ± std over seeds of the evaluation scores).

Formats: ``md``, ``csv`` (tidy: one row per cell, per-seed scores kept), ``tex`` (booktabs), ``html`` (tables
and plots on one page), plus a rich table for the terminal. Regenerating from the same run directories writes
the same bytes: nothing is retrained, the bootstrap has a fixed seed, no timestamps are written.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.bench.grid import Setting
from zoo.bench.references import ReferenceColumn, reference_columns, reference_task
from zoo.bench.stats import Interval, mean_std, stratified_bootstrap_iqm
from zoo.bench.store import RunRecord, scan_runs
from zoo.io import atomic_write, atomic_write_text

FORMATS: tuple[str, ...] = ("md", "csv", "tex", "html")


DIVERGED_MARK = "†"


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    scores: dict[int, float]  # seed -> final score
    diverged: int = 0  # seeds stopped by the divergence guard, scored at their last evaluations (marked †)


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

    @property
    def slug(self) -> str:
        return self.setting.slug()


def _argmax(values: dict[str, float]) -> set[str]:
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if not finite:
        return set()
    top = max(finite.values())
    return {k for k, v in finite.items() if v == top}


# ----------------------------------------------------------------------------------------------
# Building


def build_leaderboards(
    records: list[RunRecord], reps: int | None = None, with_curves: bool = True
) -> list[Leaderboard]:
    """Group run records into (suite, setting) tables."""
    from zoo.bench.stats import BOOTSTRAP_REPS

    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for rec in records:
        groups[(rec.suite, rec.setting.key())].append(rec)
    boards = []
    for (suite, _), recs in sorted(groups.items()):
        boards.append(_build_one(suite, recs, reps or BOOTSTRAP_REPS, with_curves))
    return boards


def _suite_info(suite: str) -> tuple[list[str], str, bool]:
    try:
        from zoo.tasks.suites import load_suite

        s = load_suite(suite)
        return list(s.task_names), s.description, s.noisy
    except Exception:  # a suite file removed since: order what the runs hold
        return [], "", False


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


def _build_one(suite: str, recs: list[RunRecord], reps: int, with_curves: bool) -> Leaderboard:
    suite_tasks, description, noisy = _suite_info(suite)
    present = {r.task for r in recs}
    tasks = [t for t in suite_tasks if t in present] + sorted(present - set(suite_tasks))
    labels = sorted({r.label for r in recs}, key=label_order)
    finished = [r for r in recs if r.status == "finished"]
    by_cell: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in finished:
        by_cell[(r.task, r.label)][r.seed] = r.score
    diverged = Counter((r.task, r.label) for r in finished if r.result.get("diverged"))
    cells = {}
    for key, seeds in by_cell.items():
        scores = dict(sorted(seeds.items()))
        mean, std, n = mean_std(list(scores.values()))
        cells[key] = Cell(mean, std, n, scores, diverged[key])
    failed: dict[str, list[str]] = defaultdict(list)
    for r in recs:
        if r.status == "failed":
            failed[r.label].append(f"{r.task} seed {r.seed}: {r.error.splitlines()[0] if r.error else '?'}")
    iqm = {}
    for label in labels:
        per_task = [list(cells[(t, label)].scores.values()) for t in tasks if (t, label) in cells]
        if per_task:
            iqm[label] = stratified_bootstrap_iqm(per_task, reps=reps)
    steps: dict[str, list[int]] = {lab: sorted({r.steps for r in finished if r.label == lab}) for lab in labels}
    info: dict[str, list[str]] = {}
    for key, field_name in (("loader", "loader"), ("eval env", "eval_env"), ("mujoco", "mujoco"), ("noise", "noise")):
        info[key] = sorted({str(r.result.get(field_name)) for r in finished if r.result.get(field_name) is not None})
    clean_d4rl = not noisy and any(reference_task(t) for t in tasks) and suite.startswith("d4rl")
    refs = reference_columns(sorted({r.algo for r in recs}), tasks) if clean_d4rl else []
    board = Leaderboard(
        suite=suite,
        setting=recs[0].setting,
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
    if with_curves:
        for r in finished:
            curve = r.curve()
            if curve:
                board.curves.setdefault(r.task, {}).setdefault(r.label, []).append(curve)
    return board


# ----------------------------------------------------------------------------------------------
# Cell text


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


def _rows(board: Leaderboard, pm: str = "±") -> list[tuple[str, list[str], set[int]]]:
    """(row name, cell texts, indices of marked cells) for the task rows and the aggregate rows."""
    rows = []
    for task in board.tasks:
        best = board.best(task)
        texts = [cell_text(board.cells.get((task, lab)), pm) for lab in board.labels]
        texts += [ref_text(board.reference_cell(col, task), pm) for col in board.references]
        rows.append((task, texts, {i for i, lab in enumerate(board.labels) if lab in best}))
    best = board.best_total()
    texts = [total_text(board, lab) for lab in board.labels]
    texts += [_fmt(board.reference_total(col)) for col in board.references]
    rows.append(("total", texts, {i for i, lab in enumerate(board.labels) if lab in best}))
    best = board.best_iqm()
    texts = [iqm_text(board.iqm.get(lab)) for lab in board.labels] + ["" for _ in board.references]
    rows.append(("IQM [95% CI]", texts, {i for i, lab in enumerate(board.labels) if lab in best}))
    return rows


def _headers(board: Leaderboard) -> list[str]:
    return ["task", *board.labels, *(col.header for col in board.references)]


def _notes(board: Leaderboard) -> list[str]:
    notes = [
        "Cells: mean ± sample std (ddof 1) over seeds of the final normalized score (mean of the last "
        "eval.last_k evaluations), seed count in parentheses; the best mean of each row is marked.",
        "total: sum of the per-task means. IQM: interquartile mean of every (task, seed) score with a "
        f"stratified-bootstrap 95% interval ({next(iter(board.iqm.values())).reps if board.iqm else 0} "
        "replicates, percentile method, as rliable).",
    ]
    if board.references:
        sources = sorted({f"{c.source} ({c.grade}): {c.citation}" for c in board.references})
        notes.append("Published scores (reference only; other code and eval envs): " + "; ".join(sources) + ".")
    if board.noisy:
        notes.append("Noisy-observation evaluation: never compare with clean tables.")
    if any(cell.diverged for cell in board.cells.values()):
        notes.append(
            f"{DIVERGED_MARK}: the cell includes seeds stopped by the divergence guard, scored at their last "
            "evaluations (kept, so that the aggregate never drops bad seeds)."
        )
    for label, items in sorted(board.failed.items()):
        notes.append(f"failed runs of {label} (not in the table): " + "; ".join(items))
    return notes


# ----------------------------------------------------------------------------------------------
# Renderers


def render_markdown(boards: list[Leaderboard], curves: dict[int, dict[str, str]] | None = None) -> str:
    out = io.StringIO()
    if boards:
        out.write(f"# Leaderboard: {boards[0].suite}\n\n")
        if boards[0].description:
            out.write(f"{boards[0].description}\n\n")
    for i, board in enumerate(boards):
        out.write(f"## {board.setting.describe()}\n\n{info_text(board)}\n\n")
        headers = _headers(board)
        out.write("| " + " | ".join(headers) + " |\n")
        out.write("|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|\n")
        for name, texts, marked in _rows(board):
            cells = [f"**{t}**" if j in marked and t != "—" else t for j, t in enumerate(texts)]
            out.write("| " + " | ".join([name, *cells]) + " |\n")
        out.write("\n")
        for note in _notes(board):
            out.write(f"- {note}\n")
        out.write("\n")
        for task, path in (curves or {}).get(i, {}).items():
            out.write(f"![{task}]({path})\n")
        if (curves or {}).get(i):
            out.write("\n")
    return out.getvalue()


def render_csv(boards: list[Leaderboard]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["suite", "setting", "row", "column", "kind", "mean", "std", "n", "best", "ci_low", "ci_high", "scores"]
    )

    def num(x: float | None) -> str:
        return "" if x is None or not math.isfinite(x) else f"{x:.4f}"

    for board in boards:
        setting = board.setting.describe()
        for task in board.tasks:
            best = board.best(task)
            for lab in board.labels:
                cell = board.cells.get((task, lab))
                if cell is None:
                    continue
                seeds = ";".join(f"{s}:{v:.4f}" for s, v in cell.scores.items())
                writer.writerow(
                    [
                        board.suite,
                        setting,
                        task,
                        lab,
                        "ours",
                        num(cell.mean),
                        num(cell.std),
                        cell.n,
                        int(lab in best),
                        "",
                        "",
                        seeds,
                    ]
                )
            for col in board.references:
                value = board.reference_cell(col, task)
                if value is not None:
                    writer.writerow(
                        [
                            board.suite,
                            setting,
                            task,
                            col.header,
                            "published",
                            num(value[0]),
                            num(value[1]),
                            "",
                            0,
                            "",
                            "",
                            "",
                        ]
                    )
        best_total, best_iqm = board.best_total(), board.best_iqm()
        for lab in board.labels:
            total, k = board.total(lab)
            writer.writerow(
                [
                    board.suite,
                    setting,
                    "total",
                    lab,
                    "sum",
                    num(total) if k else "",
                    "",
                    k,
                    int(lab in best_total),
                    "",
                    "",
                    "",
                ]
            )
        for lab, iv in board.iqm.items():
            writer.writerow(
                [
                    board.suite,
                    setting,
                    "IQM",
                    lab,
                    "iqm",
                    num(iv.point),
                    "",
                    iv.n_scores,
                    int(lab in best_iqm),
                    num(iv.low),
                    num(iv.high),
                    "",
                ]
            )
    return out.getvalue()


def _tex_escape(text: str) -> str:
    repl = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "·": ",",
        "—": "--",
    }
    return "".join(repl.get(ch, ch) for ch in text)


def render_tex(boards: list[Leaderboard]) -> str:
    out = io.StringIO()
    out.write("% Generated by `zoo leaderboard`; needs \\usepackage{booktabs}.\n")
    for board in boards:
        headers = _headers(board)
        out.write("\\begin{table}[t]\n\\centering\n\\small\n")
        out.write(f"\\caption{{{_tex_escape(board.title)}. {_tex_escape(info_text(board))}.}}\n")
        out.write("\\begin{tabular}{l" + "r" * (len(headers) - 1) + "}\n\\toprule\n")
        out.write(" & ".join(_tex_escape(h) for h in headers) + " \\\\\n\\midrule\n")
        rows = _rows(board, pm="$\\pm$")
        for i, (name, texts, marked) in enumerate(rows):
            if i == len(board.tasks):
                out.write("\\midrule\n")
            cells = []
            for j, t in enumerate(texts):
                t = t.replace("—", "--")
                t = t if "$\\pm$" in t else _tex_escape(t)
                t = t.replace(DIVERGED_MARK, "$^\\dagger$")
                cells.append(f"\\textbf{{{t}}}" if j in marked and t != "--" else t)
            out.write(" & ".join([_tex_escape(name), *cells]) + " \\\\\n")
        out.write("\\bottomrule\n\\end{tabular}\n\\end{table}\n\n")
    return out.getvalue()


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}tr.agg td{background:#f6f6f6}td.best{font-weight:bold;color:#0a6}
th.ref,td.ref{color:#777}.notes{color:#555;font-size:90%}.curves img{width:420px;margin:4px}"""


def render_html(boards: list[Leaderboard], curves: dict[int, dict[str, str]] | None = None) -> str:
    esc = html.escape
    suite = boards[0].suite if boards else ""
    out = io.StringIO()
    out.write(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Leaderboard: {esc(suite)}</title>")
    out.write(f"<style>{_CSS}</style></head><body>\n<h1>Leaderboard: {esc(suite)}</h1>\n")
    if boards and boards[0].description:
        out.write(f"<p>{esc(boards[0].description)}</p>\n")
    for i, board in enumerate(boards):
        out.write(f"<h2>{esc(board.setting.describe())}</h2>\n<p>{esc(info_text(board))}</p>\n<table>\n<tr>")
        for j, h in enumerate(_headers(board)):
            cls = " class='ref'" if j > len(board.labels) else ""
            out.write(f"<th{cls}>{esc(h)}</th>")
        out.write("</tr>\n")
        for k, (name, texts, marked) in enumerate(_rows(board)):
            out.write("<tr class='agg'>" if k >= len(board.tasks) else "<tr>")
            out.write(f"<td>{esc(name)}</td>")
            for j, t in enumerate(texts):
                cls = "best" if j in marked and t != "—" else ("ref" if j >= len(board.labels) else "")
                out.write(f"<td class='{cls}'>{esc(t)}</td>" if cls else f"<td>{esc(t)}</td>")
            out.write("</tr>\n")
        out.write("</table>\n<ul class='notes'>\n")
        for note in _notes(board):
            out.write(f"<li>{esc(note)}</li>\n")
        out.write("</ul>\n")
        plots = (curves or {}).get(i, {})
        if plots:
            out.write("<div class='curves'>\n")
            for task, path in plots.items():
                out.write(f"<img src='{esc(path)}' alt='{esc(task)}' title='{esc(task)}'>\n")
            out.write("</div>\n")
    out.write("</body></html>\n")
    return out.getvalue()


def render_rich(board: Leaderboard) -> Any:
    """A rich Table of one leaderboard, for the terminal.

    Every header and cell is plain text, never rich markup: sweep labels such as ``mopo[penalty.coef=2.0]``
    look like markup tags and would otherwise vanish from the header.
    """
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(board.title), caption=Text(info_text(board)), show_lines=False)
    for j, h in enumerate(_headers(board)):
        table.add_column(Text(h), justify="left" if j == 0 else "right", style="dim" if j > len(board.labels) else None)
    for k, (name, texts, marked) in enumerate(_rows(board)):
        cells = [Text(t, style="bold green" if j in marked and t != "—" else "") for j, t in enumerate(texts)]
        table.add_row(Text(name), *cells, end_section=k == len(board.tasks) - 1)
    return table


# ----------------------------------------------------------------------------------------------
# Plots and files


def plot_curves(board: Leaderboard, task: str, path: Path) -> None:
    """Mean ± std over seeds of the evaluation scores against learner steps, one line per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=100)
    try:
        for label in board.labels:
            seeds = board.curves.get(task, {}).get(label)
            if not seeds:
                continue
            common = sorted(set.intersection(*(set(dict(c)) for c in seeds)))
            if not common:
                continue
            values = np.array([[dict(c)[s] for s in common] for c in seeds], dtype=np.float64)
            mean = values.mean(axis=0)
            ax.plot(common, mean, label=f"{label} ({len(seeds)})", linewidth=1.5)
            if len(seeds) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(common, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{task} ({board.suite})", fontsize=10)
        ax.set_xlabel("learner steps")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    finally:
        plt.close(fig)


def write_leaderboards(
    out: Path,
    suites: list[str] | None = None,
    formats: tuple[str, ...] = FORMATS,
    dest: Path | None = None,
    reps: int | None = None,
    plots: bool = True,
) -> tuple[list[Leaderboard], list[Path]]:
    """Build every (suite, setting) table from ``<out>/runs`` and write one file per suite and format into
    ``dest`` (default ``<out>/leaderboard``), with the learning curves under ``curves/``. Returns the tables
    and the written paths."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown leaderboard format(s) {', '.join(unknown)}; formats: {', '.join(FORMATS)}")
    from zoo.tasks.task import safe_name

    dest = Path(dest) if dest is not None else Path(out) / "leaderboard"
    boards = build_leaderboards(scan_runs(Path(out), suites), reps=reps, with_curves=plots)
    written: list[Path] = []
    by_suite: dict[str, list[Leaderboard]] = defaultdict(list)
    for board in boards:
        by_suite[board.suite].append(board)
    for suite, suite_boards in by_suite.items():
        name = safe_name(suite)
        curves: dict[int, dict[str, str]] = {}
        if plots:
            for i, board in enumerate(suite_boards):
                for task in board.tasks:
                    if task not in board.curves:
                        continue
                    rel = Path("curves") / name / board.slug / f"{safe_name(task)}.png"
                    plot_curves(board, task, dest / rel)
                    written.append(dest / rel)
                    curves.setdefault(i, {})[task] = rel.as_posix()
        renderers = {
            "md": lambda b=suite_boards, c=curves: render_markdown(b, c),
            "csv": lambda b=suite_boards: render_csv(b),
            "tex": lambda b=suite_boards: render_tex(b),
            "html": lambda b=suite_boards, c=curves: render_html(b, c),
        }
        for fmt in formats:
            path = dest / f"{name}.{fmt}"
            atomic_write_text(path, renderers[fmt]())
            written.append(path)
    if "html" in formats and by_suite:  # an index of every suite page in dest (also those of earlier calls)
        pages = sorted(p.stem for p in dest.glob("*.html") if p.name != "index.html")
        links = "".join(f"<li><a href='{html.escape(p)}.html'>{html.escape(p)}</a></li>\n" for p in pages)
        index = (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>mbrl-zoo leaderboards</title>"
            f"<style>{_CSS}</style></head><body><h1>mbrl-zoo leaderboards</h1>\n<ul>\n{links}</ul></body></html>\n"
        )
        atomic_write_text(dest / "index.html", index)
        written.append(dest / "index.html")
    return boards, written
