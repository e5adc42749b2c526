"""Two processes (gloo on CPU) training from WebDataset shards: disjoint shards per rank, exact resume.

The images are solid colours numbering their sample, so the batches each rank
trained on say which samples (and shards) it read.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.multiprocessing as mp
from ddp_worker import train_rank
from PIL import Image
from tiny_recipe import TINY

from vqtk.io.shards import SIZES_FILE, write_shards

PER_SHARD = 4


def _spawn(tmp_path: Path, name: str, overrides: list[str], resume: bool = False) -> list[dict]:
    """Weights and the sample numbers of every image each rank trained on."""
    results = tmp_path / f"results_{name}_{int(resume)}"
    results.mkdir()
    mp.spawn(train_rank, args=(2, str(tmp_path / f"pg_{name}_{int(resume)}"), str(tmp_path / "tiny.toml"),
                               str(tmp_path / name), overrides, resume, str(results), ("vqtk_builtins", "builtins")),
             nprocs=2, join=True)
    return [{"weights": torch.load(results / f"rank{r}.pt", weights_only=True),
             "seen": ((torch.load(results / f"rank{r}_inputs.pt") + 1) * 127.5).round().long().tolist()}
            for r in range(2)]


def test_two_processes_read_disjoint_shards_and_resume_exactly(tmp_path):
    (tmp_path / "src").mkdir()
    for i in range(40):  # 8 training shards of 4, then 8 held-out images
        Image.new("RGB", (16, 16), (i, 0, 100)).save(tmp_path / "src" / f"{i:03d}.png")
    write_shards(tmp_path / "src", tmp_path / "shards", shard_size=PER_SHARD)
    (tmp_path / "tiny.toml").write_text(TINY)
    shards = tmp_path / "shards"
    data = ['data.type="shards"', f'data.shards=["{shards}/shard-{{000000..000007}}.tar"]',
            f'data.eval_shards=["{shards}/shard-{{000008..000009}}.tar"]', f'data.sizes="{shards / SIZES_FILE}"',
            "data.resolution=16", "data.streams=2", "data.shuffle_buffer=3", "train.batch_size=2",
            "train.image_every=100", "train.checkpoint_every=100", "train.num_workers=0",
            # the schedule must not depend on train.steps; and a quantizer drawing no random numbers: only
            # rank 0's RNG state is checkpointed, and rank 1's dead-code restarts would draw from it on resume
            "train.optimizer.schedule=\"constant\"", 'model.quantizer.type="fsq"', "model.quantizer.levels=[4, 4]",
            "model.quantizer.dim=8"]

    whole = _spawn(tmp_path, "whole", [*data, "train.steps=6"])
    shards_of = [{i // PER_SHARD for i in r["seen"]} for r in whole]
    assert all(len(r["seen"]) == 12 for r in whole)
    assert not shards_of[0] & shards_of[1]  # each rank reads its own shards
    assert max(max(s) for s in shards_of) < 8  # never a held-out one
    for k, v in whole[0]["weights"].items():
        assert torch.equal(v, whole[1]["weights"][k]), k

    # stopped after 3 steps (mid-stream: 2 streams per process) and resumed: the same batches, bit for bit
    first = _spawn(tmp_path, "half", [*data, "train.steps=3"])
    rest = _spawn(tmp_path, "half", [*data, "train.steps=6"], resume=True)
    for rank in range(2):
        assert first[rank]["seen"] + rest[rank]["seen"] == whole[rank]["seen"]
    for k, v in whole[0]["weights"].items():
        assert torch.equal(v, rest[0]["weights"][k]), k
