"""Worker for the multi-process tests: one rank of a gloo process group on CPU."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist


def train_rank(rank: int, world_size: int, init_file: str, recipe_path: str, out: str,
               overrides: list[str], resume: bool, result_dir: str) -> None:
    import toy_plugin

    import vqtk.registry.registry as registry_module
    from vqtk.recipe import load_recipe
    from vqtk.registry import Registry
    from vqtk.train.stage1 import Stage1Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        registry = Registry()
        registry.register_plugin(toy_plugin, "toy")
        registry_module._default = registry
        recipe, resolved = load_recipe(recipe_path, overrides, registry)
        trainer = Stage1Trainer(recipe, resolved, Path(out), resume=resume, registry=registry, progress=False)
        trainer.run()
        state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save(state, Path(result_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
