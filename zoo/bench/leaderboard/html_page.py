"""The HTML page of a suite's leaderboards: tables, notes and plots on one page."""

from __future__ import annotations

import html
import io

from zoo.bench.leaderboard.model import Leaderboard
from zoo.bench.leaderboard.text import headers, info_text, notes, rows

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}tr.agg td{background:#f6f6f6}td.best{font-weight:bold;color:#0a6}
th.ref,td.ref{color:#777}.notes{color:#555;font-size:90%}.curves img{width:420px;margin:4px}"""


def render_html(boards: list[Leaderboard], curves: dict[int, dict[str, str]] | None = None) -> str:
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
        plots = (curves or {}).get(i, {})
        if plots:
            out.write("<div class='curves'>\n")
            for task, path in plots.items():
                out.write(f"<img src='{esc(path)}' alt='{esc(task)}' title='{esc(task)}'>\n")
            out.write("</div>\n")
    out.write("</body></html>\n")
    return out.getvalue()
