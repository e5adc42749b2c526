"""Stage 1 end to end with the built-in components on real photos (tiny sizes)."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_recipe import TINY

from vqtk.cli import main
from vqtk.recipe import load_recipe
from vqtk.train.stage1 import Stage1Trainer


@pytest.fixture
def recipe_file(tmp_path, builtins_registry, use_registry):
    use_registry(builtins_registry)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _trainer(path, out, overrides=(), resume=False):
    recipe, resolved = load_recipe(path, list(overrides))
    return Stage1Trainer(recipe, resolved, out, resume=resume, progress=False)


def test_exact_resume_with_gan_and_actnorm(recipe_file, tmp_path):
    full = _trainer(recipe_file, tmp_path / "full", ["train.checkpoint_every=100"])
    full.run()
    _trainer(recipe_file, tmp_path / "half", ["train.steps=3"]).run()
    resumed = _trainer(recipe_file, tmp_path / "half", ["train.steps=6", "train.checkpoint_every=100"], resume=True)
    resumed.run()
    for mod_a, mod_b in ((full.model, resumed.model), (full.disc, resumed.disc)):
        a, b = mod_a.state_dict(), mod_b.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    records = [json.loads(l) for l in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    gan = [r["gan/adaptive_weight"] for r in records if "gan/adaptive_weight" in r]
    assert gan[:2] == [0.0, 0.0] and all(w > 0 for w in gan[2:])  # start_step = 2 respected


def test_discriminator_update_never_reaches_the_generator(recipe_file, tmp_path):
    trainer = _trainer(recipe_file, tmp_path / "run", ["train.steps=1"])
    trainer.step = 5  # past start_step: both GAN terms active
    seen = {}
    g_step, d_step = trainer.opt_g.step, trainer.opt_d.step

    def record_g(*a, **k):
        seen["g"] = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        seen["d_grads_during_g"] = [p.grad for p in trainer.disc.parameters()]
        return g_step(*a, **k)

    def record_d(*a, **k):
        seen["g_after_d"] = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        seen["d"] = [p.grad for p in trainer.disc.parameters()]
        return d_step(*a, **k)

    trainer.opt_g.step, trainer.opt_d.step = record_g, record_d
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    trainer.train_step([x])
    assert all(g is None for g in seen["d_grads_during_g"])  # generator pass leaves D untouched
    assert all(g is not None for g in seen["d"]) and sum(float(g.abs().sum()) for g in seen["d"]) > 0
    assert seen["g"].keys() == seen["g_after_d"].keys()
    for name, grad in seen["g"].items():
        assert torch.equal(grad, seen["g_after_d"][name]), name


def test_losses_fall_and_outputs_are_written(recipe_file, tmp_path):
    out = tmp_path / "run"
    code = main(["run", str(recipe_file), "--out", str(out), "--no-progress", "train.steps=40",
                 "train.log_every=1", "loss.gan.start_step=1000", "train.image_every=20"])
    assert code == 0
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    pixel = [r["loss/pixel"] for r in records if "loss/pixel" in r]
    assert len(pixel) == 40
    assert sum(pixel[-8:]) / 8 < 0.8 * sum(pixel[:8]) / 8
    evals = [r["eval/psnr"] for r in records if "eval/psnr" in r]
    assert evals[-1] > evals[0] + 1.0  # held-out PSNR improves by over 1 dB
    for name in ("images/recon_start.png", "images/recon_step_000020.png", "images/recon_final.png", "loss_curve.png"):
        assert (out / name).stat().st_size > 0


def test_reconstruct_command(recipe_file, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "run"
    assert main(["run", str(recipe_file), "--out", str(out), "--no-progress", "train.steps=2"]) == 0
    img = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(img)
    assert main(["reconstruct", str(out), str(img), "--out", str(tmp_path / "rec")]) == 0
    stdout = capsys.readouterr().out
    assert "(8, 8) codes, PSNR" in stdout
    with Image.open(tmp_path / "rec" / "photo_recon.png") as rec:
        assert rec.size == (16, 16)
    assert main(["reconstruct", str(out), str(tmp_path / "missing.png"), "--out", str(tmp_path / "rec")]) == 2
    assert main(["reconstruct", str(out), str(img), "--out", str(tmp_path / "rec"), "--size", "9"]) == 2
