"""Worker for the multi-process tests: one rank of a gloo process group on CPU."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.distributed as dist


def train_rank(rank: int, world_size: int, init_file: str, recipe_path: str, out: str,
               overrides: list[str], resume: bool, result_dir: str,
               plugin: tuple[str, str] = ("toy_plugin", "toy")) -> None:
    """Train with ``plugin`` (module, name) registered; save the final weights as ``rank{rank}.pt`` and
    the top-left value of the first channel of every image trained on as ``rank{rank}_inputs.pt``."""
    import vqtk.registry.registry as registry_module
    from vqtk.recipe import load_recipe
    from vqtk.registry import Registry
    from vqtk.train.stage1 import Stage1Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        registry = Registry()
        registry.register_plugin(importlib.import_module(plugin[0]), plugin[1])
        registry_module._default = registry
        recipe, resolved = load_recipe(recipe_path, overrides, registry)
        trainer = Stage1Trainer(recipe, resolved, Path(out), resume=resume, registry=registry, progress=False)
        inputs: list[float] = []
        step = trainer.train_step
        trainer.train_step = lambda batches: inputs.extend(float(b[i, 0, 0, 0]) for b in batches
                                                           for i in range(b.shape[0])) or step(batches)
        trainer.run()
        state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save(state, Path(result_dir) / f"rank{rank}.pt")
        torch.save(torch.tensor(inputs), Path(result_dir) / f"rank{rank}_inputs.pt")
    finally:
        dist.destroy_process_group()
