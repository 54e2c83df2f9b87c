"""The HTML page of a suite's leaderboards: tables, notes and plots on one page."""

from __future__ import annotations

import html
import io
import math

from zoo.bench.leaderboard.model import Leaderboard
from zoo.bench.leaderboard.text import aggregate_notes, headers, improvement_text, info_text, notes, rows

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}tr.agg td{background:#f6f6f6}td.best{font-weight:bold;color:#0a6}
th.ref,td.ref{color:#777}.notes{color:#555;font-size:90%}.curves img{width:420px;margin:4px}
td{white-space:nowrap}
table.poi caption{text-align:left;color:#555}table.poi td.diag{color:#bbb}td.win{color:#0a6}td.loss{color:#b33}"""


def render_html(
    boards: list[Leaderboard],
    curves: dict[int, dict[str, str]] | None = None,
    aggregates: dict[int, dict[str, str]] | None = None,
) -> str:
    """The page; ``curves`` and ``aggregates`` map a table's index to its plots' relative paths (learning
    curves by task; ``profiles`` and ``improvement``)."""
    esc = html.escape
    suite = boards[0].suite if boards else ""
    out = io.StringIO()
    out.write(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Leaderboard: {esc(suite)}</title>")
    out.write(f"<style>{CSS}</style></head><body>\n<h1>Leaderboard: {esc(suite)}</h1>\n")
    if boards and boards[0].description:
        out.write(f"<p>{esc(boards[0].description)}</p>\n")
    for i, board in enumerate(boards):
        out.write(f"<h2>{esc(board.setting.describe())}</h2>\n<p>{esc(info_text(board))}</p>\n<table>\n<tr>")
        for j, h in enumerate(headers(board)):
            cls = " class='ref'" if j > len(board.labels) else ""
            out.write(f"<th{cls}>{esc(h)}</th>")
        out.write("</tr>\n")
        for k, (name, texts, marked) in enumerate(rows(board)):
            out.write("<tr class='agg'>" if k >= len(board.tasks) else "<tr>")
            out.write(f"<td>{esc(name)}</td>")
            for j, t in enumerate(texts):
                cls = "best" if j in marked and t != "—" else ("ref" if j >= len(board.labels) else "")
                out.write(f"<td class='{cls}'>{esc(t)}</td>" if cls else f"<td>{esc(t)}</td>")
            out.write("</tr>\n")
        out.write("</table>\n<ul class='notes'>\n")
        for note in notes(board):
            out.write(f"<li>{esc(note)}</li>\n")
        out.write("</ul>\n")
        _aggregates(out, board, (aggregates or {}).get(i, {}))
        plots = (curves or {}).get(i, {})
        if plots:
            out.write("<div class='curves'>\n")
            for task, path in plots.items():
                out.write(f"<img src='{esc(path)}' alt='{esc(task)}' title='{esc(task)}'>\n")
            out.write("</div>\n")
    out.write("</body></html>\n")
    return out.getvalue()


def _aggregates(out: io.StringIO, board: Leaderboard, plots: dict[str, str]) -> None:
    """Performance profiles and the probability-of-improvement matrix of one table (rliable)."""
    esc = html.escape
    if not board.profiles and not board.improvement:
        return
    out.write("<h3>Performance profiles and probability of improvement</h3>\n")
    if plots:
        out.write("<div class='curves'>\n")
        for name, path in plots.items():
            out.write(f"<img src='{esc(path)}' alt='{esc(name)}' title='{esc(name)}'>\n")
        out.write("</div>\n")
    if board.improvement:
        out.write("<table class='poi'>\n<caption>P(row &gt; column) [95% CI]</caption>\n<tr><th>row \\ column</th>")
        out.write("".join(f"<th>{esc(lab)}</th>" for lab in board.labels) + "</tr>\n")
        for x in board.labels:
            out.write(f"<tr><td>{esc(x)}</td>")
            for y in board.labels:
                iv = board.improvement.get((x, y))
                if x == y or iv is None or math.isnan(iv.point):
                    out.write("<td class='diag'>—</td>")
                else:
                    cls = "win" if iv.low > 0.5 else "loss" if iv.high < 0.5 else ""
                    text = esc(improvement_text(iv))
                    out.write(f"<td class='{cls}'>{text}</td>" if cls else f"<td>{text}</td>")
            out.write("</tr>\n")
        out.write("</table>\n")
    out.write("<ul class='notes'>\n")
    for note in aggregate_notes(board):
        out.write(f"<li>{esc(note)}</li>\n")
    out.write("</ul>\n")
