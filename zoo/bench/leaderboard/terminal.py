"""The terminal table of one leaderboard (rich)."""

from __future__ import annotations

from typing import Any

from zoo.bench.leaderboard.model import Leaderboard
from zoo.bench.leaderboard.text import headers, info_text, rows


def render_rich(board: Leaderboard) -> Any:
    """A rich Table of one leaderboard, for the terminal.

    Every header and cell is plain text, never rich markup: sweep labels such as ``mopo[penalty.coef=2.0]``
    look like markup tags and would otherwise vanish from the header.
    """
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(board.title), caption=Text(info_text(board)), show_lines=False)
    for j, h in enumerate(headers(board)):
        table.add_column(Text(h), justify="left" if j == 0 else "right", style="dim" if j > len(board.labels) else None)
    for k, (name, texts, marked) in enumerate(rows(board)):
        cells = [Text(t, style="bold green" if j in marked and t != "—" else "") for j, t in enumerate(texts)]
        table.add_row(Text(name), *cells, end_section=k == len(board.tasks) - 1)
    return table
