"""Helpers for the interop tests: tiny taming checkpoints, foreign objects, a CLI runner."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import pytest
import torch

import taming_reference as ref
from vqtk.cli import main

#: the tiny taming configuration of the tests (ddconfig ch 32, ch_mult [1, 2], ...)
TINY = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_levels={1}, z_channels=8, embed_dim=8, n_embed=16,
            in_channels=3, out_ch=3)

#: the same model as taming's YAML config (resolution 16: attention at the 8x8 level)
TINY_YAML = """\
model:
  base_learning_rate: 4.5e-6
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 8
    n_embed: 16
    ddconfig:
      double_z: False
      z_channels: 8
      resolution: 16
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult: [1, 2]
      num_res_blocks: 1
      attn_resolutions: [8]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: False
        disc_in_channels: 3
        disc_start: 250001
        disc_weight: 0.8
        codebook_weight: 1.0
        disc_num_layers: 2
        disc_ndf: 8
        use_actnorm: {actnorm}
data:
  target: main.DataModuleFromConfig
  params:
    batch_size: 4
    num_workers: 8
"""


def tiny_taming_state(*, actnorm: bool = False, discriminator: bool = True, seed: int = 0) -> dict:
    """A taming VQModel state dict with random weights, a discriminator and (ignored) LPIPS tensors."""
    sd = ref.make_vqgan_state(TINY, seed=seed)
    if discriminator:
        sd.update(ref.make_discriminator_state(ndf=8, n_layers=2, actnorm=actnorm, seed=seed + 1))
    g = torch.Generator().manual_seed(seed + 2)
    sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3, generator=g)
    sd["loss.perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1, generator=g)
    return sd


@contextlib.contextmanager
def foreign_module(name: str):
    """A module that exists only inside the block: objects pickled from it cannot be imported later."""
    parts = name.split(".")
    added = [".".join(parts[: i + 1]) for i in range(len(parts)) if ".".join(parts[: i + 1]) not in sys.modules]
    for dotted in added:
        sys.modules[dotted] = types.ModuleType(dotted)
    try:
        yield sys.modules[name]
    finally:
        for dotted in added:
            del sys.modules[dotted]


def save_lightning_checkpoint(path: Path, sd: dict, **extra) -> Path:
    """``{"state_dict", "global_step", "hyper_parameters", "callbacks"}`` with foreign objects, like Lightning's."""
    with foreign_module("fake_omegaconf.dictconfig") as oc, foreign_module("fake_lightning.callbacks") as pl:

        class DictConfig(dict):  # OmegaConf's config is a mapping with its own pickling
            def __reduce__(self):
                return (DictConfig, (), {"_content": dict(self)}, None, iter(self.items()))

        class ModelCheckpoint:
            def __init__(self):
                self.monitor = "val/rec_loss"
                self.best_model_score = torch.tensor(0.125)

        for cls, mod in ((DictConfig, oc), (ModelCheckpoint, pl)):
            cls.__module__ = mod.__name__
            cls.__qualname__ = cls.__name__
            setattr(mod, cls.__name__, cls)
        obj = {
            "state_dict": sd,
            "global_step": 3,
            "epoch": 0,
            "hyper_parameters": DictConfig(embed_dim=8, ddconfig=DictConfig(ch=32)),
            "callbacks": {"ModelCheckpoint": ModelCheckpoint()},
            **extra,
        }
        torch.save(obj, path)
    return path


def write_marker(path: str) -> None:
    """What a malicious checkpoint calls on unpickling (importable while the tests run)."""
    Path(path).write_text("code ran")


class CallsWriteMarker:
    """Pickles as ``taming_fixtures.write_marker(path)``: plain unpickling calls it."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (write_marker, (self.path,))


class RunsShellCommand:
    """Pickles as ``os.system("touch PATH")``."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


# -- CLI ------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    """Run a command line like ``vqtk`` does (exit status; errors printed as ``vqtk: error: ...``)."""
    return main(argv)


@pytest.fixture
def registry(builtins_registry, use_registry):
    """The built-in plugin only, also as ``default_registry()`` (fast, independent of installed plugins)."""
    return use_registry(builtins_registry)
