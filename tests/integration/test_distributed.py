"""Two-process data-parallel training (gloo on CPU, loopback only) against one process."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from ddp_worker import train_rank
from toy_plugin import TOY_RECIPE

from vqtk.recipe import load_recipe
from vqtk.train.stage1 import Stage1Trainer

#: float32 sums of the same numbers in a different order (two half-batch means vs one mean)
TOLERANCE = 1e-6


def _spawn(tmp_path, name, recipe, overrides, resume=False):
    results = tmp_path / f"results_{name}"
    results.mkdir(exist_ok=True)
    init = tmp_path / f"pg_{name}_{int(resume)}"
    mp.spawn(train_rank, args=(2, str(init), str(recipe), str(tmp_path / name), overrides, resume, str(results)),
             nprocs=2, join=True)
    return [torch.load(results / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text(TOY_RECIPE)
    return path


def test_two_processes_match_one_and_resume_exactly(recipe, tmp_path, toy_registry):
    rank0, rank1 = _spawn(tmp_path, "ddp", recipe, ["train.batch_size=2", "train.steps=4", "train.checkpoint_every=100"])
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k  # identical on both ranks
    recipe_obj, resolved = load_recipe(recipe, ["train.batch_size=4", "train.steps=4"], toy_registry)
    single = Stage1Trainer(recipe_obj, resolved, tmp_path / "single", registry=toy_registry, progress=False)
    single.run()
    for k, v in single.model.state_dict().items():
        assert torch.allclose(v, rank0[k], atol=TOLERANCE, rtol=0), k
    # only rank 0 wrote: one metrics file, one checkpoint folder
    assert (tmp_path / "ddp" / "checkpoints" / "step_000004" / "model.safetensors").exists()

    # stopped half way and resumed, still under two processes: the same weights, bit for bit
    _spawn(tmp_path, "half", recipe, ["train.batch_size=2", "train.steps=2"])
    resumed, other = _spawn(tmp_path, "half", recipe, ["train.batch_size=2", "train.steps=4",
                                                       "train.checkpoint_every=100"], resume=True)
    for k in rank0:
        assert torch.equal(rank0[k], resumed[k]), k
        assert torch.equal(resumed[k], other[k]), k
