"""Budget presets for sweeps: ``configs/presets/<name>.toml`` (issue 5, item 6).

A preset is a config layer applied on top of every recipe (after its per-task tables, before ``--set``),
plus bench defaults and per-algorithm tables::

    description = "..."
    seeds = 2                      # bench default when --seeds/--seed-list is not given
    steps = 3000
    eval = { every = 1000, episodes = 5, last_k = 2 }
    dynamics = { max_epochs = 10 }

    [algos.mobile]                 # only for the recipe called mobile (fnmatch patterns allowed: "rom*")
    penalty.samples = 4

    [tasks."pendulum-medium-replay"]   # only for this task (fnmatch patterns allowed), after the algos tables
    dynamics.max_epochs = 40

Per-algorithm tables exist because some keys belong to one component only (a rule's phase lengths, a
penalty's sample count); per-task tables because a budget can depend on a dataset's size. A table naming an
algorithm or a task that is not in the sweep is simply unused. Keys are
checked when a recipe is resolved with the preset (an unknown key is an error naming the valid ones).
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.config import deep_merge, load_toml
from zoo.paths import find_config

PRESET_META_KEYS: tuple[str, ...] = ("description", "seeds", "algos", "tasks")


@dataclass(frozen=True)
class Preset:
    """A loaded preset: its common layer, its per-algorithm tables and its bench defaults."""

    name: str
    common: dict[str, Any] = field(default_factory=dict)
    algos: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: int | None = None
    description: str = ""
    path: Path | None = None

    def layer(self, algo: str, task: str | None = None) -> dict[str, Any]:
        """The config layer for one recipe (on one task): the common keys, then every matching ``[algos.PATTERN]``
        table, then every ``[tasks.PATTERN]`` table matching ``task``."""
        out = copy.deepcopy(self.common)
        for pattern, table in self.algos.items():
            if fnmatch.fnmatchcase(algo, pattern):
                out = deep_merge(out, table)
        for pattern, table in self.tasks.items():
            if task is not None and fnmatch.fnmatchcase(task, pattern):
                out = deep_merge(out, table)
        return out


def load_bench_preset(name_or_path: str) -> Preset:
    """The preset called ``name`` (``configs/presets/<name>.toml``, ``--config-dir`` first) or a TOML path."""
    path = find_config("presets", name_or_path)
    raw = load_toml(path)
    algos = raw.get("algos", {})
    if not isinstance(algos, dict) or not all(isinstance(v, dict) for v in algos.values()):
        raise ValueError(f"preset {path}: `algos` must hold one table per algorithm, e.g. [algos.mobile]")
    tasks = raw.get("tasks", {})
    if not isinstance(tasks, dict) or not all(isinstance(v, dict) for v in tasks.values()):
        raise ValueError(f"preset {path}: `tasks` must hold one table per task, e.g. [tasks.\"pendulum-medium\"]")
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1):
        raise ValueError(f"preset {path}: seeds must be a positive integer, got {seeds!r}")
    return Preset(
        name=Path(name_or_path).stem if name_or_path.endswith(".toml") else name_or_path,
        common={k: v for k, v in raw.items() if k not in PRESET_META_KEYS},
        algos=algos,
        tasks=tasks,
        seeds=seeds,
        description=str(raw.get("description", "")),
        path=path,
    )
