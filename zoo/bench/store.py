"""The live tail of a run for the sweep's progress view (issue 5, item 4).

Finished results are read by :mod:`zoo.results` (``load_runs``, ``load_curves``, ``run_status``), the one
reader of ``<out>/runs``; this module only peeks at the end of a running run's ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def last_progress(run_dir: Path) -> tuple[int, float | None]:
    """(last logged step, last evaluation score) from the tail of ``metrics.jsonl`` (live progress)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return 0, None
    step, score = 0, None
    for line in tail.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = max(step, int(record.get("step", 0)))
        if record.get("kind") == "eval":
            score = float(record.get("score", math.nan))
    return step, score
