"""The plugin registry: direct registration, entry points, duplicates, broken plugins."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import attrs
import pytest

from vqtk import hookimpl
from vqtk.errors import PluginError, VqtkError
from vqtk.registry import Registry


def _plugin(register_fn):
    mod = types.ModuleType("p")
    mod.vqtk_register_components = hookimpl(register_fn)
    return mod


def test_direct_registration_lists_components(toy_registry):
    assert toy_registry.names("quantizer") == ["toy", "toy_fancy"]
    spec = toy_registry.get("encoder", "toy")
    assert spec.plugin == "toy"
    assert spec.doc == "A strided conv encoder (test toy)."
    assert toy_registry.plugins["toy"].components[0] == ("encoder", "toy")


def test_unknown_name_suggests_and_lists(toy_registry):
    with pytest.raises(VqtkError, match=r"unknown quantizer 'tyo'; did you mean 'toy'\? available: toy, toy_fancy"):
        toy_registry.get("quantizer", "tyo")


def test_duplicate_name_names_both_providers(toy_registry):
    import toy_plugin

    def again(register):
        register("quantizer", "toy", config=toy_plugin.QuantizerConfig, build=lambda c: None)

    record = toy_registry.register_plugin(_plugin(again), "toy_again")
    assert "is registered by both plugin 'toy' and plugin 'toy_again'" in record.error
    with pytest.raises(PluginError, match="both plugin 'toy' and plugin 'toy_again'"):
        toy_registry.get("quantizer", "toy")


def test_failing_register_hook_is_reported_and_others_still_load(toy_registry):
    def boom(register):
        raise RuntimeError("kaboom")

    record = toy_registry.register_plugin(_plugin(boom), "broken")
    assert record.error == "failed to register: RuntimeError: kaboom"
    assert toy_registry.names("encoder") == ["toy"]
    with pytest.raises(VqtkError, match=r"plugins that failed to load: broken \(failed to register: RuntimeError: kaboom\)"):
        toy_registry.get("encoder", "missing")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="codec", name="x"), "unknown component kind 'codec'"),
        (dict(kind="encoder", name="not valid"), "name 'not valid' must be an identifier"),
        (dict(kind="encoder", name="x", config=dict), "config must be an attrs class"),
        (dict(kind="encoder", name="x", build=42), "build must be callable"),
    ],
)
def test_bad_registrations_are_plugin_errors(kwargs, message):
    @attrs.define
    class Cfg:
        a: int = 1

    def reg(register):
        args = {"config": Cfg, "build": lambda c: None, **kwargs}
        register(args.pop("kind"), args.pop("name"), **args)

    registry = Registry()
    record = registry.register_plugin(_plugin(reg), "bad")
    assert message in record.error


def test_build_must_return_the_kind(toy_registry):
    @attrs.define
    class Cfg:
        pass

    registry = Registry()
    registry.register_plugin(_plugin(lambda register: register("encoder", "liar", config=Cfg, build=lambda c: 3)), "liar")
    with pytest.raises(PluginError, match="built a int, which is not a vqtk.interfaces.Encoder"):
        registry.get("encoder", "liar").create(Cfg())


def test_unregister_removes_components(toy_registry):
    toy_registry.unregister_plugin("toy")
    assert toy_registry.names("encoder") == []


class _FakeEntryPoint:
    def __init__(self, name, loader, value="fake.module"):
        self.name, self._loader, self.value, self.dist = name, loader, value, None

    def load(self):
        return self._loader()


def test_entry_point_that_fails_to_import_does_not_stop_others(monkeypatch):
    import toy_plugin

    def bad():
        raise ImportError("No module named 'missing_dependency'")

    eps = [_FakeEntryPoint("broken", bad), _FakeEntryPoint("toy", lambda: toy_plugin)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps if group == "vqtk" else [])
    registry = Registry()
    registry.load_entry_points()
    assert registry.plugins["broken"].error == "failed to import: ImportError: No module named 'missing_dependency'"
    assert registry.names("encoder") == ["toy"]
    with pytest.raises(VqtkError, match="broken \\(failed to import: ImportError"):
        registry.get("quantizer", "vq")


def test_builtins_load_through_their_entry_point():
    eps = [ep for ep in importlib.metadata.entry_points(group="vqtk") if ep.name == "builtins"]
    assert eps and eps[0].value == "vqtk_builtins"
    registry = Registry()
    registry.load_entry_points(only=["builtins"])
    record = registry.plugins["builtins"]
    assert record.error is None
    assert record.version == importlib.metadata.version("vqtk")
    assert "vqtk_builtins" in sys.modules
