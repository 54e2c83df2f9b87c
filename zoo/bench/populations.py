"""Which runs of a sweep train together as one population (issue 15, item 6; :mod:`zoo.engine.population`).

A train job of ``zoo bench`` carries a *group* of runs: one run (a population of one, what every job was before
populations) or several runs of one recipe on one task that the engine trains as one batched program. Each run
keeps its own run directory, result, failure and leaderboard entry; only the job is shared.

The rule (``--population``):

- ``1``: one run per job.
- ``N`` (at least 2): the runs to train are grouped by (suite, task, algo, population signature, checkpoint state)
  and each group is cut, in seed order, into chunks of at most N runs. The population signature
  (:func:`zoo.engine.population.population_signature`) is the resolved config without the seed and the keys that
  may differ within a population, so sweep points of a population-able key (``learner.gamma``, ``penalty.coef``)
  may share a population (when the engine takes them: :func:`zoo.engine.population.check_population`; else one
  population per config); any other difference never does. A run whose learner or rule has no population support
  (:func:`zoo.engine.population.population_support`: today the recipe rombrl) always trains alone.
- ``auto`` (the default): on the CPU N = 8 (a quick-suite cell's 3 seeds are one population), lowered to
  ceil(runs / worker slots) when that is smaller, so that no slot idles (8 seeds on 8 cores: 8 single runs; on 2
  cores: 2 populations of 4). On CUDA N is what
  the GPU with the least free memory holds: ``0.9 × free GiB / (jobs per GPU × the plan's per-run bound)``
  (:func:`zoo.bench.sweep.plan_gpu_memory_gb`; the bound counts the dataset per member, so it errs on the safe
  side), between 1 and 8; 8 when the free memory is unknown (an executor other than ``local``).

Checkpoint state: resuming a population needs every member's checkpoint written at the same step, so a run that
resumes joins only runs whose ``checkpoints/last.pt`` holds the same ``step``; a run without a checkpoint joins
only runs without one; a run that ``--retry-failed`` restarts from scratch joins only other such runs; a run whose
checkpoint cannot be read trains alone (and fails, or not, as it would alone).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.bench.grid import RunSpec

AUTO = "auto"
AUTO_MAX_POPULATION = 8  # auto's cap: the largest population worth its memory and its all-or-nothing setup
GPU_POPULATION_HEADROOM = 0.9  # the share of a GPU's free memory populations may plan on (as the executor's)
FRESH = "fresh"  # checkpoint state of a run without a checkpoint
RESTART = "restart"  # ... of a run that starts again from scratch (--retry-failed)


def parse_population(value: str | int | None) -> str | int:
    """``auto`` (also None) or a whole number >= 1; anything else is the user's mistake, named."""
    if value is None:
        return AUTO
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1 or str(size) != text.lstrip("+"):
        raise ValueError(f"--population {value!r}: expected auto, or a whole number >= 1 (1: one run per job)")
    return size


def auto_population(
    device: str,
    gpu_free_gb: list[float] | None = None,
    gb_per_run: float = 0.0,
    jobs_per_gpu: int = 1,
    runs: int = 0,
    slots: int = 1,
) -> int:
    """``--population auto`` as a number (module docstring): on the CPU 8, or fewer when ``runs`` would not fill
    the executor's ``slots`` with populations of 8 (every slot gets at least one job: ceil(runs / slots)); on CUDA
    what the GPU with the least free memory holds for ``jobs_per_gpu`` jobs of runs bounded by ``gb_per_run``,
    between 1 and 8."""
    if not device.startswith("cuda"):
        if runs > 0 and slots > 1:
            return max(1, min(AUTO_MAX_POPULATION, math.ceil(runs / slots)))
        return AUTO_MAX_POPULATION
    if not gpu_free_gb or gb_per_run <= 0:
        return AUTO_MAX_POPULATION
    per_job = GPU_POPULATION_HEADROOM * min(gpu_free_gb) / max(1, jobs_per_gpu)
    return max(1, min(AUTO_MAX_POPULATION, math.floor(per_job / gb_per_run)))


def checkpoint_step(run_dir: Path) -> int | None:
    """The ``step`` of a run's ``checkpoints/last.pt`` (None: no checkpoint). Raises when the file is unreadable."""
    path = Path(run_dir) / "checkpoints" / "last.pt"
    if not path.is_file():
        return None
    import torch

    try:  # mapped, not read: a checkpoint may hold a model buffer of millions of rows
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # not torch's zip format: read it whole
        state = torch.load(path, map_location="cpu", weights_only=False)
    return int(state["step"])


@dataclass
class TrainGroup:
    """The runs of one train job: one run, or a population (``resume``: continue from their checkpoints)."""

    specs: list[RunSpec]
    resume: bool = True
    alone: str = ""  # why these runs may not share a population (no population support), if that is why

    @property
    def size(self) -> int:
        return len(self.specs)

    @property
    def seeds(self) -> list[int]:
        return [spec.seed for spec in self.specs]

    @property
    def id(self) -> str:
        """The single run's id; a population's names its first run, its seeds and a digest of every run id."""
        if len(self.specs) == 1:
            return self.specs[0].id
        first = self.specs[0]
        digest = hashlib.sha256("\n".join(spec.id for spec in self.specs).encode()).hexdigest()[:8]
        seeds = "-".join(str(s) for s in self.seeds)
        return f"population/{first.suite}/{first.task}/{first.algo}/seeds{seeds}/{digest}"

    def describe(self, with_suite: bool = False) -> str:
        """``mopo pendulum-random seeds 0,1,2 (population of 3)``; a single run: ``... seed 0``."""
        labels = ", ".join(dict.fromkeys(spec.label for spec in self.specs))
        where = f"{self.specs[0].suite}/{self.specs[0].task}" if with_suite else self.specs[0].task
        if len(self.specs) == 1:
            return f"{labels} {where} seed {self.specs[0].seed}"
        seeds = ",".join(str(s) for s in self.seeds)
        return f"{labels} {where} seeds {seeds} (population of {len(self.specs)})"


def group_runs(
    specs: list[RunSpec],
    size: int,
    out: Path | None = None,
    restart: set[str] | frozenset[str] = frozenset(),
) -> list[TrainGroup]:
    """The train jobs of ``specs`` (runs to train, in plan order) under ``--population size`` (a number; see
    :func:`auto_population`): groups of one for ``size`` 1 and for runs without population support, else runs with
    equal (suite, task, algo, population signature, checkpoint state) in chunks of at most ``size`` in seed order.
    ``out``: the results directory whose checkpoints decide the checkpoint state (None: every run starts afresh);
    ``restart``: ids of runs that start again from scratch. Groups come in the plan order of their first run."""
    from zoo.engine.population import population_signature, population_support

    if size < 1:
        raise ValueError(f"population size must be >= 1, got {size}")
    order = {spec.id: k for k, spec in enumerate(specs)}
    singles: list[TrainGroup] = []
    buckets: dict[tuple[Any, ...], list[RunSpec]] = {}
    supported: dict[tuple[str, str], tuple[bool, str]] = {}  # by (learner, rule): what population_support reads
    for spec in specs:
        if size == 1:  # one run per job, exactly as before populations
            singles.append(TrainGroup([spec], resume=spec.id not in restart))
            continue
        state = _checkpoint_state(spec, out, restart)
        resume = state != RESTART
        if isinstance(state, tuple):  # an unreadable checkpoint
            singles.append(TrainGroup([spec], resume=resume))
            continue
        components = (spec.cfg.learner.name, spec.cfg.rule.name)
        if components not in supported:
            supported[components] = population_support(spec.cfg)
        ok, why = supported[components]
        if not ok:
            singles.append(TrainGroup([spec], resume=resume, alone=why))
            continue
        key = (spec.suite, spec.task, spec.algo, population_signature(spec.cfg), state)
        buckets.setdefault(key, []).append(spec)
    groups = list(singles)
    for key, members in buckets.items():
        members = sorted(members, key=lambda s: (s.seed, order[s.id]))
        chunks = _chunks(members, size)
        if not all(_accepted(chunk) for chunk in chunks):
            # The engine refuses some chunk (check_population: e.g. sweep points of a population-able key with the
            # same seeds): one population per config instead, each holding its seeds once.
            by_config: dict[str, list[RunSpec]] = {}
            for spec in members:
                by_config.setdefault(spec.cfg.hash(), []).append(spec)
            chunks = [chunk for same in by_config.values() for chunk in _chunks(same, size)]
        groups += [TrainGroup(chunk, resume=key[-1] != RESTART) for chunk in chunks]
    return sorted(groups, key=lambda g: min(order[s.id] for s in g.specs))


def _chunks(specs: list[RunSpec], size: int) -> list[list[RunSpec]]:
    return [specs[i : i + size] for i in range(0, len(specs), size)]


def _accepted(specs: list[RunSpec]) -> bool:
    """Whether the engine takes these runs as one population (:func:`zoo.engine.population.check_population`)."""
    from zoo.engine.population import check_population

    try:
        check_population([spec.cfg for spec in specs])
    except ValueError:
        return False
    return True


def _checkpoint_state(spec: RunSpec, out: Path | None, restart: set[str] | frozenset[str]) -> Any:
    """RESTART, FRESH (no checkpoint), the checkpoint's step, or ("unreadable", run id)."""
    if spec.id in restart:
        return RESTART
    if out is None:
        return FRESH
    try:
        step = checkpoint_step(spec.run_dir(out))
    except Exception:  # the trainer names what is wrong with it when the run resumes (alone)
        return ("unreadable", spec.id)
    return FRESH if step is None else step
