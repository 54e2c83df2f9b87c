"""Regenerated leaderboards are byte-identical to the golden files in ``tests/golden/leaderboard``.

The golden files were first rendered from the runs tree of :mod:`tests.runs_tree` by the leaderboard code as it
was before ``zoo.results`` (one reader of runs/) and the leaderboard package split; that rebuild left them
unchanged. Later, intended changes (the target clamp in each table's header, rliable's profiles and
P(improvement) on the HTML page) were written back and reviewed as diffs. Any change to what a leaderboard
says shows up here as a diff. After an intended change, rewrite them with
``ZOO_REGENERATE_GOLDEN=1 python -m pytest tests/test_leaderboard_golden.py`` and review ``git diff``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.runs_tree import build_tree
from zoo.bench.leaderboard import write_leaderboards

GOLDEN = Path(__file__).parent / "golden" / "leaderboard"
REPS = 500


def test_leaderboards_match_the_golden_files(tmp_path: Path) -> None:
    out = build_tree(tmp_path / "results")
    dest = tmp_path / "leaderboard"
    _, written = write_leaderboards(out, dest=dest, reps=REPS)
    texts = sorted(p for p in written if p.suffix != ".png")
    assert [p.name for p in texts] == sorted(p.name for p in GOLDEN.iterdir())
    if os.environ.get("ZOO_REGENERATE_GOLDEN"):
        for path in texts:
            (GOLDEN / path.name).write_bytes(path.read_bytes())
    for path in texts:
        assert path.read_bytes() == (GOLDEN / path.name).read_bytes(), f"{path.name} differs from its golden file"
    pngs = sorted(p.relative_to(dest).as_posix() for p in written if p.suffix == ".png")
    assert "curves/quick/quick/pendulum-random.png" in pngs and sum(p.startswith("curves/") for p in pngs) == 8
    assert [p for p in pngs if p.startswith("aggregates/quick/")] == [
        "aggregates/quick/quick/improvement.png",
        "aggregates/quick/quick/profiles.png",
        "aggregates/quick/zoo train/profiles.png",  # one column: no pairs to compare
    ]
