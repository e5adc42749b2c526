"""Shared fixtures: registries with the built-in plugin or a tiny toy plugin."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["VQTK_OFFLINE"] = "1"  # tests never download weights; tests/core/test_weights.py serves its own locally

# tiny test tensors gain nothing from a second thread, and it contends with other processes
torch.set_num_threads(1)


@pytest.fixture
def builtins_registry():
    """A fresh registry holding only the built-in plugin (registered directly)."""
    import vqtk_builtins

    from vqtk.registry import Registry

    registry = Registry()
    registry.register_plugin(vqtk_builtins, "builtins")
    return registry


@pytest.fixture
def toy_registry():
    """A fresh registry with the toy plugin of tests/toy_plugin.py."""
    import toy_plugin

    from vqtk.registry import Registry

    registry = Registry()
    registry.register_plugin(toy_plugin, "toy")
    return registry


@pytest.fixture
def use_registry(monkeypatch):
    """Make ``default_registry()`` return the given registry for the test."""

    def install(registry):
        import vqtk.registry.registry as mod

        monkeypatch.setattr(mod, "_default", registry)
        return registry

    return install
