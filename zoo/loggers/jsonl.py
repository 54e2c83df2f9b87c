"""``jsonl``: the run's ``metrics.jsonl``, one JSON object per record, flushed at once (always on)."""

from __future__ import annotations

import json
from typing import Any

from zoo.registry import register


@register("logger", "jsonl")
class JsonlLogger:
    """metrics.jsonl in the run directory: every record, one line each (always on)."""

    def __init__(self, run: Any) -> None:
        self.path = run.metrics_path or run.run_dir / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a")  # noqa: SIM115 (closed by close())

    def log(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
