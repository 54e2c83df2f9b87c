"""The grid of a sweep: suites × algorithms × seeds (× sweep values) expanded into runs (issue 5, item 1).

Every run is identified by its run directory (DESIGN.md, Conventions):
``runs/<suite>/<task>/<algo>/<config hash>/seed<k>``; the config hash covers the whole resolved config
(recipe, per-task tables, preset, ``--set`` and sweep values), so the same grid always maps to the same
directories and a re-run finds what is already there.

Besides its directory a run carries two labels used by leaderboards: its *column* (the recipe name, plus
the sweep values when there is a ``--sweep`` axis: ``mopo[penalty.coef=0.5]``) and its *setting* (the
preset and the ``--set`` overrides shared by the whole sweep). Runs with different settings never share a
table. Both are stored in ``bench.json`` beside ``result.json``.

Pretraining: a run that uses the model needs the ensemble pretrained for its (task, loader, dynamics
config, ``data.normalize_obs``, seed); runs with equal such keys share one pretraining job, which is the
engine's cache key (:func:`zoo.engine.pretrain.pretrain_key`) without the dataset fingerprint (equal for
equal task and loader).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.bench.presets import Preset
from zoo.config import RunConfig, parse_override
from zoo.engine.run import RunId, resolve_run


@dataclass(frozen=True)
class Setting:
    """What every run of a sweep shares besides recipe, task, seed and sweep values."""

    preset: str | None = None
    overrides: tuple[str, ...] = ()
    device: str = "cpu"  # the runs' device kind: CPU and GPU scores never share a table (issue 13)

    def key(self) -> str:
        d: dict[str, Any] = {"preset": self.preset, "set": list(self.overrides)}
        if self.device != "cpu":  # CPU settings keep the keys (and file names) they had
            d["device"] = self.device
        return json.dumps(d, sort_keys=True)

    def describe(self) -> str:
        text = f"preset {self.preset}" if self.preset else "recipe budgets"
        if self.overrides:
            text += " · --set " + " ".join(self.overrides)
        if self.device != "cpu":
            text += f" · on {self.device}"
        return text

    def slug(self) -> str:
        """A short path-safe name: ``recipe``, ``quick``, or either plus a hash of the overrides (and ``-cuda``
        for GPU runs)."""
        base = (self.preset or "recipe") + ("" if self.device == "cpu" else f"-{self.device}")
        if not self.overrides:
            return base
        return f"{base}-{hashlib.sha256(self.key().encode()).hexdigest()[:6]}"

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Setting:
        d = d or {}
        return cls(d.get("preset"), tuple(d.get("overrides", ())), str(d.get("device", "cpu")))

    def as_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "overrides": list(self.overrides), "device": self.device}


@dataclass
class RunSpec:
    """One (suite, task, recipe, sweep point, seed): its resolved config and its identity."""

    suite: str
    task: str
    recipe: str  # recipe name or absolute path to a recipe file
    algo: str  # the recipe's name (its file stem): the run directory's algo part
    label: str  # leaderboard column: algo plus sweep values
    seed: int
    overrides: tuple[str, ...]  # --set overrides, then the sweep values
    sweep: dict[str, str]
    setting: Setting
    cfg: RunConfig
    preset_layer: dict[str, Any] = field(default_factory=dict)
    pretrain: str | None = None  # pretraining group key (None: the run uses no model)

    @property
    def run_id(self) -> RunId:
        return RunId(self.suite, self.task, self.algo, self.cfg.hash(), self.seed)

    @property
    def id(self) -> str:
        """The run's stable id: its directory relative to ``<out>/runs``."""
        return self.run_id.path(Path("")).relative_to("runs").as_posix()

    def run_dir(self, out: Path) -> Path:
        return self.run_id.path(Path(out))

    def bench_meta(self) -> dict[str, Any]:
        """What ``bench.json`` records: the leaderboard labels of the run."""
        return {
            "suite": self.suite,
            "task": self.task,
            "algo": self.algo,
            "label": self.label,
            "seed": self.seed,
            "recipe": self.recipe,
            "sweep": self.sweep,
            "setting": self.setting.as_dict(),
            "overrides": list(self.overrides),
            "config_hash": self.cfg.hash(),
            "steps": self.cfg.steps,
        }


@dataclass
class PretrainJob:
    """One ensemble to pretrain, shared by every run in ``runs``."""

    key: str
    task: str
    seed: int
    runs: list[RunSpec]

    @property
    def id(self) -> str:
        return f"pretrain/{self.task}/seed{self.seed}/{self.key[:8]}"

    @property
    def label(self) -> str:
        return f"ensemble · {self.task} · seed {self.seed} (for {', '.join(sorted({r.label for r in self.runs}))})"


@dataclass
class Plan:
    """The expanded grid."""

    runs: list[RunSpec]
    suites: list[str]
    algos: list[str]
    seeds: list[int]
    setting: Setting
    sweep_axes: dict[str, list[str]]

    def pretrain_jobs(self, runs: list[RunSpec] | None = None) -> list[PretrainJob]:
        """One job per distinct pretraining key among ``runs`` (default: all), in plan order."""
        jobs: dict[str, PretrainJob] = {}
        for spec in self.runs if runs is None else runs:
            if spec.pretrain is None:
                continue
            job = jobs.get(spec.pretrain)
            if job is None:
                jobs[spec.pretrain] = PretrainJob(spec.pretrain, spec.task, spec.seed, [spec])
            else:
                job.runs.append(spec)
        return list(jobs.values())

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(spec.task for spec in self.runs))


def parse_seeds(seeds: int | None, seed_list: str | None, default: int) -> list[int]:
    """``--seeds N`` → 0..N−1; ``--seed-list 3,7`` → [3, 7]; neither → 0..default−1."""
    if seeds is not None and seed_list is not None:
        raise ValueError("give either --seeds N or --seed-list a,b,..., not both")
    if seed_list is not None:  # an empty --seed-list "" is a mistake, not a request for the default seeds
        try:
            out = [int(s) for s in seed_list.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--seed-list {seed_list!r}: expected integers separated by commas") from None
        if not out or any(s < 0 for s in out):
            raise ValueError(f"--seed-list {seed_list!r}: expected non-negative integers")
        return list(dict.fromkeys(out))
    n = default if seeds is None else seeds
    if n < 1:
        raise ValueError(f"--seeds must be at least 1, got {n}")
    return list(range(n))


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets, braces and quotes (``[64,64],[128,128]`` → two items)."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def parse_sweep(items: list[str] | None) -> dict[str, list[str]]:
    """``["penalty.coef=0.5,1.0"]`` → {"penalty.coef": ["0.5", "1.0"]} (values stay TOML literals)."""
    axes: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--sweep {item!r} must look like key=v1,v2 (e.g. penalty.coef=0.5,1.0)")
        key, raw = item.split("=", 1)
        key = key.strip()
        values = split_top_level(raw)
        if not key or not values:
            raise ValueError(f"--sweep {item!r}: needs a key and at least one value")
        for v in values:
            parse_override(f"{key}={v}")  # the same checks as --set
        if key in axes:
            raise ValueError(f"--sweep names {key} twice")
        axes[key] = list(dict.fromkeys(values))
    return axes


def recipe_name(recipe: str) -> str:
    return Path(recipe).stem if recipe.endswith(".toml") else recipe


def _normalize_recipe(recipe: str) -> str:
    if recipe.endswith(".toml"):
        path = Path(recipe).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {recipe} does not exist")
        return str(path.resolve())
    return recipe


def needs_model(cfg: RunConfig) -> bool:
    """Whether a run pretrains the ensemble (the condition of ``Trainer.setup``)."""
    uses_model = cfg.rollout.horizon > 0 and cfg.batch.real_ratio < 1.0
    return uses_model or cfg.rule.name != "mle" or cfg.penalty.name != "none"


def pretrain_group(task: str, cfg: RunConfig) -> str:
    blob = json.dumps(
        {
            "task": task,
            "loader": cfg.data.loader,
            "normalize_obs": cfg.data.normalize_obs,
            "dynamics": cfg.dynamics.as_dict(),
            "seed": cfg.seed,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def expand_grid(
    suites: list[str],
    recipes: list[str],
    seeds: list[int],
    overrides: list[str] | None = None,
    sweep: dict[str, list[str]] | None = None,
    preset: Preset | None = None,
    tasks: list[str] | None = None,
    device: str | None = None,
) -> Plan:
    """Resolve every (suite, task, recipe, sweep point, seed) into a :class:`RunSpec` (bad keys fail here)."""
    from zoo.tasks.suites import load_suite

    if not suites:
        raise ValueError("no suite given")
    if not recipes:
        raise ValueError("no algorithm given")
    recipes = [_normalize_recipe(r) for r in recipes]
    names = [recipe_name(r) for r in recipes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two recipes share the name {', '.join(dupes)}; rename one of the files")
    overrides = list(overrides or [])
    sweep = dict(sweep or {})
    from zoo.device import device_kind

    setting = Setting(preset.name if preset else None, tuple(overrides), device_kind(device or "auto"))
    points = [dict(zip(sweep, values, strict=True)) for values in itertools.product(*sweep.values())] or [{}]
    runs: list[RunSpec] = []
    seen: set[str] = set()
    for suite_name in suites:
        suite = load_suite(suite_name)
        suite_tasks = list(suite.task_names)
        if tasks:
            unknown = [t for t in tasks if t not in suite_tasks]
            if len(unknown) == len(tasks):
                raise ValueError(
                    f"none of --tasks {', '.join(tasks)} is in suite {suite_name} ({', '.join(suite_tasks)})"
                )
            suite_tasks = [t for t in suite_tasks if t in tasks]
        for task in suite_tasks:
            for recipe, algo in zip(recipes, names, strict=True):
                layer = preset.layer(algo, task) if preset else {}
                for point in points:
                    extra = overrides + [f"{k}={v}" for k, v in point.items()]
                    label = algo + ("[" + ",".join(f"{k}={v}" for k, v in point.items()) + "]" if point else "")
                    base_cfg = resolve_run(recipe, task, seeds[0], extra, device=device, preset=layer)
                    for seed in seeds:
                        cfg = dataclasses.replace(base_cfg, seed=seed)
                        spec = RunSpec(
                            suite=suite_name,
                            task=task,
                            recipe=recipe,
                            algo=algo,
                            label=label,
                            seed=seed,
                            overrides=tuple(extra),
                            sweep=dict(point),
                            setting=setting,
                            cfg=cfg,
                            preset_layer=layer,
                            pretrain=pretrain_group(task, cfg) if needs_model(cfg) else None,
                        )
                        if spec.id in seen:  # e.g. a sweep value equal to another: one run
                            continue
                        seen.add(spec.id)
                        runs.append(spec)
    return Plan(runs=runs, suites=list(suites), algos=names, seeds=list(seeds), setting=setting, sweep_axes=sweep)
