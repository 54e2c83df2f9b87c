"""Markdown rendering of a suite's leaderboards (one section per setting, plots linked)."""

from __future__ import annotations

import io

from zoo.bench.leaderboard.model import Leaderboard
from zoo.bench.leaderboard.text import headers, info_text, notes, rows


def render_markdown(boards: list[Leaderboard], curves: dict[int, dict[str, str]] | None = None) -> str:
    out = io.StringIO()
    if boards:
        out.write(f"# Leaderboard: {boards[0].suite}\n\n")
        if boards[0].description:
            out.write(f"{boards[0].description}\n\n")
    for i, board in enumerate(boards):
        out.write(f"## {board.setting.describe()}\n\n{info_text(board)}\n\n")
        heads = headers(board)
        out.write("| " + " | ".join(heads) + " |\n")
        out.write("|" + "|".join(["---"] + ["---:"] * (len(heads) - 1)) + "|\n")
        for name, texts, marked in rows(board):
            cells = [f"**{t}**" if j in marked and t != "—" else t for j, t in enumerate(texts)]
            out.write("| " + " | ".join([name, *cells]) + " |\n")
        out.write("\n")
        for note in notes(board):
            out.write(f"- {note}\n")
        out.write("\n")
        for task, path in (curves or {}).get(i, {}).items():
            out.write(f"![{task}]({path})\n")
        if (curves or {}).get(i):
            out.write("\n")
    return out.getvalue()
