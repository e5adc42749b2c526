"""Stage 2 on a residual (depth-layout) tokenizer through the command line: train, sample, check."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from tiny_recipe import TINY

from vqtk.cli import main
from vqtk.interfaces import TokenLayout
from vqtk.io.checkpoint import load_checkpoint
from vqtk.train.metadata import read_layout

RESIDUAL = """
[model.quantizer]
type = "residual"
dim = 8
num_quantizers = 2
codebook_size = 16
"""

PRIOR = """
[prior]
type = "rq"
dim = 32
depth = 1
heads = 2
depth_layers = 1

[prior_train]
steps = 4
batch_size = 8
log_every = 1
sample_every = 2
checkpoint_every = 4
num_samples = 4
"""


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    """The tiny recipe with a 2-deep residual quantizer and an ``rq`` prior (installed plugins: the built-ins)."""
    quantizer, end = TINY.index("[model.quantizer]"), TINY.index("[model.decoder]")
    path = tmp_path_factory.mktemp("recipe") / "tiny_residual.toml"
    path.write_text(TINY[:quantizer] + RESIDUAL.lstrip() + "\n" + TINY[end:] + PRIOR)
    return path


@pytest.fixture(scope="module")
def trained(recipe_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["run", str(recipe_file), "--out", str(out), "--no-progress", "train.steps=2"]) == 0
    return out


def test_rq_prior_trains_on_residual_codes_and_writes_samples(trained):
    prior = trained / "prior"
    ckpt = load_checkpoint(prior)
    assert ckpt.step == 4
    assert read_layout(ckpt.metadata) == TokenLayout.with_depth(2)
    assert json.loads(ckpt.metadata["layout"]) == {"kind": "depth", "depth": 2, "scales": []}
    for tag in ("step_000002", "final"):
        with Image.open(prior / "samples" / f"{tag}.png") as im:
            assert im.size == (2 + 2 * 18, 2 + 2 * 18)  # 4 samples of 16x16 px in a 2x2 tile
    records = [json.loads(line) for line in (prior / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in records)
    # the stored recipe names what the tokenizer provided
    assert "num_codebooks = 2" in ckpt.metadata["recipe"]


def test_sample_command_on_a_depth_prior(trained, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", str(trained / "prior"), "--n", "2", "--out", str(out), "--top-k", "5", "--seed", "3"]) == 0
    assert "2 samples of 16x16 px (8x8x2 codes)" in capsys.readouterr().out
    first = out.read_bytes()
    assert main(["sample", str(trained / "prior"), "--n", "2", "--out", str(out), "--top-k", "5", "--seed", "3",
                 "--no-cache"]) == 0
    assert out.read_bytes() == first  # the KV cache changes nothing
    assert main(["sample", str(trained / "prior"), "--n", "1", "--size", "32", "32", "--out", str(out)]) == 2
    assert "up to its training grid 8x8, asked for 16x16" in capsys.readouterr().err


def test_check_prints_the_layout_and_refuses_a_prior_that_does_not_model_it(recipe_file, capsys):
    assert main(["check", str(recipe_file)]) == 0
    text = capsys.readouterr().out
    assert "codes: 16 codes x 2 codebooks, layout: a grid with 2 indices per position" in text
    assert "prior (rq):" in text and "(a grid with 2 indices per position)" in text
    assert main(["check", str(recipe_file), "prior.type=gpt"]) == 2
    captured = capsys.readouterr()
    assert "recipe" not in captured.out  # refused before anything is reported as fine
    assert ("prior: 'gpt' models the grid layout, but model.quantizer 'residual' lays out its codes as a grid "
            "with 2 indices per position (layout 'depth'); choose a prior that models 'depth'") in captured.err


def test_plugins_lists_each_priors_layouts(recipe_file, capsys):
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert "gpt (layouts: grid)" in text and "rq (layouts: depth)" in text


def test_run_refuses_a_prior_that_does_not_fit_before_stage_1_trains(recipe_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(recipe_file), "--out", str(out), "--no-progress", "train.steps=2", "prior.type=gpt"]) == 2
    assert "prior: 'gpt' models the grid layout" in capsys.readouterr().err
    assert not out.exists()  # nothing trained, no folder left behind


def test_large_grid_needs_a_prior_that_samples_larger_grids(recipe_file, capsys):
    # rq samples its training grid at most: a larger-than-training sample grid is a recipe error
    assert main(["check", str(recipe_file), "prior_train.large_grid=[64, 64]"]) == 2
    err = capsys.readouterr().err
    assert "prior_train.large_grid: 'rq' samples grids up to its training grid " in err
    assert "only, not 64x64; remove large_grid, or use a prior that samples larger grids" in err
