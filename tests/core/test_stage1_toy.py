"""The stage-1 loop on toy components: exact resume, atomic checkpoints, outputs."""

from __future__ import annotations

import json

import pytest
import torch
from toy_plugin import TOY_RECIPE

from vqtk.errors import VqtkError
from vqtk.recipe import load_recipe
from vqtk.io import files as files_mod
from vqtk.io.checkpoint import load_checkpoint
from vqtk.train.stage1 import Stage1Trainer


def _trainer(tmp_path, registry, out, overrides=(), resume=False):
    path = tmp_path / "toy.toml"
    path.write_text(TOY_RECIPE)
    recipe, resolved = load_recipe(path, ["train.log_every=1", "train.image_every=2", *overrides], registry)
    return Stage1Trainer(recipe, resolved, out, resume=resume, registry=registry, progress=False)


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_run_writes_checkpoint_metrics_and_images(tmp_path, toy_registry):
    out = tmp_path / "run"
    _trainer(tmp_path, toy_registry, out).run()
    ck = load_checkpoint(out)
    assert ck.step == 4 and ck.path.name == "step_000004"
    assert 'type = "toy"' in ck.recipe_toml
    assert json.loads(ck.metadata["versions"])["plugins"] == {"toy": ""}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss/total" in r]
    assert steps == [1, 2, 3, 4]
    assert {"loss/pixel", "quantizer/usage", "quantizer/perplexity", "lr", "images_per_s"} <= set(records[1])
    assert "eval/psnr" in records[0]
    for name in ("recon_start.png", "recon_step_000002.png", "recon_final.png"):
        assert (out / "images" / name).stat().st_size > 100
    assert (out / "loss_curve.png").exists()


def test_exact_resume_is_bit_identical(tmp_path, toy_registry):
    full = _trainer(tmp_path, toy_registry, tmp_path / "full", ["train.steps=6", "train.checkpoint_every=100"])
    full.run()
    half = _trainer(tmp_path, toy_registry, tmp_path / "half", ["train.steps=3"])
    half.run()
    resumed = _trainer(tmp_path, toy_registry, tmp_path / "half", ["train.steps=6", "train.checkpoint_every=100"], resume=True)
    resumed.run()
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # optimizer moments too
    sa, sb = full.opt_g.state_dict()["state"], resumed.opt_g.state_dict()["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"])
    # the resumed run's metrics hold each training step exactly once
    records = [json.loads(l) for l in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss/total" in r] == [1, 2, 3, 4, 5, 6]


def test_kill_during_checkpoint_write_keeps_last_loadable(tmp_path, toy_registry, monkeypatch):
    out = tmp_path / "run"
    trainer = _trainer(tmp_path, toy_registry, out, ["train.steps=2"])
    trainer.run()
    good = load_checkpoint(out).path

    real = files_mod.save_file

    def dies_midway(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\x00" * 10)  # a torn write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_mod, "save_file", dies_midway)
    trainer.step = 5
    with pytest.raises(OSError):
        trainer.save()
    monkeypatch.setattr(files_mod, "save_file", real)
    again = load_checkpoint(out)
    assert again.path == good and again.step == 2
    assert torch.equal(again.state_dict("model")["quant_conv.weight"], trainer.model.quant_conv.weight.detach())


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, toy_registry):
    out = tmp_path / "run"
    _trainer(tmp_path, toy_registry, out, ["train.steps=1"]).run()
    model_file = load_checkpoint(out).path / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:100])
    with pytest.raises(VqtkError, match="not a readable safetensors checkpoint"):
        load_checkpoint(out)


def test_vqtk_load_returns_eval_model_that_round_trips(tmp_path, toy_registry):
    import vqtk.pretrained

    out = tmp_path / "run"
    trainer = _trainer(tmp_path, toy_registry, out, ["train.steps=2"])
    trainer.run()
    model = vqtk.pretrained.load(out, device="cpu", registry=toy_registry)
    assert not model.training
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    idx = model.encode_to_indices(x)
    assert idx.shape == (2, 4, 4) and idx.dtype == torch.int64
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(model.decode_indices(idx), trainer.model.decode_indices(idx))


def test_nonfinite_steps_are_skipped_then_stop_the_run(tmp_path, toy_registry, monkeypatch):
    import toy_plugin

    out = tmp_path / "run"
    trainer = _trainer(tmp_path, toy_registry, out, ["train.steps=3", "train.max_nonfinite_steps=3"])
    trainer.run()
    good = load_checkpoint(out).path
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def poisoned(self, inputs):
        return toy_plugin.LossTerm(inputs.reconstruction.sum() * float("nan"))

    monkeypatch.setattr(toy_plugin.ToyL1, "generator_loss", poisoned)
    x = torch.rand(2, 3, 16, 16)
    logs = trainer.train_step([x])
    assert float(logs["skipped"]) == 1.0 and trainer.nonfinite_steps == 1
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the poisoned step changed nothing
    trainer.train_step([x])
    with pytest.raises(VqtkError, match="3 consecutive steps with a non-finite loss.*last checkpoint is intact"):
        trainer.train_step([x])
    assert load_checkpoint(out).path == good


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_smoke_step_on_cpu(tmp_path, toy_registry, precision):
    trainer = _trainer(tmp_path, toy_registry, tmp_path / precision, [f"train.precision={precision}", "train.steps=2"])
    trainer.run()
    records = [json.loads(l) for l in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss/total"])) for r in records if "loss/total" in r)


def test_ema_weights_are_kept_and_saved(tmp_path, toy_registry):
    out = tmp_path / "ema"
    trainer = _trainer(tmp_path, toy_registry, out, ["train.ema_decay=0.5", "train.steps=3", "train.channels_last=true"])
    trainer.run()
    ck = load_checkpoint(out)
    ema = ck.state_dict("ema")
    assert int(ema["n_averaged"]) == 3
    raw = ck.state_dict("model")["quant_conv.weight"]
    assert not torch.equal(ema["module.quant_conv.weight"], raw)  # an average, not a copy
    assert torch.equal(ema["module.quant_conv.weight"], trainer.eval_model.quant_conv.weight.detach())


def test_vqtk_load_prefers_the_moving_average(tmp_path, toy_registry):
    import vqtk.pretrained

    out = tmp_path / "ema_load"
    trainer = _trainer(tmp_path, toy_registry, out, ["train.ema_decay=0.5", "train.steps=2"])
    trainer.run()
    model = vqtk.pretrained.load(out, device="cpu", registry=toy_registry)
    assert torch.equal(model.quant_conv.weight, trainer.eval_model.quant_conv.weight.detach())

