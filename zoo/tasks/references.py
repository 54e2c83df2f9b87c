"""Every reference table of the zoo, each with its source named (evaluation.md §1).

Normalized score = 100 · (R − R_min) / (R_max − R_min); normalized std = 100 · std / (R_max − R_min)
(no R_min in the std: OfflineRL-Kit's 100 · (std − R_min) / (R_max − R_min) is wrong, evaluation.md §1).

- D4RL: R_min / R_max per env, the same for every dataset of that env and for v0/v1/v2 (D4RL ``infos.py``).
- NeoRL: no official normaliser; the community constants of the model-based literature (evaluation.md §1).
- Minari: each dataset's own ``ref_min_score`` / ``ref_max_score`` from its metadata (read by the Task).
- Pendulum (the local ``quick`` suite): R_min measured here with :func:`measure_random_return`; R_max is
  the expert's mean return, provisional until the engine work measures it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch

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

# Mean return of uniform random actions on Pendulum-v1 over 100 episodes, episode k reset with seed k
# (k = 0..99) and its actions drawn from numpy.random.default_rng(k); measured with
# measure_random_return("Pendulum-v1") on gymnasium 1.4.0.
PENDULUM_RANDOM_RETURN: float = -1197.1835879206956
# Mean return of the quick suite's expert policy on Pendulum-v1: the final policy of the online SAC run of
# zoo.data.behaviour (seed 0, 8000 env steps, one thread), acting deterministically for 100 episodes reset
# with seeds 0..99 (the pendulum-expert dataset); measured on torch 2.13.0 CPU, gymnasium 1.4.0.
PENDULUM_EXPERT_RETURN: float = -145.12220083533902
PENDULUM_REFERENCE = Reference(
    PENDULUM_RANDOM_RETURN,
    PENDULUM_EXPERT_RETURN,
    "zoo: R_min = measured mean return of uniform random actions (100 episodes, seeds 0-99, Pendulum-v1); "
    "R_max = measured mean return of the zoo's online-SAC expert (100 episodes, seeds 0-99)",
)


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


def measure_random_return(env_id: str, episodes: int = 100, **env_kwargs: Any) -> float:
    """Mean return of uniform random actions: episode k is reset with seed k and draws its actions from
    ``numpy.random.default_rng(k)`` (k = 0 .. episodes − 1). How the Pendulum R_min was measured."""
    import gymnasium as gym

    env = gym.make(env_id, **env_kwargs)
    low = np.asarray(env.action_space.low, dtype=np.float64)
    high = np.asarray(env.action_space.high, dtype=np.float64)
    total = 0.0
    try:
        for k in range(episodes):
            rng = np.random.default_rng(k)
            env.reset(seed=k)
            ret, done = 0.0, False
            while not done:
                action = rng.uniform(low, high).astype(env.action_space.dtype)
                _, reward, terminated, truncated, _ = env.step(action)
                ret += float(reward)
                done = terminated or truncated
            total += ret
    finally:
        env.close()
    return total / episodes
