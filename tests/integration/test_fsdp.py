"""FSDP2 prior training (``prior_train.strategy = "fsdp"``): two gloo processes on CPU against one process.

The two processes shard a tiny GPT prior block by block; with the same global batch they
must log the losses and save the weights one process does (float32, up to summation order;
measured: losses equal to 3e-7, weights to 3e-8 after 4 AdamW steps).
The checkpoint is one ordinary safetensors file that ``vqtk sample`` reads without a process
group; a sharded run resumes from one process's checkpoint and one process from a sharded one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_recipe import TINY

from vqtk.cli import main
from vqtk.io.checkpoint import load_checkpoint
from vqtk.recipe import load_recipe
from vqtk.train.stage2 import Stage2Trainer

PRIOR = """
[prior]
type = "gpt"
dim = 32
depth = 2
heads = 2

[prior_train]
steps = 4
batch_size = 4
log_every = 1
sample_every = 100
checkpoint_every = 2
num_samples = 2

[prior_train.optimizer]
lr = 1e-3
grad_clip = 0.5
"""

#: float32 sums of the same numbers in another order (two half-batch gradients vs one), through 4 AdamW steps
TOLERANCE = 1e-5


def _registry():
    import vqtk_builtins

    import vqtk.registry.registry as registry_module
    from vqtk.registry import Registry

    registry = Registry()
    registry.register_plugin(vqtk_builtins, "builtins")
    registry_module._default = registry
    return registry


def _train_rank(rank: int, world: int, init: str, recipe: str, out: str, tokenizer: str, resume: str) -> None:
    """Train ``out`` sharded over ``world`` processes, then resume the run in ``resume``, sharded."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        registry = _registry()
        recipe_obj, resolved = load_recipe(recipe, ['prior_train.strategy="fsdp"'], registry)
        Stage2Trainer(recipe_obj, resolved, Path(out), tokenizer, registry=registry, progress=False).run()
        if _resume(recipe_obj, resolved, Path(resume), tokenizer, registry) != 2:
            raise AssertionError("the sharded resume did not start at step 2")
    finally:
        dist.destroy_process_group()


def _resume(recipe_obj, resolved, folder: Path, tokenizer: str, registry=None) -> int:
    """Resume the run in ``folder``; the number of steps it trained."""
    trainer = Stage2Trainer(recipe_obj, resolved, folder, tokenizer, resume=True, registry=registry, progress=False)
    steps, step = [], trainer.train_step
    trainer.train_step = lambda codes, labels: steps.append(1) or step(codes, labels)
    trainer.run()
    return len(steps)


def _stopped_at_step_2(run: Path, copy: Path) -> Path:
    """A copy of ``run`` as a Ctrl-C after step 2 would have left it."""
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step_000004")
    (copy / "checkpoints" / "last").write_text("step_000002\n")
    return copy


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _prior_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out).state_dict("prior")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    recipe = root / "tiny_fsdp.toml"
    recipe.write_text(TINY + PRIOR)
    with pytest.MonkeyPatch.context() as patch:
        import vqtk.registry.registry as registry_module

        patch.setattr(registry_module, "_default", _registry())
        assert main(["run", str(recipe), "--out", str(root / "tok"), "--stage", "1", "--no-progress",
                     "train.steps=1"]) == 0
        yield root, recipe, root / "tok"


def test_two_sharded_processes_match_one_and_resume_either_way(setup, tmp_path, capsys):
    root, recipe, tokenizer = setup
    # one process with the global batch: "fsdp" has nothing to shard and trains the prior whole;
    # recomputing the blocks' activations in the backward pass changes no number
    whole = ["prior_train.batch_size=8", 'prior_train.strategy="fsdp"', "prior_train.activation_checkpointing=true"]
    recipe_obj, resolved = load_recipe(recipe, whole)
    single = tmp_path / "single"
    Stage2Trainer(recipe_obj, resolved, single, tokenizer, progress=False).run()
    # two processes: a sharded run, then the single run's step-2 checkpoint resumed sharded
    sharded = tmp_path / "fsdp"
    single_half = _stopped_at_step_2(single, tmp_path / "single_half")
    mp.spawn(_train_rank, args=(2, str(tmp_path / "pg"), str(recipe), str(sharded), str(tokenizer),
                                str(single_half)), nprocs=2, join=True)

    assert _losses(sharded) == pytest.approx(_losses(single), abs=TOLERANCE)
    one, two = _prior_weights(single), _prior_weights(sharded)
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=TOLERANCE, rtol=0), k

    # one ordinary checkpoint file, sampled without a process group
    assert sorted(p.name for p in (sharded / "checkpoints" / "step_000004").iterdir()) == \
        ["model.safetensors", "train_state.safetensors"]
    assert main(["sample", str(sharded), "--n", "2", "--out", str(tmp_path / "grid.png")]) == 0
    assert "2 samples" in capsys.readouterr().out

    # the checkpoints resume under the other strategy: whole -> sharded (above), sharded -> whole
    sharded_half = _stopped_at_step_2(sharded, tmp_path / "fsdp_half")
    assert _resume(recipe_obj, resolved, sharded_half, tokenizer) == 2
    for resumed in (_prior_weights(single_half), _prior_weights(sharded_half)):
        for k in one:
            assert torch.allclose(resumed[k], one[k], atol=TOLERANCE, rtol=0), k
