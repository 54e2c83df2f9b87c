"""The zoo from Python (issue 12, item 4): ``zoo.train`` and ``zoo.bench``, the code paths of ``zoo train`` and
``zoo bench`` (the command line is a thin layer over these two functions).

    import zoo
    result = zoo.train("mopo", "pendulum-medium", seed=0, steps=2000, overrides=["eval.episodes=5"])
    result["score"]                      # the record written to result.json
    frame = zoo.bench("quick", "mopo,mbpo", seeds=2, preset="quick")
    frame.groupby(["task", "algo"])["score"].mean()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.bench.api import bench, override_strings, setup

__all__ = ["bench", "override_strings", "setup", "train"]


def train(
    algo: str,
    task: str,
    seed: int = 0,
    overrides: list[str] | dict[str, Any] | None = None,
    steps: int | None = None,
    device: str | None = "auto",
    out: str | Path = "results",
    suite: str | None = None,
    resume: bool = False,
    download: bool = False,
    loggers: list[str] | str | None = None,
    progress: bool = False,
    plugins: list[str] | None = None,
    config_dirs: list[str | Path] | None = None,
    log: Any = None,
    seeds: list[int] | None = None,
) -> Any:
    """Train one recipe on one task and return its result record (what ``result.json`` holds: score, return,
    steps, wall_s, config hash, ...). A run that already finished in ``out`` is not retrained: its record is
    returned. ``overrides`` are dotted ``--set`` strings or a dict ``{"penalty.coef": 2.0}``; ``device=None`` keeps
    the recipe's device.

    ``seeds`` (instead of ``seed``) trains those seeds as one population (zoo.engine.population) and returns one
    entry per seed: its result record, or the exception that stopped that run (the others are unaffected)."""
    from zoo.engine.run import train_population

    setup(config_dirs, plugins)
    outcomes = train_population(
        algo, task, [seed] if seeds is None else list(seeds), out=Path(out), overrides=override_strings(overrides),
        steps=steps, device=device, suite=suite, resume=resume, progress=progress, download=download, log=log,
        loggers=loggers,
    )
    if seeds is not None:
        return outcomes
    if isinstance(outcomes[0], BaseException):  # a single run's failure is raised, as train_run does
        raise outcomes[0]
    return outcomes[0]


