"""Stage 2 end to end: code cache, prior training, exact resume, sampling commands."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image
from tiny_recipe import TINY

from vqtk.cli import main
from vqtk.recipe import load_recipe
from vqtk.io.checkpoint import load_checkpoint
from vqtk.train.stage2 import Stage2Trainer

PRIOR = """
[prior]
type = "gpt"
codebook_size = 32
grid_size = [8, 8]
dim = 32
depth = 1
heads = 2

[prior_train]
steps = 6
batch_size = 8
log_every = 1
sample_every = 3
checkpoint_every = 3
num_samples = 4
large_grid = [10, 12]
"""


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    import vqtk_builtins

    import vqtk.registry.registry as registry_module
    from vqtk.registry import Registry

    registry = Registry()
    registry.register_plugin(vqtk_builtins, "builtins")
    path = tmp_path_factory.mktemp("recipe") / "tiny2.toml"
    path.write_text(TINY + PRIOR)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_module, "_default", registry)
        yield path


@pytest.fixture(scope="module")
def trained(recipe_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["run", str(recipe_file), "--out", str(out), "--no-progress", "train.steps=3"]) == 0
    return out


def test_both_stages_write_samples_including_a_larger_size(trained):
    prior = trained / "prior"
    assert load_checkpoint(prior).step == 6
    with Image.open(prior / "samples" / "final.png") as im:
        small = im.size
    with Image.open(prior / "samples" / "final_large.png") as im:
        large = im.size
    # 4 samples in a 2x2 tile; 8x8 codes -> 16x16 px, 10x12 codes -> 20x24 px, 2 px padding
    assert small == (2 + 2 * 18, 2 + 2 * 18)
    assert large == (2 + 2 * 26, 2 + 2 * 22)
    records = [json.loads(l) for l in (prior / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r["bits_per_token"] == pytest.approx(r["loss"] / 0.6931471805599453) for r in records)
    assert list((trained / "codes").glob("*.safetensors"))


def test_stage2_alone_reuses_the_code_cache(trained, recipe_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vqtk")
    out = tmp_path / "second"
    assert main(["run", str(recipe_file), "--out", str(out), "--stage", "2", "--tokenizer", str(trained),
                 "--no-progress"]) == 0
    assert "code cache: reusing" in caplog.text
    assert (out / "prior" / "samples" / "final.png").exists()


def test_stage2_exact_resume(trained, recipe_file, tmp_path):
    def trainer(out, steps, resume=False):
        recipe, resolved = load_recipe(recipe_file, [f"prior_train.steps={steps}", "prior_train.checkpoint_every=100"])
        return Stage2Trainer(recipe, resolved, out, trained, resume=resume, progress=False)

    full = trainer(tmp_path / "full", 6)
    full.run()
    trainer(tmp_path / "half", 3).run()
    resumed = trainer(tmp_path / "half", 6, resume=True)
    resumed.run()
    a, b = full.prior.state_dict(), resumed.prior.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sample_command(trained, tmp_path, capsys):
    prior = trained / "prior"
    out = tmp_path / "grid.png"
    assert main(["sample", str(prior), "--n", "2", "--out", str(out), "--top-k", "5", "--seed", "3"]) == 0
    assert "2 samples of 16x16 px (8x8 codes)" in capsys.readouterr().out
    first = out.read_bytes()
    assert main(["sample", str(prior), "--n", "2", "--out", str(out), "--top-k", "5", "--seed", "3"]) == 0
    assert out.read_bytes() == first  # same seed, same picture
    assert main(["sample", str(prior), "--n", "1", "--size", "24", "32", "--out", str(out)]) == 0
    assert "24x32 px (12x16 codes)" in capsys.readouterr().out
    assert main(["sample", str(prior), "--n", "1", "--class", "1", "--out", str(out)]) == 2
    assert main(["sample", str(prior), "--n", "1", "--size", "21", "30", "--out", str(out)]) == 2
    assert main(["sample", str(trained), "--n", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--class: this prior is unconditional" in err
    assert "must be positive multiples of the downsampling factor 2" in err
    assert "a stage-1 (tokenizer) checkpoint; sample needs a stage-2 (prior) checkpoint" in err


def test_depth_layout_quantizer_is_refused_by_name(recipe_file, tmp_path, capsys):
    code = main(["run", str(recipe_file), "--out", str(tmp_path / "rvq"), "--no-progress", "train.steps=1",
                 "model.quantizer.type=residual", "model.quantizer.dim=8", "model.quantizer.num_quantizers=2",
                 "model.quantizer.codebook_size=32"])
    assert code == 2
    err = capsys.readouterr().err
    assert ("prior: 'gpt' models the grid layout, but model.quantizer 'residual' lays out its codes as "
            "a grid with 2 indices per position (layout 'depth')") in err
