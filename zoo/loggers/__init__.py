"""Kind ``logger``: where the metrics of a run go (issue 12, item 2).

Every record the trainer writes (``{"step": t, "kind": "train" | "eval" | "rule" | "rollout" | "setup" | "model",
...values}``) goes to every logger of the run. ``jsonl`` (the run's ``metrics.jsonl``) is always on; others are
named with ``--logger tensorboard,wandb`` or the config key ``loggers = ["tensorboard"]``, and a plugin can register
its own (``@register("logger", "mine")``).

A logger is built as ``create("logger", name, run)`` with a :class:`RunInfo`, and has two methods:
``log(record)`` (called with plain Python values, never tensors) and ``close()``. A logger that needs an optional
package may define a ``check()`` classmethod raising :class:`MissingExtraError`; :func:`check_loggers` calls it
before any work starts, so a missing extra is a one-line error instead of a failure after pretraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.registry import REGISTRY, MissingExtraError  # noqa: F401 (re-exported for loggers)

ALWAYS_ON = "jsonl"
IDENTITY_KEYS = ("step", "kind")


@dataclass(frozen=True)
class RunInfo:
    """What a logger knows about its run: where it lives, its identity and its resolved configuration."""

    run_dir: Path
    suite: str
    task: str
    algo: str
    config_hash: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict)
    start_step: int = 0  # > 0 when the run resumes from a checkpoint
    metrics_path: Path | None = None  # the jsonl file (default: run_dir/metrics.jsonl)

    @property
    def run_id(self) -> str:
        return f"{self.suite}/{self.task}/{self.algo}/{self.config_hash}/seed{self.seed}"


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a record under tracker tags: ``kind/key``, or ``key`` when it already has a prefix
    (``romi/weight_mean``, ``model/kstep_5``). Lists, strings and None are left to the jsonl file."""
    kind = str(record.get("kind", "metrics"))
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in IDENTITY_KEYS or isinstance(value, str) or value is None:
            continue
        if isinstance(value, bool | int | float):
            out[key if "/" in key else f"{kind}/{key}"] = float(value)
    return out


def finite(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if math.isfinite(v)}


def logger_names(*sources: list[str] | str | None) -> list[str]:
    """Names from several sources (config key, command line; comma-separated strings allowed), ``jsonl``
    first, each once."""
    names = [ALWAYS_ON]
    for source in sources:
        items = [source] if isinstance(source, str) else list(source or [])
        for item in items:
            for name in str(item).split(","):
                name = name.strip()
                if name and name not in names:
                    names.append(name)
    return names


def check_loggers(names: list[str]) -> None:
    """Unknown names raise an error listing the registered loggers; missing extras a one-line error."""
    for name in names:
        cls = REGISTRY.get("logger", name)
        check = getattr(cls, "check", None)
        if callable(check):
            check()


class LoggerSet:
    """Several loggers as one: every record goes to each, in order; ``close`` closes them all."""

    def __init__(self, loggers: list[Any]) -> None:
        self.loggers = loggers

    @classmethod
    def build(cls, names: list[str], run: RunInfo) -> LoggerSet:
        check_loggers(names)
        built: list[Any] = []
        try:
            for name in names:
                built.append(REGISTRY.create("logger", name, run))
        except BaseException:
            for logger in built:
                logger.close()
            raise
        return cls(built)

    def log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


# Importing the package registers the built-in loggers.
from zoo.loggers import jsonl, tensorboard, wandb  # noqa: E402,F401
