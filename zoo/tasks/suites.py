"""Named task suites: TOML files ``configs/suites/<name>.toml`` (DESIGN.md, "Data and tasks").

Keys: ``description``; ``tasks = [...]``; ``noise = "none" | "relative_delta"`` and ``noise_scale`` (0.05 by
default; evaluation.md §4: noise at evaluation is decided by the suite alone); ``base`` (optional): another
suite whose tasks (when ``tasks`` is absent) and per-task recipe tables this one reuses, so ``d4rl-noisy`` is
``d4rl`` with the noisy wrapper and the same tables.

Suites are found through :func:`zoo.paths.list_configs` (``--config-dir`` adds a user's own) and registered
in the registry under kind ``suite`` when this module is imported (``register_suites`` rescans).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.paths import list_configs
from zoo.registry import REGISTRY, UnknownComponentError
from zoo.tasks.noise import NOISE_MODES
from zoo.tasks.task import Task, get_task

DEFAULT_NOISE_SCALE = 0.05
SUITE_KEYS: tuple[str, ...] = ("description", "tasks", "noise", "noise_scale", "base")


class SuiteError(ValueError):
    """A suite file with a bad key or value; the message names the file."""


class UnknownSuiteError(UnknownComponentError):
    """A suite name that is not known; the message lists the suites."""


@dataclass(frozen=True)
class Suite:
    """A named list of tasks plus the evaluation noise setting."""

    name: str
    task_names: tuple[str, ...]
    description: str = ""
    noise: str = "none"
    noise_scale: float = DEFAULT_NOISE_SCALE
    base: str | None = None
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> list[Task]:
        return [get_task(n) for n in self.task_names]

    @property
    def table_suite(self) -> str:
        """The suite whose per-task recipe tables apply: the root of the ``base`` chain."""
        return _root_of(self.name)

    @property
    def noisy(self) -> bool:
        return self.noise != "none"

    def __len__(self) -> int:
        return len(self.task_names)


def suite_names() -> list[str]:
    """Every suite found in the config directories (user directories first)."""
    return sorted(list_configs("suites"))


def _read(name: str) -> tuple[dict[str, Any], Path]:
    found = list_configs("suites")
    if name not in found:
        raise UnknownSuiteError(
            f"unknown suite {name!r}; suites: {', '.join(sorted(found)) or '(none)'} "
            f"(add your own as configs/suites/<name>.toml in a --config-dir)"
        )
    path = found[name]
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"suite file {path}: {err}") from err
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        raise SuiteError(
            f"suite file {path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(SUITE_KEYS)}"
        )
    return raw, path


def _root_of(name: str, seen: tuple[str, ...] = ()) -> str:
    if name in seen:
        raise SuiteError(f"suite {name!r}: circular base chain {' -> '.join((*seen, name))}")
    raw, _ = _read(name)
    base = raw.get("base")
    return name if not base else _root_of(base, (*seen, name))


def load_suite(name: str, _seen: tuple[str, ...] = ()) -> Suite:
    """The suite called ``name`` (its tasks resolved and checked); an unknown name lists the suites."""
    if name in _seen:
        raise SuiteError(f"suite {name!r}: circular base chain {' -> '.join((*_seen, name))}")
    raw, path = _read(name)
    base = raw.get("base")
    if "tasks" in raw:
        names = raw["tasks"]
        if not isinstance(names, list) or not all(isinstance(t, str) for t in names):
            raise SuiteError(f"suite file {path}: tasks must be a list of task names")
    elif base:
        names = list(load_suite(base, (*_seen, name)).task_names)
    else:
        raise SuiteError(f"suite file {path}: needs tasks = [...] (or a base suite)")
    if base:
        _read(base)  # an unknown base fails here, naming the suites
    for t in names:
        try:
            get_task(t)
        except KeyError as err:
            raise SuiteError(f"suite file {path}: {err}") from err
    noise = raw.get("noise", "none")
    if noise not in NOISE_MODES:
        raise SuiteError(f"suite file {path}: noise {noise!r} is not one of {', '.join(NOISE_MODES)}")
    scale = raw.get("noise_scale", DEFAULT_NOISE_SCALE)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale < 0:
        raise SuiteError(f"suite file {path}: noise_scale must be a number >= 0, got {scale!r}")
    return Suite(
        name=name,
        task_names=tuple(names),
        description=str(raw.get("description", "")),
        noise=noise,
        noise_scale=float(scale),
        base=base,
        path=path,
    )


class SuiteEntry:
    """Registry entry of a suite; instantiating it (``create("suite", name)``) returns the loaded Suite."""

    suite_name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Suite:  # type: ignore[misc]
        return load_suite(cls.suite_name)


def _class_name(name: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", name) if p) + "Suite"


def register_suites() -> list[str]:
    """Register every suite file found now under kind ``suite``; returns their names."""
    names = []
    for name, path in list_configs("suites").items():
        try:
            with path.open("rb") as fh:
                description = str(tomllib.load(fh).get("description", "")) or f"suite {name}"
        except (OSError, tomllib.TOMLDecodeError):
            description = f"suite {name} (unreadable: {path})"
        cls_name = _class_name(name)
        attrs = {"__doc__": description, "suite_name": name, "__module__": __name__, "__qualname__": cls_name}
        entry = type(cls_name, (SuiteEntry,), attrs)
        REGISTRY.register("suite", name)(entry)
        names.append(name)
    return names


register_suites()
