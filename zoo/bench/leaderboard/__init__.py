"""Leaderboards from ``<out>/runs`` (issue 5, item 5; issue 12, items 3 and 5; evaluation.md §5).

One table per (suite, setting): a row per task, a column per algorithm (a recipe, or a recipe at one sweep
point), each cell the mean ± sample std over seeds of the per-seed final score (the mean of the last
``eval.last_k`` evaluations) with the seed count; the best mean of each row is marked. Below the tasks:
the per-suite total (sum of the per-task means, evaluation.md §5.5) and the IQM over every (task, seed) score
with its stratified-bootstrap 95% interval (:mod:`zoo.bench.stats`). Clean D4RL tables show the published
scores of evaluation.md §6 beside ours; noisy suites are separate tables without them. Each table also gets
a learning-curve plot per task (matplotlib PNG, mean ± std over seeds of the evaluation scores).

The runs are read once, by :mod:`zoo.results` (``load_runs``/``load_curves``); the modules here are

- :mod:`.model`: the tables as data, built from those frames;
- :mod:`.text`: cell texts, rows, headers and notes shared by the renderers;
- one renderer per format: :mod:`.markdown`, :mod:`.csvfile`, :mod:`.latex`, :mod:`.html_page`, and
  :mod:`.terminal` (rich);
- :mod:`.plots`: learning curves, performance profiles, P(improvement); :mod:`.files`: writing everything for
  a results directory.

rliable's performance profiles and probability of improvement (:mod:`zoo.bench.stats`) go on the HTML page and
into PNG plots; ``zoo leaderboard --compare X,Y`` prints P(X > Y) with its interval.

Regenerating from the same run directories writes the same bytes: nothing is retrained, the bootstrap has a
fixed seed, no timestamps are written (``tests/test_leaderboard_golden.py``).
"""

from zoo.bench.leaderboard.csvfile import render_csv
from zoo.bench.leaderboard.files import FORMATS, write_leaderboards
from zoo.bench.leaderboard.html_page import render_html
from zoo.bench.leaderboard.latex import render_tex
from zoo.bench.leaderboard.markdown import render_markdown
from zoo.bench.leaderboard.model import (
    Cell,
    Leaderboard,
    add_aggregates,
    build_leaderboards,
    compare_columns,
    improvement,
    label_order,
)
from zoo.bench.leaderboard.plots import plot_curves, plot_improvement, plot_profiles
from zoo.bench.leaderboard.terminal import render_rich
from zoo.bench.leaderboard.text import cell_text, info_text

__all__ = [
    "FORMATS",
    "Cell",
    "Leaderboard",
    "add_aggregates",
    "build_leaderboards",
    "compare_columns",
    "improvement",
    "cell_text",
    "info_text",
    "label_order",
    "plot_curves",
    "plot_improvement",
    "plot_profiles",
    "render_csv",
    "render_html",
    "render_markdown",
    "render_rich",
    "render_tex",
    "write_leaderboards",
]
