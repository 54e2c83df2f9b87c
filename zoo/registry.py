"""The one registry of the zoo: every component kind and every named implementation.

A component is a class registered under ``(kind, name)``. Its own configuration keys are the fields
of a nested dataclass ``Config`` (a component without one has no keys of its own). ``create`` builds
the component as ``cls(cls.Config(**cfg), *runtime)``: keyword arguments are configuration, positional
arguments are the runtime objects the kind needs (an :class:`~zoo.protocols.EnvSpec` and a device for
dynamics and learners, nothing for penalties and rules).

Third-party packages register components through the entry-point group ``zoo.components``; each
entry point names a module (or a callable) that is imported (or called) once, lazily, the first time
the registry is asked for names or a component it does not know yet.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

KINDS: tuple[str, ...] = ("dynamics", "penalty", "rule", "learner", "suite", "executor", "logger")
ENTRY_POINT_GROUP = "zoo.components"

# Modules of the zoo itself that register components when imported.
_BUILTIN_MODULES: tuple[str, ...] = (
    "zoo.dynamics",
    "zoo.penalties",
    "zoo.rules",
    "zoo.learners",
    "zoo.tasks.suites",
    "zoo.bench.executors",
    "zoo.loggers",
)

T = TypeVar("T")


class UnknownComponentError(KeyError):
    """Raised for a name that is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class ConfigKeyError(ValueError):
    """A configuration key that the component does not know."""


class MissingExtraError(ImportError):
    """An optional dependency of the chosen component (executor, logger) is not installed; the message says how to
    install it."""


def require_extra(module: str, install_hint: str) -> None:
    """Raise :class:`MissingExtraError` with ``install_hint`` unless ``module`` (an optional extra's package)
    imports."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(install_hint) from None


class Registry:
    """Maps (kind, name) to a component class."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self._builtins_loaded = False
        self._plugins_loaded = False

    # -- registration -------------------------------------------------------------------------
    def register(self, kind: str, name: str) -> Callable[[T], T]:
        """Class decorator: ``@register("penalty", "mopo")``."""
        self._check_kind(kind)

        def decorator(obj: T) -> T:
            existing = self._items[kind].get(name)
            if existing is not None and existing is not obj:
                same = getattr(existing, "__qualname__", None) == getattr(obj, "__qualname__", None) and (
                    getattr(existing, "__module__", None) == getattr(obj, "__module__", None)
                )
                if not same:  # re-import of the same module (e.g. importlib.reload) is fine
                    raise ValueError(
                        f"{kind} {name!r} is already registered by {existing.__module__}."
                        f"{existing.__qualname__}"
                    )
            self._items[kind][name] = obj
            try:
                obj.registry_kind = kind  # type: ignore[attr-defined]
                obj.registry_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    # -- lookup -------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        """Sorted names registered under ``kind`` (built-ins and plugins)."""
        self._check_kind(kind)
        self._load_all()
        return sorted(self._items[kind])

    def get(self, kind: str, name: str) -> Any:
        """The registered class; unknown names raise an error listing the valid ones."""
        self._check_kind(kind)
        self._load_builtins()
        if name not in self._items[kind]:
            self._load_plugins()
        if name not in self._items[kind]:
            known = ", ".join(sorted(self._items[kind])) or "(none)"
            raise UnknownComponentError(f"unknown {kind} {name!r}; registered {kind} components: {known}")
        return self._items[kind][name]

    def config_class(self, kind: str, name: str) -> type | None:
        """The component's ``Config`` dataclass, or None when it has no keys of its own."""
        cls = self.get(kind, name)
        cfg = getattr(cls, "Config", None)
        return cfg if cfg is not None and dataclasses.is_dataclass(cfg) else None

    def config_keys(self, kind: str, name: str) -> list[str]:
        cfg = self.config_class(kind, name)
        return [f.name for f in dataclasses.fields(cfg)] if cfg else []

    def make_config(self, kind: str, name: str, **cfg: Any) -> Any:
        """Build the component's Config from keyword arguments, rejecting unknown keys by name."""
        cfg_cls = self.config_class(kind, name)
        if cfg_cls is None:
            if cfg:
                raise ConfigKeyError(
                    f"{kind} {name!r} takes no configuration keys, got: {', '.join(sorted(cfg))}"
                )
            return None
        valid = {f.name for f in dataclasses.fields(cfg_cls)}
        unknown = sorted(set(cfg) - valid)
        if unknown:
            raise ConfigKeyError(
                f"unknown key(s) {', '.join(unknown)} for {kind} {name!r}; valid keys: "
                f"{', '.join(sorted(valid | {'name'}))}"
            )
        return cfg_cls(**cfg)

    def create(self, kind: str, name: str, /, *runtime: Any, **cfg: Any) -> Any:
        """Instantiate ``name`` of ``kind``: ``cls(Config(**cfg), *runtime)`` (or ``cls(*runtime)``)."""
        cls = self.get(kind, name)
        config = self.make_config(kind, name, **cfg)
        if self.config_class(kind, name) is None:
            return cls(*runtime)
        return cls(config, *runtime)

    def describe(self, kind: str, name: str) -> str:
        """First line of the component's docstring."""
        doc = (self.get(kind, name).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    # -- loading ------------------------------------------------------------------------------
    def _check_kind(self, kind: str) -> None:
        if kind not in self._items:
            raise UnknownComponentError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")

    def _load_all(self) -> None:
        self._load_builtins()
        self._load_plugins()

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for module in _BUILTIN_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as err:
                # A built-in package that does not exist yet is skipped; a broken import inside it is not.
                if err.name != module:
                    raise

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            loaded = ep.load()
            if callable(loaded) and not isinstance(loaded, type):
                loaded()

    def load_module(self, module: str) -> None:
        """Import a user module that registers components (``--plugin module``)."""
        importlib.import_module(module)


REGISTRY = Registry()
register = REGISTRY.register
create = REGISTRY.create
names = REGISTRY.names
get = REGISTRY.get
