"""Registry: registration, creation with checked config keys, errors that list names, entry-point plugins."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass

import pytest

from zoo.registry import REGISTRY, ConfigKeyError, Registry, UnknownComponentError


def make_registry() -> Registry:
    reg = Registry()
    reg._builtins_loaded = True  # an isolated registry: no built-ins
    reg._plugins_loaded = True
    return reg


def test_register_create_and_names() -> None:
    reg = make_registry()

    @reg.register("penalty", "scaled")
    class Scaled:
        """Scales things."""

        @dataclass
        class Config:
            coef: float = 1.0

        def __init__(self, cfg: Config, offset: float = 0.0) -> None:
            self.cfg, self.offset = cfg, offset

    obj = reg.create("penalty", "scaled", 3.0, coef=2.5)
    assert isinstance(obj, Scaled) and obj.cfg.coef == 2.5 and obj.offset == 3.0
    assert reg.names("penalty") == ["scaled"]
    assert reg.config_keys("penalty", "scaled") == ["coef"]
    assert reg.describe("penalty", "scaled") == "Scales things."


def test_unknown_name_lists_registered_names() -> None:
    reg = make_registry()
    reg.register("rule", "alpha")(type("A", (), {}))
    reg.register("rule", "beta")(type("B", (), {}))
    with pytest.raises(UnknownComponentError, match="registered rule components: alpha, beta"):
        reg.get("rule", "gamma")
    with pytest.raises(UnknownComponentError, match="unknown component kind 'ruler'"):
        reg.names("ruler")


def test_unknown_config_key_names_the_valid_keys() -> None:
    reg = make_registry()

    @reg.register("learner", "tiny")
    class Tiny:
        @dataclass
        class Config:
            lr: float = 1e-3
            hidden: int = 8

        def __init__(self, cfg: Config) -> None:
            self.cfg = cfg

    with pytest.raises(ConfigKeyError, match=r"unknown key\(s\) lrr .*valid keys: hidden, lr, name"):
        reg.create("learner", "tiny", lrr=0.1)


def test_double_registration_of_a_different_class_is_an_error() -> None:
    reg = make_registry()
    reg.register("rule", "x")(type("First", (), {}))
    with pytest.raises(ValueError, match="already registered"):
        reg.register("rule", "x")(type("Second", (), {}))


def test_builtin_components_are_registered() -> None:
    assert "mle" in REGISTRY.names("rule")
    assert "gaussian_ensemble" in REGISTRY.names("dynamics")
    assert {"none", "mopo", "mobile", "disagreement"} <= set(REGISTRY.names("penalty"))
    assert "sac" in REGISTRY.names("learner")


def test_entry_point_plugins_load_lazily(tmp_path, monkeypatch) -> None:
    """A third-party distribution registers through the ``zoo.components`` entry-point group."""
    (tmp_path / "zoo_demo_plugin.py").write_text(
        textwrap.dedent(
            """
            from zoo.registry import REGISTRY
            from zoo.protocols import Rule

            @REGISTRY.register("rule", "demo_plugin_rule")
            class DemoRule(Rule):
                '''A rule from a plugin.'''
            """
        )
    )
    dist = tmp_path / "zoo_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[zoo.components]\ndemo = zoo_demo_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(REGISTRY, "_plugins_loaded", False)
    try:
        assert "demo_plugin_rule" in REGISTRY.names("rule")
        assert REGISTRY.describe("rule", "demo_plugin_rule") == "A rule from a plugin."
    finally:
        REGISTRY._items["rule"].pop("demo_plugin_rule", None)
        sys.modules.pop("zoo_demo_plugin", None)
