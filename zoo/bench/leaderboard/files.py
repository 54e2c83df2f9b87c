"""Writing every leaderboard of a results directory: one file per suite and format, plots, an index page."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

from zoo.bench.leaderboard.csvfile import render_csv
from zoo.bench.leaderboard.html_page import CSS, render_html
from zoo.bench.leaderboard.latex import render_tex
from zoo.bench.leaderboard.markdown import render_markdown
from zoo.bench.leaderboard.model import Leaderboard, add_aggregates, build_leaderboards
from zoo.bench.leaderboard.plots import plot_curves, plot_improvement, plot_profiles
from zoo.io import atomic_write_text
from zoo.results import load_runs

FORMATS: tuple[str, ...] = ("md", "csv", "tex", "html")


def write_leaderboards(
    out: Path,
    suites: list[str] | None = None,
    formats: tuple[str, ...] = FORMATS,
    dest: Path | None = None,
    reps: int | None = None,
    plots: bool = True,
) -> tuple[list[Leaderboard], list[Path]]:
    """Build every (suite, setting) table from ``<out>/runs`` and write one file per suite and format into
    ``dest`` (default ``<out>/leaderboard``), with the learning curves under ``curves/`` and the performance
    profiles and P(improvement) plots under ``aggregates/``. Returns the tables and the written paths."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown leaderboard format(s) {', '.join(unknown)}; formats: {', '.join(FORMATS)}")
    from zoo.tasks.task import safe_name

    dest = Path(dest) if dest is not None else Path(out) / "leaderboard"
    boards = build_leaderboards(load_runs(Path(out), suites), reps=reps, with_curves=plots)
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
        aggregates: dict[int, dict[str, str]] = {}
        if "html" in formats or plots:  # rliable's profiles and P(improvement): on the page and as plots
            for i, board in enumerate(suite_boards):
                add_aggregates(board)
                if not plots:
                    continue
                folder = Path("aggregates") / name / board.slug
                drawn = [("profiles", plot_profiles, bool(board.profiles))]
                drawn.append(("improvement", plot_improvement, len(board.improvement) > 0))
                for kind, draw, wanted in drawn:
                    if wanted:
                        rel = folder / f"{kind}.png"
                        draw(board, dest / rel)
                        written.append(dest / rel)
                        aggregates.setdefault(i, {})[kind] = rel.as_posix()
        renderers = {
            "md": lambda b=suite_boards, c=curves: render_markdown(b, c),
            "csv": lambda b=suite_boards: render_csv(b),
            "tex": lambda b=suite_boards: render_tex(b),
            "html": lambda b=suite_boards, c=curves, a=aggregates: render_html(b, c, a),
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
            f"<style>{CSS}</style></head><body><h1>mbrl-zoo leaderboards</h1>\n<ul>\n{links}</ul></body></html>\n"
        )
        atomic_write_text(dest / "index.html", index)
        written.append(dest / "index.html")
    return boards, written
