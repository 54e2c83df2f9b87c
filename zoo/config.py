"""Run configuration: TOML recipes, per-task tables, dotted overrides, one resolved tree.

A recipe (``configs/algos/<name>.toml``) names one component of each kind plus arguments and the
engine's own sections (DESIGN.md, "Canonical config keys")::

    steps    = 3_000_000
    dynamics = { name = "gaussian_ensemble" }
    penalty  = { name = "mopo", coef = 1.0 }
    [tasks."hopper-medium-v2"]
    penalty.coef = 5.0

Resolution applies, in order: the recipe's ``base`` recipe (if any, with its own per-task tables),
the recipe, every ``[tasks.PATTERN]`` table of the recipe whose pattern matches the task (``fnmatch``;
in file order), a preset, then ``--set key=value`` overrides. A layer that sets a component's
``name`` to another component drops the keys of the old one: the new component starts from its own
defaults plus what that layer (and later ones) set. Every key is checked: an unknown key is an error
that names it and lists the valid keys; values are checked against the dataclass field types and numeric
values against the range their field declares (:func:`bounded`: metadata keys ``ge``, ``gt``, ``le``, ``lt``). The
result is a :class:`RunConfig` whose ``tree()`` is the full resolved configuration, defaults
included, and whose ``hash()`` identifies a run (the seed excluded).

Choices: TOML has no null, so "off" values use sentinels documented per key (``max_epochs = 0`` means no
cap, ``target_min = -inf`` means no clamp).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fnmatch
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from zoo.paths import find_config
from zoo.registry import REGISTRY, ConfigKeyError

COMPONENT_SECTIONS: dict[str, str] = {
    "dynamics": "dynamics",
    "penalty": "penalty",
    "rule": "rule",
    "learner": "learner",
}
DEFAULT_COMPONENTS = {"dynamics": "gaussian_ensemble", "penalty": "none", "rule": "mle", "learner": "sac"}
RECIPE_META_KEYS = {"description", "base", "tasks"}


# ----------------------------------------------------------------------------------------------
# Numeric ranges

BOUND_KEYS: tuple[str, ...] = ("ge", "gt", "le", "lt")
_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field whose numeric value (or every number of a list value) must lie in a range.

    ``coef: float = bounded(1.0, ge=0.0)`` is ``field(default=1.0, metadata={"ge": 0.0})``; components may
    also write the metadata themselves. The range is checked when a config is resolved (:func:`check_ranges`).
    """
    metadata = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def range_text(bounds: dict[str, float]) -> str:
    """``{"ge": 0, "lt": 1}`` -> ``">= 0 and < 1"``."""
    return " and ".join(f"{_BOUND_TEXT[k]} {bounds[k]:g}" for k in BOUND_KEYS if k in bounds)


def _in_range(value: float, bounds: dict[str, float]) -> bool:
    # Written so that NaN is never in range.
    checks = {
        "ge": lambda b: value >= b,
        "gt": lambda b: value > b,
        "le": lambda b: value <= b,
        "lt": lambda b: value < b,
    }
    return all(checks[k](bounds[k]) for k in BOUND_KEYS if k in bounds)


def check_ranges(obj: Any, where: str = "") -> None:
    """Every field of the dataclass ``obj`` that declares a range holds a value inside it; otherwise a
    :class:`ConfigKeyError` naming the key, the value and the range."""
    for f in dataclasses.fields(obj):
        bounds = {k: f.metadata[k] for k in BOUND_KEYS if k in f.metadata}
        if not bounds:
            continue
        value = getattr(obj, f.name)
        numbers = value if isinstance(value, (list, tuple)) else [value]
        for number in numbers:
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                continue
            if not _in_range(number, bounds):
                key = f"{where}.{f.name}" if where else f.name
                shown = value if number is value else f"{value} (entry {number})"
                raise ConfigKeyError(f"{key} = {shown} is out of range: it must be {range_text(bounds)}")


@dataclass
class DataConfig:
    """``data``: which loader mode (evaluation.md §2) and whether observations are normalized."""

    loader: str = "keep_timeouts"  # keep_timeouts | olk | d4rl_qlearning
    normalize_obs: bool = False  # dynamics.md §2: (s − m)/(sd + 1e-3) everywhere; RAMBO and ROMI


@dataclass
class RolloutConfig:
    """``rollout``: branched model rollouts (dynamics.md §12)."""

    every: int = bounded(1000, ge=1)  # policy steps between rollouts
    batch: int = bounded(50_000, ge=1)  # start states per rollout
    horizon: int = bounded(5, ge=1)  # 0 would silently drop the model: a model-based recipe needs >= 1
    retain: int = bounded(5, ge=1)  # rollout rounds the model buffer holds (its capacity, in rounds of batch × horizon)


@dataclass
class BatchConfig:
    """``batch``: the mixed real/model policy batch (sac.md §3)."""

    size: int = bounded(256, ge=2)  # at least one real and one model row
    real_ratio: float = bounded(0.05, ge=0.0, lt=1.0)  # 1.0 would leave no model rows


@dataclass
class EvalConfig:
    """``eval``: evaluation schedule (evaluation.md §3, §5)."""

    every: int = bounded(1000, ge=1)
    episodes: int = bounded(10, ge=0)  # 0: no evaluation (benchmarks, sweeps that only want the model); no score
    last_k: int = bounded(10, ge=1)  # final score = mean of the last K evaluations


ENGINE_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "rollout": RolloutConfig,
    "batch": BatchConfig,
    "eval": EvalConfig,
}


@dataclass
class TopLevel:
    seed: int = bounded(0, ge=0)
    steps: int = bounded(1_000_000, ge=1)  # total learner (gradient) steps
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = bounded(1000, ge=1)  # steps between metric reads (the only host syncs of the loop)
    checkpoint_every: int = bounded(10_000, ge=0)  # steps between checkpoints (0: only at the end)
    loggers: list[str] = field(default_factory=list)  # extra loggers (kind "logger"); jsonl is always on
    diagnostics: bool = True  # model diagnostics after pretraining and each rule phase (zoo.engine.diagnostics)


# Keys that change what a run reports, not what it computes: left out of the config hash (with the seed).
UNHASHED_KEYS = ("seed", "loggers", "diagnostics")


@dataclass
class Component:
    """A resolved component section: its registered name and its Config instance (or None)."""

    kind: str
    name: str
    cfg: Any = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.cfg is not None:
            out.update(dataclasses.asdict(self.cfg))
        return out

    def kwargs(self) -> dict[str, Any]:
        """The configuration as keyword arguments for ``REGISTRY.create``."""
        return {k: v for k, v in self.as_dict().items() if k != "name"}

    def build(self, *runtime: Any) -> Any:
        return REGISTRY.create(self.kind, self.name, *runtime, **self.kwargs())


@dataclass
class RunConfig:
    """The fully resolved configuration of one run (without the task and seed identity)."""

    seed: int = 0
    steps: int = 1_000_000
    device: str = "auto"
    log_every: int = 1000
    checkpoint_every: int = 10_000
    loggers: list[str] = field(default_factory=list)
    diagnostics: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dynamics: Component = field(default_factory=lambda: Component("dynamics", "gaussian_ensemble"))
    penalty: Component = field(default_factory=lambda: Component("penalty", "none"))
    rule: Component = field(default_factory=lambda: Component("rule", "mle"))
    learner: Component = field(default_factory=lambda: Component("learner", "sac"))
    algo: str = ""  # recipe name (metadata, not a key)
    task: str | None = None  # task the per-task tables were resolved for (metadata)

    def tree(self) -> dict[str, Any]:
        """The resolved configuration as nested plain data (what ``--print-config`` shows)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(TopLevel)}
        for name in ENGINE_SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        for name in COMPONENT_SECTIONS:
            out[name] = getattr(self, name).as_dict()
        return out

    def hash(self) -> str:
        """Identity of the configuration across seeds: sha256 of the tree without the seed, the loggers and the
        diagnostics switch (12 hex), with the device as its kind (``cpu`` or ``cuda``; ``auto`` as it resolves
        here), so CPU and GPU runs never share a run directory or a leaderboard cell while ``cuda:0`` and
        ``cuda:1`` do (issue 13)."""
        from zoo.device import device_kind

        tree = self.tree()
        for key in UNHASHED_KEYS:
            tree.pop(key)
        tree["device"] = device_kind(self.device)
        blob = json.dumps(tree, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_toml(self) -> str:
        meta = f'# algo = "{self.algo}", task = "{self.task}"\n' if self.algo else ""
        return meta + tomli_w.dumps(_toml_safe(self.tree()))


# ----------------------------------------------------------------------------------------------
# Loading and merging


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: invalid TOML: {err}") from err


def load_recipe(name_or_path: str) -> tuple[dict[str, Any], Path]:
    """The recipe file as a dict (its ``base`` is resolved by :func:`recipe_layers`)."""
    path = find_config("algos", name_or_path)
    return load_toml(path), path


def recipe_layers(recipe: dict[str, Any], task: str | None, _seen: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Layers of a recipe for a task: its base's layers, then its own top level, then its own matching
    per-task tables. A derived recipe's settings therefore win over everything of its base."""
    layers: list[dict[str, Any]] = []
    base = recipe.get("base")
    if base:
        if str(base) in _seen:
            raise ValueError(f"recipe base cycle: {' -> '.join((*_seen, str(base)))}")
        base_recipe, _ = load_recipe(str(base))
        layers += recipe_layers(base_recipe, task, (*_seen, str(base)))
    layers.append({k: v for k, v in recipe.items() if k not in RECIPE_META_KEYS})
    layers += task_layers(recipe, task)
    return layers


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"learner.actor_lr=1e-4"`` -> (["learner", "actor_lr"], 1e-4). Values are TOML literals; anything
    that is not a valid TOML value is taken as a plain string (``penalty.name=mobile``)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. learner.actor_lr=1e-4)")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def overrides_to_tree(overrides: list[str] | None) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for text in overrides or []:
        path, value = parse_override(text)
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {text!r}: {part} is a value, not a section")
            node = child
        node[path[-1]] = value
    return tree


def task_layers(recipe: dict[str, Any], task: str | None) -> list[dict[str, Any]]:
    """Per-task tables matching ``task`` (exact names and fnmatch patterns), in file order."""
    if task is None:
        return []
    tables = recipe.get("tasks", {})
    if not isinstance(tables, dict):
        raise ValueError("`tasks` in a recipe must be a table of per-task tables")
    return [table for pattern, table in tables.items() if fnmatch.fnmatchcase(task, pattern)]


def resolve(
    recipe: dict[str, Any] | str,
    task: str | None = None,
    overrides: list[str] | None = None,
    preset: dict[str, Any] | None = None,
    algo: str = "",
) -> RunConfig:
    """Resolve a recipe (a dict or a recipe name/path) for a task into a checked :class:`RunConfig`."""
    if isinstance(recipe, str):
        algo = algo or Path(recipe).stem
        recipe, _ = load_recipe(recipe)
    layers = recipe_layers(copy.deepcopy(recipe), task)
    if preset:
        layers.append(preset)
    layers.append(overrides_to_tree(overrides))

    tree: dict[str, Any] = {}
    for layer in layers:
        tree = _apply_layer(tree, layer)
    return _build(tree, algo=algo, task=task)


def _apply_layer(tree: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    tree = copy.deepcopy(tree)
    for key, value in layer.items():
        if key in COMPONENT_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigKeyError(f"`{key}` must be a table (e.g. {key} = {{ name = \"...\" }})")
            current = tree.setdefault(key, {})
            new_name = value.get("name")
            if new_name is not None and new_name != current.get("name"):
                current = {}  # a different component: the old one's keys no longer apply
            tree[key] = {**current, **value}
        elif isinstance(value, dict):
            tree[key] = deep_merge(tree.get(key, {}) if isinstance(tree.get(key), dict) else {}, value)
        else:
            tree[key] = value
    return tree


def _build(tree: dict[str, Any], algo: str, task: str | None) -> RunConfig:
    valid_top = [f.name for f in dataclasses.fields(TopLevel)] + list(ENGINE_SECTIONS) + list(
        COMPONENT_SECTIONS
    )
    unknown = sorted(set(tree) - set(valid_top))
    if unknown:
        raise ConfigKeyError(
            f"unknown top-level key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(valid_top))}"
        )
    top_values = {k: tree[k] for k in (f.name for f in dataclasses.fields(TopLevel)) if k in tree}
    top = _make_dataclass(TopLevel, top_values, where="")
    check_ranges(top)
    sections = {
        name: _make_dataclass(cls, _as_table(tree.get(name, {}), name), where=name)
        for name, cls in ENGINE_SECTIONS.items()
    }
    for name, section in sections.items():
        check_ranges(section, name)
    components = {}
    for section, kind in COMPONENT_SECTIONS.items():
        table = dict(_as_table(tree.get(section, {}), section))
        name = table.pop("name", DEFAULT_COMPONENTS[section])
        if not isinstance(name, str):
            raise ConfigKeyError(f"{section}.name must be a string, got {name!r}")
        REGISTRY.get(kind, name)  # unknown component -> error listing the registered names
        cfg_cls = REGISTRY.config_class(kind, name)
        if cfg_cls is None:
            if table:
                raise ConfigKeyError(
                    f"unknown key(s) {', '.join(sorted(table))} in [{section}] for {kind} {name!r}; "
                    "valid keys: name"
                )
            cfg = None
        else:
            cfg = _make_dataclass(cfg_cls, table, where=section, extra_valid=("name",))
            if dataclasses.is_dataclass(cfg):
                check_ranges(cfg, section)
        components[section] = Component(kind, name, cfg)
    check_capabilities(components)
    return RunConfig(**dataclasses.asdict(top), **sections, **components, algo=algo, task=task)


def requirements(component: Component) -> frozenset[str]:
    """What a component needs from the dynamics model: its ``requirements(cfg)`` when it has one (the need depends
    on its config), else its class attribute ``requires`` (nothing when absent)."""
    cls = REGISTRY.get(component.kind, component.name)
    dynamic = getattr(cls, "requirements", None)
    if callable(dynamic):
        return frozenset(dynamic(component.cfg))
    return frozenset(getattr(cls, "requires", frozenset()))


def check_capabilities(components: dict[str, Component]) -> None:
    """Refuse a combination whose penalty, rule or learner needs something the dynamics model does not provide
    (e.g. MOPO's variance penalty or RAMBO's likelihood with the deterministic ensemble). A dynamics class
    without a ``provides`` attribute (a third-party model) is trusted to provide everything."""
    dynamics = components["dynamics"]
    provides = getattr(REGISTRY.get("dynamics", dynamics.name), "provides", None)
    if provides is None:
        return
    for section in ("penalty", "rule", "learner"):
        component = components[section]
        missing = sorted(requirements(component) - set(provides))
        if missing:
            raise ConfigKeyError(
                f"{section} {component.name!r} needs the dynamics model's {' and '.join(missing)}, which dynamics "
                f"{dynamics.name!r} does not provide (it provides: {', '.join(sorted(provides))}); use "
                f"dynamics.name=gaussian_ensemble or another {section}"
            )


def _as_table(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigKeyError(f"`{name}` must be a table, got {value!r}")
    return value


def _make_dataclass(cls: type, values: dict[str, Any], where: str, extra_valid: tuple[str, ...] = ()) -> Any:
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields_))
    if unknown:
        prefix = f"{where}." if where else ""
        valid = sorted({*fields_, *extra_valid})
        raise ConfigKeyError(
            f"unknown key(s) {', '.join(prefix + u for u in unknown)}; valid keys"
            f"{' in [' + where + ']' if where else ''}: {', '.join(valid)}"
        )
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = coerce(value, hints[key])
        except TypeError as err:
            prefix = f"{where}." if where else ""
            raise ConfigKeyError(f"{prefix}{key}: {err}") from None
    return cls(**checked)


def coerce(value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            with contextlib.suppress(TypeError):
                return coerce(value, option)
        raise TypeError(f"expected {_type_name(annotation)}, got {value!r}")
    if annotation is type(None):
        if value is None:
            return None
        raise TypeError(f"expected None, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list ({_type_name(annotation)}), got {value!r}")
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return [coerce(v, inner) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected a table, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _toml_safe(value: Any) -> Any:
    """tomli-w cannot write None; drop such keys (they never occur in resolved trees by design)."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value]
    return value


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset file (``configs/presets/<name>.toml``): a layer applied on top of every recipe."""
    return load_toml(find_config("presets", name_or_path))
