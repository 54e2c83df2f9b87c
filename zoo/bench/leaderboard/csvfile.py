"""Tidy CSV of a suite's leaderboards: one row per cell, per-seed scores kept."""

from __future__ import annotations

import csv
import io
import math

from zoo.bench.leaderboard.model import Leaderboard


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
