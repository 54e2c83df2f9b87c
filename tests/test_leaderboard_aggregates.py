"""rliable's aggregates in the leaderboards (issue 12, item 5): the P(improvement) matrix on the HTML page and
``zoo leaderboard --compare`` equal direct computations from the cells' per-seed scores; the profile and
P(improvement) plots are written; the terminal table fits 80 columns without cutting anything; each table's
header states loader, target clamp and noise."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.runs_tree import D4RL, QUICK, build_tree, make_run
from zoo.bench.grid import Setting
from zoo.bench.leaderboard import add_aggregates, build_leaderboards, render_rich, write_leaderboards
from zoo.bench.stats import performance_profile, probability_of_improvement
from zoo.cli import app
from zoo.results import load_runs

REPS = 300


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(tmp_path_factory.mktemp("agg") / "results")


def _board(tree: Path, suite: str, setting: Setting):
    boards = build_leaderboards(load_runs(tree, suites=[suite]), reps=REPS, with_curves=False)
    return next(b for b in boards if b.setting == setting)


def test_profiles_and_improvement_are_those_of_the_cells_scores(tree: Path) -> None:
    board = add_aggregates(_board(tree, "d4rl", Setting()))
    tasks = list(D4RL)
    mopo = [D4RL[t]["mopo"] for t in tasks]
    rambo = [D4RL[t]["rambo"] for t in tasks]
    direct = probability_of_improvement(mopo, rambo, reps=REPS)
    assert board.improvement[("mopo", "rambo")] == direct
    # By hand: halfcheetah 70, 74 vs 77.5, 80 -> 0; hopper 90, 100 vs 88 -> 1; mean 0.5.
    assert direct.point == 0.5
    mirror = board.improvement[("rambo", "mopo")]  # replicate by replicate P(Y > X) = 1 - P(X > Y)
    assert (mirror.point, mirror.low, mirror.high) == (1 - direct.point, 1 - direct.high, 1 - direct.low)
    profile = board.profiles["mobile"]
    pooled = [s for t in tasks for s in D4RL[t]["mobile"]]
    assert profile.point.tolist() == [float(np.mean(np.array(pooled) > tau)) for tau in profile.taus]
    expected = performance_profile([D4RL[t]["mobile"] for t in tasks], profile.taus, reps=REPS)
    assert np.array_equal(profile.low, expected.low) and np.array_equal(profile.high, expected.high)
    assert profile.taus[0] == 0.0 and profile.taus[-1] == 104.5  # max(100, highest score)
    assert set(board.improvement) == {(x, y) for x in board.labels for y in board.labels if x != y}


def test_html_page_shows_the_matrix_and_links_the_plots(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "lb"
    write_leaderboards(tree, suites=["quick"], dest=dest, reps=REPS)
    page = (dest / "quick.html").read_text()
    xs = [QUICK[t]["mbpo"] for t in QUICK]
    ys = [QUICK[t]["mopo"] for t in QUICK]
    iv = probability_of_improvement(xs, ys, reps=REPS)
    row = re.search(r"<tr><td>mbpo</td>(.*?)</tr>", page).group(1)
    assert f"{iv.point:.2f} [{iv.low:.2f}, {iv.high:.2f}]" in row.split("</td>")[1]
    assert "P(row &gt; column) [95% CI]" in page
    for kind in ("profiles", "improvement"):
        path = dest / "aggregates" / "quick" / "quick" / f"{kind}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"<img src='aggregates/quick/quick/{kind}.png'" in page


def test_compare_prints_p_improvement_with_its_interval(tree: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "leaderboard",
            "--out",
            str(tree),
            "--suite",
            "d4rl",
            "--no-plots",
            "--format",
            "csv",
            "--compare",
            "mobile,mopo",
        ],
    )
    assert result.exit_code == 0, result.output
    tasks = list(D4RL)
    iv = probability_of_improvement([D4RL[t]["mobile"] for t in tasks], [D4RL[t]["mopo"] for t in tasks])
    line = (
        f"d4rl · recipe budgets: P(mobile > mopo) = {iv.point:.2f} [{iv.low:.2f}, {iv.high:.2f}] "
        f"(95% CI; 2 tasks; 50,000 stratified bootstrap replicates)"
    )
    assert line in result.output.splitlines()
    missing = CliRunner().invoke(app, ["leaderboard", "--out", str(tree), "--no-plots", "--compare", "mopo,romi"])
    assert missing.exit_code == 2 and "no table has both columns 'mopo' and 'romi'" in " ".join(missing.output.split())
    bad = CliRunner().invoke(app, ["leaderboard", "--out", str(tree), "--no-plots", "--compare", "mopo"])
    assert bad.exit_code == 2 and "--compare takes two different column names" in " ".join(bad.output.split())


def _render(board, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(render_rich(board))
    return console.file.getvalue()


def test_terminal_table_fits_80_columns_and_cuts_nothing(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"  # a wide table: 3 columns, one a long sweep label, 5 published columns
    for seed in (0, 1):
        for task in ("halfcheetah-medium-replay-v2", "walker2d-medium-expert-v2", "hopper-random-v2"):
            for algo, score in (("mopo", 71.25), ("rambo", 101.5), ("mobile", 99.0)):
                make_run(out, "d4rl", task, algo, seed, score + seed, setting=Setting(), config_hash=algo[:4] * 3)
            make_run(
                out,
                "d4rl",
                task,
                "mopo",
                seed,
                5.0,
                label="mopo[penalty.coef=20.0]",
                setting=Setting(),
                config_hash="f" * 12,
            )
    (board,) = build_leaderboards(load_runs(out), reps=REPS, with_curves=False)
    assert len(board.references) >= 5
    text = _render(board, 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in text
    for task in board.tasks:
        assert any(f"│ {task} " in line for line in lines), task  # never wrapped or cut
    words = set(text.split())
    for header in [*board.labels, *(c.header for c in board.references)]:
        for word in re.split(r" |(?=\[)", header):  # headers wrap only at spaces and before a sweep's "["
            assert not word or word in words or any(word in w for w in words), header
    squeezed = "".join(text.split())
    assert "71.8±0.7(2)" in squeezed.replace("│", "") and "published scores" in text
    wide = _render(board, 250)  # a wide console keeps one table with the references beside ours
    assert "published scores" not in wide and max(len(line) for line in wide.splitlines()) <= 250


def test_each_table_header_states_loader_clamp_and_noise(tree: Path) -> None:
    d4rl = _board(tree, "d4rl", Setting())
    assert d4rl.info["loader"] == ["keep_timeouts"] and d4rl.info["noise"] == ["none"]
    assert d4rl.info["target clamp (learner.target_min)"] == ["mobile 0.0", "mopo off", "rambo off"]
    noisy = _board(tree, "d4rl-noisy", Setting())
    assert noisy.info["noise"] == ["gaussian:0.05"]
    quick = _board(tree, "quick", Setting("quick"))
    assert quick.info["target clamp (learner.target_min)"] == ["off"]
    text = _render(quick, 200)
    caption = " ".join(text.split())  # the caption wraps at the table's width
    assert "loader keep_timeouts; target clamp (learner.target_min) off;" in caption and "noise none" in caption
