"""Leaderboards from run directories written in the engine's format (result.json, bench.json, metrics.jsonl):
cells, marking, totals, IQM, published references, noisy tables, every format, determinism, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.runs_tree import make_run
from zoo.bench.grid import Setting
from zoo.bench.leaderboard import FORMATS, build_leaderboards, label_order, write_leaderboards
from zoo.bench.stats import stratified_bootstrap_iqm
from zoo.cli import app
from zoo.results import load_runs

REPS = 2_000  # bootstrap replicates in these tests (the default 50k is slower and changes nothing checked)


SCORES = {  # quick suite: task -> algo -> per-seed scores
    "pendulum-random": {"mopo": [60.0, 70.0, 80.0], "mbpo": [50.0, 55.0, 90.0]},
    "pendulum-medium": {"mopo": [10.0, 20.0, 30.0], "mbpo": [40.0, 41.0, 42.0]},
}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    for task, algos in SCORES.items():
        for algo, scores in algos.items():
            for seed, score in enumerate(scores):
                make_run(out, "quick", task, algo, seed, score)
    make_run(out, "quick", "pendulum-medium", "mopo", 3, None)  # a failed run: reported, never averaged
    return out


def test_cells_best_marks_totals_and_iqm(results: Path) -> None:
    (board,) = build_leaderboards(load_runs(results), reps=REPS)
    assert board.suite == "quick" and board.setting == Setting("quick")
    assert board.tasks == ["pendulum-random", "pendulum-medium"]  # the suite's order
    assert board.labels == ["mbpo", "mopo"]
    cell = board.cells[("pendulum-random", "mopo")]
    assert (cell.mean, cell.n) == (70.0, 3) and cell.std == pytest.approx(10.0)
    assert cell.scores == {0: 60.0, 1: 70.0, 2: 80.0}
    assert board.best("pendulum-random") == {"mopo"} and board.best("pendulum-medium") == {"mbpo"}
    assert board.total("mopo") == (pytest.approx(90.0), 2) and board.total("mbpo") == (pytest.approx(106.0), 2)
    assert board.best_total() == {"mbpo"}
    expected = stratified_bootstrap_iqm(
        [SCORES["pendulum-random"]["mopo"], SCORES["pendulum-medium"]["mopo"]], reps=REPS
    )
    assert board.iqm["mopo"] == expected
    assert board.failed == {"mopo": ["pendulum-medium seed 3: RuntimeError: boom"]}
    assert board.steps == {"mbpo": [2000], "mopo": [2000]}
    assert len(board.curves["pendulum-random"]["mopo"]) == 3
    assert board.references == []  # not a D4RL suite


def test_every_format_is_written_and_regeneration_is_byte_identical(results: Path, tmp_path: Path) -> None:
    boards, written = write_leaderboards(results, reps=REPS)
    dest = results / "leaderboard"
    for fmt in FORMATS:
        assert (dest / f"quick.{fmt}").is_file()
    pngs = sorted((dest / "curves").rglob("*.png"))
    assert [p.name for p in pngs] == ["pendulum-medium.png", "pendulum-random.png"]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (dest / "quick.md").read_text()
    assert "| pendulum-random | 65.0 ± 21.8 (3) | **70.0 ± 10.0 (3)** |" in md
    assert "| total | **106.0** | 90.0 |" in md
    assert "failed runs of mopo" in md and "curves/quick/quick/pendulum-random.png" in md
    tex = (dest / "quick.tex").read_text()
    assert "\\textbf{70.0 $\\pm$ 10.0 (3)}" in tex and "\\toprule" in tex
    page = (dest / "quick.html").read_text()
    assert "<td class='best'>70.0 ± 10.0 (3)</td>" in page and "<img src='curves/quick/quick/" in page
    assert "quick.html" in (dest / "index.html").read_text()
    rows = (dest / "quick.csv").read_text().splitlines()
    assert rows[0].startswith("suite,setting,row,column,kind,mean,std,n,best")
    assert "quick,preset quick,pendulum-random,mopo,ours,70.0000,10.0000,3,1,,,0:60.0000;1:70.0000;2:80.0000" in rows
    assert any(r.startswith("quick,preset quick,IQM,mbpo,iqm,") for r in rows)
    # Regenerating from the same runs rewrites the same bytes (fixed bootstrap seed, no timestamps) ...
    _, again = write_leaderboards(results, dest=tmp_path / "again", reps=REPS)
    assert len(again) == len(written)
    for path in written:
        twin = tmp_path / "again" / path.relative_to(dest)
        assert twin.read_bytes() == path.read_bytes(), path.name
    # ... and never touches the runs.
    assert sorted(p.name for p in (results / "runs").rglob("*.json"))[:1] == ["bench.json"]


def test_clean_d4rl_shows_published_scores_and_noisy_suites_get_their_own_tables(tmp_path: Path) -> None:
    out = tmp_path / "results"
    for seed, (a, b) in enumerate([(70.0, 101.0), (74.0, 99.0)]):
        make_run(out, "d4rl", "halfcheetah-medium-v2", "mopo", seed, a, setting=Setting())
        make_run(out, "d4rl", "halfcheetah-medium-v2", "mobile", seed, b, setting=Setting())
        make_run(out, "d4rl-noisy", "halfcheetah-medium-v2", "mopo", seed, a - 20, setting=Setting())
    boards = build_leaderboards(load_runs(out), reps=REPS)
    clean, noisy = (b for b in sorted(boards, key=lambda b: b.suite))
    assert clean.suite == "d4rl" and noisy.suite == "d4rl-noisy" and noisy.noisy
    headers = [c.header for c in clean.references]
    assert headers == ["mopo (OLK, B)", "mobile (OLK, B)", "mobile (paper, C)"]
    assert clean.reference_cell(clean.references[0], "halfcheetah-medium-v2") == (72.4, 4.2)
    assert noisy.references == []
    assert clean.best("halfcheetah-medium-v2") == {"mobile"}  # published columns are never "best"
    write_leaderboards(out, reps=REPS, plots=False)
    md = (out / "leaderboard" / "d4rl.md").read_text()
    assert "mopo (OLK, B)" in md and "72.4 ± 4.2" in md and "recipe budgets" in md
    noisy_md = (out / "leaderboard" / "d4rl-noisy.md").read_text()
    assert "OLK" not in noisy_md and "Noisy-observation evaluation" in noisy_md


def test_settings_and_sweep_columns_never_share_a_cell(tmp_path: Path) -> None:
    out = tmp_path / "results"
    make_run(out, "quick", "pendulum-random", "mopo", 0, 10.0, setting=Setting("quick"))
    make_run(out, "quick", "pendulum-random", "mopo", 0, 90.0, setting=Setting(None), config_hash="aaaaaaaaaaaa")
    make_run(
        out,
        "quick",
        "pendulum-random",
        "mopo",
        0,
        50.0,
        label="mopo[penalty.coef=2.0]",
        setting=Setting("quick"),
        config_hash="bbbbbbbbbbbb",
    )
    boards = {b.setting: b for b in build_leaderboards(load_runs(out), reps=REPS)}
    assert set(boards) == {Setting("quick"), Setting(None)}
    assert boards[Setting("quick")].labels == ["mopo", "mopo[penalty.coef=2.0]"]
    assert boards[Setting(None)].cells[("pendulum-random", "mopo")].mean == 90.0
    one = boards[Setting(None)]
    assert math.isnan(one.cells[("pendulum-random", "mopo")].std)


def test_columns_follow_numeric_sweep_order() -> None:
    labels = [
        "mopo[penalty.coef=20.0]",
        "mbpo",
        "mopo[penalty.coef=5.0]",
        "mopo",
        "mopo[penalty.coef=1.0]",
        "mopo[learner.actor_lr=3e-4]",
        "mopo[learner.actor_lr=1e-3]",
    ]
    assert sorted(labels, key=label_order) == [
        "mbpo",
        "mopo",
        "mopo[learner.actor_lr=3e-4]",
        "mopo[learner.actor_lr=1e-3]",
        "mopo[penalty.coef=1.0]",
        "mopo[penalty.coef=5.0]",
        "mopo[penalty.coef=20.0]",
    ]


def test_terminal_table_shows_sweep_labels_verbatim(tmp_path: Path) -> None:
    """A sweep label looks like rich markup ("[learner.tau=0.02]"); the terminal table must print it as is."""
    out = tmp_path / "results"
    for label, score, config_hash in (
        ("mopo[learner.tau=0.005]", 10.0, "a" * 12),
        ("mopo[learner.tau=0.02]", 20.0, "b" * 12),
    ):
        make_run(out, "quick", "pendulum-random", "mopo", 0, score, label=label, config_hash=config_hash)
    table = CliRunner().invoke(app, ["leaderboard", "--out", str(out), "--no-plots"], terminal_width=250)
    assert table.exit_code == 0, table.output
    assert "mopo[learner.tau=0.005]" in table.output and "mopo[learner.tau=0.02]" in table.output


def test_leaderboard_command(results: Path) -> None:
    runner = CliRunner()
    csv_out = runner.invoke(app, ["leaderboard", "--out", str(results), "--format", "csv"])
    assert csv_out.exit_code == 0, csv_out.output
    assert "quick,preset quick,pendulum-medium,mbpo,ours,41.0000,1.0000,3,1" in csv_out.output
    assert (results / "leaderboard" / "quick.csv").is_file() and not (results / "leaderboard" / "quick.md").exists()
    table = runner.invoke(
        app, ["leaderboard", "--out", str(results), "--suite", "quick", "--no-plots"], terminal_width=200
    )
    assert table.exit_code == 0 and "IQM [95% CI]" in table.output and "pendulum-medium" in table.output
    empty = runner.invoke(app, ["leaderboard", "--out", str(results / "nothing")])
    assert empty.exit_code == 1


def test_iqm_row_uses_every_task_and_seed(results: Path) -> None:
    (board,) = build_leaderboards(load_runs(results), reps=REPS)
    pooled = np.array(SCORES["pendulum-random"]["mbpo"] + SCORES["pendulum-medium"]["mbpo"])
    assert board.iqm["mbpo"].point == pytest.approx(np.sort(pooled)[1:5].mean())
    assert board.iqm["mbpo"].n_scores == 6 and board.iqm["mbpo"].n_tasks == 2
