"""Every reference table of the zoo, each with its source named (evaluation.md §1).

Normalized score = 100 · (R − R_min) / (R_max − R_min); normalized std = 100 · std / (R_max − R_min)
(no R_min in the std: OfflineRL-Kit's 100 · (std − R_min) / (R_max − R_min) is wrong, evaluation.md §1).

- D4RL: R_min / R_max per env, the same for every dataset of that env and for v0/v1/v2 (D4RL ``infos.py``).
- NeoRL: no official normaliser; the community constants of the model-based literature (evaluation.md §1).
- Minari: each dataset's own ``ref_min_score`` / ``ref_max_score`` from its metadata (read by the Task).
- Pendulum (the local ``quick`` suite): R_min and R_max measured with :func:`measure_random_return` and
  :func:`measure_policy_return`; the constants and their measurement live in :mod:`zoo.data.local_references`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch

from zoo.data.local_references import (  # noqa: F401  (re-exported: the Pendulum references live below zoo.data)
    PENDULUM_EXPERT_RETURN,
    PENDULUM_RANDOM_RETURN,
    PENDULUM_REFERENCE_SOURCE,
    measure_policy_return,
    measure_random_return,
)

if TYPE_CHECKING:
    from zoo.tasks.task import Task


@dataclass(frozen=True)
class Reference:
    """Reference returns of one task (or env) and where they come from."""

    min: float
    max: float
    source: str

    @property
    def span(self) -> float:
        return self.max - self.min


D4RL_SOURCE = "D4RL infos.py (REF_MIN_SCORE / REF_MAX_SCORE, <env>-random-v0 entry), evaluation.md §1"
D4RL_REFERENCES: dict[str, Reference] = {
    "halfcheetah": Reference(-280.178953, 12135.0, D4RL_SOURCE),
    "hopper": Reference(-20.272305, 3234.3, D4RL_SOURCE),
    "walker2d": Reference(1.629008, 4592.3, D4RL_SOURCE),
    "ant": Reference(-325.6, 3879.7, D4RL_SOURCE),
}

NEORL_SOURCE = (
    "NeoRL community constants used in the model-based literature (HalfCheetah-v3, Hopper-v3, Walker2d-v3), "
    "evaluation.md §1; NeoRL has no official normaliser"
)
NEORL_REFERENCES: dict[str, Reference] = {
    "halfcheetah": Reference(-298.0, 12284.0, NEORL_SOURCE),
    "hopper": Reference(5.0, 3294.0, NEORL_SOURCE),
    "walker2d": Reference(1.0, 5143.0, NEORL_SOURCE),
}

PENDULUM_REFERENCE = Reference(PENDULUM_RANDOM_RETURN, PENDULUM_EXPERT_RETURN, PENDULUM_REFERENCE_SOURCE)


def reference_for(task: Task | str | Reference) -> Reference:
    """The reference of a task (a Task, a task name, or a Reference itself)."""
    if isinstance(task, Reference):
        return task
    if isinstance(task, str):
        from zoo.tasks.task import get_task

        task = get_task(task)
    return task.reference


@overload
def normalized_score(task: Task | str | Reference, returns: float) -> float: ...
@overload
def normalized_score(task: Task | str | Reference, returns: Sequence[float] | np.ndarray) -> np.ndarray: ...
@overload
def normalized_score(task: Task | str | Reference, returns: torch.Tensor) -> torch.Tensor: ...


def normalized_score(task: Task | str | Reference, returns: Any) -> Any:
    """100 · (R − R_min) / (R_max − R_min) on a float, a list, an array or a tensor (evaluation.md §1)."""
    ref = reference_for(task)
    values = _as_values(returns)
    return (values - ref.min) * (100.0 / ref.span)


@overload
def normalized_std(task: Task | str | Reference, std: float) -> float: ...
@overload
def normalized_std(task: Task | str | Reference, std: Sequence[float] | np.ndarray) -> np.ndarray: ...
@overload
def normalized_std(task: Task | str | Reference, std: torch.Tensor) -> torch.Tensor: ...


def normalized_std(task: Task | str | Reference, std: Any) -> Any:
    """100 · std / (R_max − R_min): a spread, so R_min is not subtracted (evaluation.md §1)."""
    ref = reference_for(task)
    return _as_values(std) * (100.0 / ref.span)


def _as_values(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.double()
    if isinstance(x, np.ndarray):
        return x.astype(np.float64, copy=False)
    if isinstance(x, (list, tuple)):
        return np.asarray(x, dtype=np.float64)
    return float(x)
