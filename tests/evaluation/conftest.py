"""Fixtures shared by the evaluation tests: a tiny trained tokenizer run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from tiny_recipe import TINY  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 2-step tiny tokenizer trained with ``vqtk run`` (built-in plugin only) and its registry."""
    import vqtk_builtins

    import vqtk.registry.registry as registry_module
    from vqtk.cli import main
    from vqtk.registry import Registry

    registry = Registry()
    registry.register_plugin(vqtk_builtins, "builtins")
    root = tmp_path_factory.mktemp("eval")
    (root / "tiny.toml").write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_module, "_default", registry)
        code = main(["run", str(root / "tiny.toml"), "--out", str(root / "run"), "--no-progress",
                     "train.steps=2", "train.image_every=100", "train.checkpoint_every=100",
                     "loss.gan.start_step=1000"])
    assert code == 0
    return root / "run", registry


@pytest.fixture
def env(tiny_run, use_registry, monkeypatch, tmp_path):
    """The tiny run, its registry installed as default, and an empty torch hub cache."""
    run, registry = tiny_run
    use_registry(registry)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("VQTK_WEIGHTS_DIR", raising=False)
    return run
