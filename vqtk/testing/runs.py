"""Tiny real runs for plugin tests: a CPU-sized recipe, and the resume-exactness check."""

from __future__ import annotations

import copy
import signal
from pathlib import Path
from typing import Any, Optional

import torch

from vqtk.interfaces import StepAware
from vqtk.io.checkpoint import load_checkpoint
from vqtk.recipe import merge, recipe_from_dict
from vqtk.recipe.converter import RecipeConverter
from vqtk.registry import Registry, default_registry
from vqtk.train.stage1 import Stage1Trainer

#: A 16x16-pixel tokenizer on the photos shipped with scikit-image: about 1 s a step on one CPU core.
TINY: dict[str, Any] = {
    "name": "tiny",
    "model": {
        "encoder": {"type": "taming", "ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "attn_resolutions": [],
                    "z_channels": 8, "resolution": 16},
        "quantizer": {"type": "factorized", "dim": 8, "codebook_size": 32, "codebook_dim": 4},
        "decoder": {"type": "taming", "ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "attn_resolutions": [],
                    "z_channels": 8, "resolution": 16},
        "discriminator": {"type": "patchgan", "ndf": 8, "n_layers": 1, "norm": "actnorm"},
    },
    "data": {"type": "sample_photos", "resolution": 16, "samples_per_epoch": 32, "eval_crops": 2},
    "loss": {
        "pixel": {"type": "l1"},
        "codebook": {"type": "quantizer"},
        "gan": {"type": "gan", "weight": 0.5, "start_step": 1},
    },
    "train": {"steps": 4, "batch_size": 2, "log_every": 1, "image_every": 1000, "checkpoint_every": 1000,
              "eval_batches": 1, "optimizer": {"lr": 1e-3}},
}


def tiny_recipe(**tables: Any) -> dict:
    """The tiny recipe with ``tables`` merged over it (``model={"quantizer": {...}}``, ``loss={...}``).

    A table whose ``type`` changes replaces the built-in one whole, as in a recipe file.
    """
    return merge(copy.deepcopy(TINY), tables)


def registry_with(*plugins: Any) -> Registry:
    """A fresh registry holding vqtk's built-ins and ``plugins`` (modules or objects with hookimpls)."""
    import vqtk_builtins

    registry = Registry()
    for plugin in (vqtk_builtins, *plugins):
        record = registry.register_plugin(plugin)
        assert record.error is None, f"plugin {record.name!r} did not register: {record.error}"
    return registry


def _trainer(data: dict, out: Path, registry: Registry, resume: bool) -> Stage1Trainer:
    recipe = recipe_from_dict(data, registry)
    resolved = RecipeConverter(registry).unstructure(recipe)
    return Stage1Trainer(recipe, resolved, out, resume=resume, registry=registry, progress=False)


class _CtrlC(StepAware):
    """Presses Ctrl-C during step ``at - 1``: the trainer finishes it, saves step ``at`` and stops."""

    def __init__(self, at: int):
        self.at = at

    def on_step(self, step: int, total_steps: int) -> None:
        if step == self.at - 1:
            signal.raise_signal(signal.SIGINT)


def check_resume_exact(recipe: dict, tmp_path: Path, *, registry: Optional[Registry] = None,
                       steps: Optional[int] = None, stop_at: Optional[int] = None) -> dict[str, torch.Tensor]:
    """Train ``recipe`` straight through, and again interrupted at ``stop_at`` then resumed; compare.

    The interruption is a real Ctrl-C (SIGINT) handled by the trainer, which
    saves a checkpoint and stops; the resumed run is ``vqtk run --resume``'s.
    Every tensor of the two final checkpoints (weights, buffers, losses' and
    other components' state) and the optimizer state must be identical.
    Returns the final checkpoint's tensors. Call it from the main thread.
    """
    registry = registry or default_registry()
    steps = steps or recipe["train"]["steps"]
    stop_at = stop_at or steps // 2
    assert 0 < stop_at < steps, f"stop_at must be between 0 and steps ({steps}), got {stop_at}"
    full = merge(recipe, {"train": {"steps": steps}})
    straight = _trainer(full, tmp_path / "straight", registry, resume=False).run()
    interrupted = _trainer(full, tmp_path / "resumed", registry, resume=False)
    interrupted.step_fn.step_parts.append(_CtrlC(stop_at))
    try:
        interrupted.run()
        raise AssertionError(f"the run was not interrupted at step {stop_at}")
    except KeyboardInterrupt:
        pass
    assert load_checkpoint(tmp_path / "resumed").step == stop_at
    resumed = _trainer(full, tmp_path / "resumed", registry, resume=True).run()
    a = load_checkpoint(straight, with_train_state=True)
    b = load_checkpoint(resumed, with_train_state=True)
    assert a.step == b.step == steps
    assert a.tensors.keys() == b.tensors.keys(), f"checkpoints differ in names: {sorted(a.tensors.keys() ^ b.tensors.keys())}"
    differ = [k for k in a.tensors if not torch.equal(a.tensors[k], b.tensors[k])]
    assert not differ, f"{len(differ)} of {len(a.tensors)} tensors differ after resume, e.g. {differ[:5]}"
    _assert_same_state(a.train_state["opt_g"], b.train_state["opt_g"], "opt_g")
    return a.tensors


def _assert_same_state(a: Any, b: Any, where: str) -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and torch.equal(a, b), f"{where} differs after resume"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ after resume"
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ after resume"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where} differs after resume ({a!r} vs {b!r})"
