"""The terminal view of one leaderboard (rich), fitted to the console's width.

On a wide console it is one table: tasks, our columns, then the published reference columns (dim). When that
does not fit, nothing is cut: first the cells wrap at their natural break points (``72.0 ± 2.8`` / ``(2)``,
``82.0`` / ``[80.0, 87.0]``) and the headers at spaces; when even that is too wide, the columns are dealt into
several tables that each fit, our columns first, then the published ones ("published scores"), each repeating
the task column, which never wraps. Every header and cell is plain text, never rich markup: sweep labels such
as ``mopo[penalty.coef=2.0]`` look like markup tags and would otherwise vanish.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from zoo.bench.leaderboard.model import Leaderboard
from zoo.bench.leaderboard.text import info_text, rows

_CELL_BREAK = re.compile(r" (?=[(\[])")  # a cell may wrap before its seed count or its interval
_HEADER_BREAK = re.compile(r" |(?=\[)")  # a header at spaces and before a sweep's "["


@dataclass
class _Column:
    header: str
    texts: list[str]  # one per row
    marked: list[bool]
    reference: bool

    @property
    def natural(self) -> int:
        return max(len(t) for t in [self.header, *self.texts])

    @property
    def minimum(self) -> int:
        parts = [p for t in self.texts for p in _CELL_BREAK.split(t)]
        parts += [p for p in _HEADER_BREAK.split(self.header) if p]
        return max(len(p) for p in parts)


def _columns(board: Leaderboard) -> tuple[list[str], list[_Column]]:
    table = rows(board)
    names = [name for name, _, _ in table]
    heads = [*board.labels, *(col.header for col in board.references)]
    columns = []
    for j, head in enumerate(heads):
        texts = [texts[j] for _, texts, _ in table]
        marked = [j in marked and texts[j] != "—" for _, texts, marked in table]
        columns.append(_Column(head, [t for t in texts], marked, j >= len(board.labels)))
    return names, columns


def _table_width(first: int, widths: list[int]) -> int:
    """A rich table's width with the default box and padding: each column adds 2 spaces and a border."""
    return 1 + (first + 3) + sum(w + 3 for w in widths)


def _widths(first: int, columns: list[_Column], width: int) -> list[int] | None:
    """Column widths that fit in ``width``: natural widths when they fit, else each column's minimum plus the
    space left, handed out left to right; None when even the minimums do not fit."""
    if _table_width(first, [c.natural for c in columns]) <= width:
        return [c.natural for c in columns]
    widths = [c.minimum for c in columns]
    spare = width - _table_width(first, widths)
    if spare < 0:
        return None
    for k, column in enumerate(columns):
        extra = min(spare, column.natural - widths[k])
        widths[k] += extra
        spare -= extra
    return widths


def _wrap(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    lines: list[str] = []
    for part in _CELL_BREAK.split(text):
        if lines and len(lines[-1]) + 1 + len(part) <= width:
            lines[-1] += " " + part
        else:
            lines.append(part)
    return "\n".join(lines)


def _groups(first: int, columns: list[_Column], width: int) -> list[tuple[list[_Column], list[int]]]:
    """The columns in as few tables as fit: all in one, else ours and the published ones dealt separately,
    each greedily into tables of at most ``width`` (a column too wide even alone gets a table of its own)."""
    widths = _widths(first, columns, width)
    if widths is not None:
        return [(columns, widths)]
    groups: list[tuple[list[_Column], list[int]]] = []
    for kind in (False, True):
        chunk: list[_Column] = []
        for column in (c for c in columns if c.reference is kind):
            if chunk and _widths(first, [*chunk, column], width) is None:
                groups.append((chunk, _widths(first, chunk, width) or [c.minimum for c in chunk]))
                chunk = []
            chunk.append(column)
        if chunk:
            groups.append((chunk, _widths(first, chunk, width) or [c.minimum for c in chunk]))
    return groups


class LeaderboardView:
    """A rich renderable: one leaderboard laid out for the width it is printed at."""

    def __init__(self, board: Leaderboard) -> None:
        self.board = board

    def tables(self, width: int) -> list[Any]:
        from rich.table import Table
        from rich.text import Text

        board = self.board
        names, columns = _columns(board)
        first = max(len(n) for n in ["task", *names])
        groups = _groups(first, columns, width)
        tables = []
        for g, (group, widths) in enumerate(groups):
            published = all(c.reference for c in group)
            title = board.title if g == 0 else f"{board.title} · " + ("published scores" if published else "cont.")
            caption = Text(info_text(board)) if g == len(groups) - 1 else None
            table = Table(title=Text(title), caption=caption, show_lines=False)
            table.add_column(Text("task"), justify="left", no_wrap=True, width=first)
            for column, w in zip(group, widths, strict=True):
                table.add_column(
                    Text(column.header),
                    justify="right",
                    width=w,
                    overflow="fold",
                    style="dim" if column.reference else None,
                )
            for k, name in enumerate(names):
                texts = [c.texts[k] for c in group]
                if k >= len(board.tasks) and not any(texts):  # the IQM row of published-only tables
                    continue
                cells = [
                    Text(_wrap(c.texts[k], w), style="bold green" if c.marked[k] else "")
                    for c, w in zip(group, widths, strict=True)
                ]
                table.add_row(Text(name), *cells, end_section=k == len(board.tasks) - 1)
            tables.append(table)
        return tables

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        yield from self.tables(options.max_width)


def render_rich(board: Leaderboard) -> LeaderboardView:
    """The terminal view of one leaderboard (print it with a rich Console; it fits the console's width)."""
    return LeaderboardView(board)
