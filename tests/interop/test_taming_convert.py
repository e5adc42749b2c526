"""``vqtk convert taming``: taming VQModel checkpoints become vqtk checkpoints that compute the same.

Faithfulness is checked against tests/interop/taming_reference.py, an independent
functional forward pass of taming's architecture. Tolerances: code indices
equal exactly; decoded pixels and discriminator logits within atol 1e-5,
rtol 1e-5 (measured differences are about 3e-6 on outputs of magnitude ~3,
from float32 summation order: SDPA vs explicit softmax, fused q/k/v conv).
"""

from __future__ import annotations

import tomllib

import pytest
import torch

import taming_reference as ref
import vqtk
from taming_fixtures import (  # noqa: F401 - registry is a fixture
    TINY,
    TINY_YAML,
    registry,
    run_cli,
    save_lightning_checkpoint,
    tiny_taming_state,
)
from vqtk.errors import VqtkError
from vqtk_builtins.converters.taming_convert import convert_taming

ATOL = RTOL = 1e-5


def _images(n=2, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("actnorm", [False, True], ids=["batchnorm", "actnorm"])
def test_converted_lightning_checkpoint_computes_what_taming_computes(tmp_path, registry, actnorm):
    sd = tiny_taming_state(actnorm=actnorm)
    src = save_lightning_checkpoint(tmp_path / "last.ckpt", sd)  # with OmegaConf/Lightning-like objects
    rc = run_cli(["convert", "taming", str(src), "--resolution", "16", "--out", str(tmp_path / "conv")])
    assert rc == 0
    assert (tmp_path / "conv" / "checkpoints" / "last").read_text().strip() == "step_000000"
    model = vqtk.load(tmp_path / "conv", device="cpu")
    assert not model.training
    x = _images()
    idx = model.encode_to_indices(x)
    want = ref.encode_to_indices(sd, x, TINY)
    assert idx.shape == (2, 8, 8) and idx.dtype == torch.int64
    assert torch.equal(idx, want)
    assert len(idx.unique()) > 4  # a meaningful comparison: many codes in use
    pixels = model.decode_indices(idx)
    torch.testing.assert_close(pixels, ref.decode_indices(sd, want, TINY), atol=ATOL, rtol=RTOL)

    from vqtk.build import build_discriminator
    from vqtk.io.checkpoint import load_state_strict
    from vqtk.pretrained import recipe_of
    from vqtk.io.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "conv")
    disc = build_discriminator(recipe_of(ckpt))
    load_state_strict(disc, ckpt.state_dict("discriminator"), "disc")
    disc.eval()
    with torch.no_grad():
        logits = disc(x)
    torch.testing.assert_close(logits, ref.discriminate(sd, x, n_layers=2, actnorm=actnorm), atol=ATOL, rtol=RTOL)


def test_architecture_inferred_from_the_weights(tmp_path, registry, capsys):
    torch.save({"state_dict": tiny_taming_state(actnorm=True)}, tmp_path / "m.ckpt")
    assert run_cli(["convert", "taming", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert ("ch 32, ch_mult [1, 2], 1 res blocks, attention at [128] (of 256), z 8, 16 codes of 8 dims; "
            "patchgan discriminator (2 layers, ndf 8, actnorm)") in out
    text = (tmp_path / "c" / "recipe.toml").read_text()
    assert "image side assumed 256; attn_resolutions are relative to it" in text
    assert "beta on the commitment term" in text and "legacy quantizer" in text
    recipe = tomllib.loads(text)
    enc = recipe["model"]["encoder"]
    assert (enc["type"], enc["ch"], enc["ch_mult"], enc["num_res_blocks"], enc["attn_resolutions"],
            enc["z_channels"], enc["resolution"], enc["in_channels"]) == ("taming", 32, [1, 2], 1, [128], 8, 256, 3)
    assert recipe["model"]["decoder"]["attn_resolutions"] == [128]
    q = recipe["model"]["quantizer"]
    assert (q["type"], q["dim"], q["codebook_size"], q["beta"], q["threshold_ema_dead_code"]) == ("vq", 8, 16, 0.25, 0)
    d = recipe["model"]["discriminator"]
    assert (d["type"], d["ndf"], d["n_layers"], d["norm"], d["in_channels"]) == ("patchgan", 8, 2, "actnorm", 3)
    assert set(recipe["loss"]) == {"pixel", "perceptual", "codebook", "gan"}
    # the metadata holds the same recipe, and it validates (vqtk.load builds from it)
    from vqtk.io.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "c")
    assert ckpt.recipe_toml == text and ckpt.metadata["stage"] == "1" and ckpt.step == 0
    assert "loss.perceptual_loss" not in " ".join(ckpt.tensors)
    # the assumed resolution changes names, not the computation: same codes as the reference
    x = _images(n=1, size=32, seed=3)
    sd = tiny_taming_state(actnorm=True)
    assert torch.equal(vqtk.load(tmp_path / "c", device="cpu").encode_to_indices(x),
                       ref.encode_to_indices(sd, x, TINY))


def test_config_yaml_sets_the_architecture_and_the_training(tmp_path, registry):
    pytest.importorskip("yaml")
    torch.save({"state_dict": tiny_taming_state(actnorm=False)}, tmp_path / "m.ckpt")
    (tmp_path / "model.yaml").write_text(TINY_YAML.format(actnorm="False"))
    rc = run_cli(["convert", "taming", str(tmp_path / "m.ckpt"), "--config", str(tmp_path / "model.yaml"),
                  "--out", str(tmp_path / "c")])
    assert rc == 0
    text = (tmp_path / "c" / "recipe.toml").read_text()
    assert "# Architecture read from model.yaml." in text
    r = tomllib.loads(text)
    assert r["model"]["encoder"]["attn_resolutions"] == [8] and r["model"]["encoder"]["resolution"] == 16
    assert r["model"]["discriminator"]["norm"] == "batch"
    assert r["loss"]["gan"]["weight"] == 0.8 and r["loss"]["gan"]["start_step"] == 250001
    assert r["loss"]["codebook"]["weight"] == 1.0 and r["loss"]["gan"]["objective"] == "hinge"
    assert r["train"]["batch_size"] == 4
    assert r["train"]["optimizer"]["lr"] == pytest.approx(4.5e-6 * 4)
    assert r["data"]["resolution"] == 16
    x = _images(n=1)
    sd = tiny_taming_state(actnorm=False)
    assert torch.equal(vqtk.load(tmp_path / "c", device="cpu").encode_to_indices(x),
                       ref.encode_to_indices(sd, x, TINY))


def test_config_that_does_not_match_the_weights_is_reported(tmp_path, registry):
    pytest.importorskip("yaml")
    torch.save({"state_dict": tiny_taming_state()}, tmp_path / "m.ckpt")
    (tmp_path / "model.yaml").write_text(TINY_YAML.format(actnorm="False").replace("z_channels: 8", "z_channels: 16"))
    with pytest.raises(VqtkError, match=r"weights do not match the model \(shape mismatch: "
                                        r"decoder.conv_in.weight \(64, 8, 3, 3\) vs \(64, 16, 3, 3\)"):
        convert_taming(tmp_path / "m.ckpt", tmp_path / "c", config=tmp_path / "model.yaml")
    bad = TINY_YAML.format(actnorm="maybe").replace("ch: 32", "ch: '32'")
    (tmp_path / "bad.yaml").write_text(bad)
    with pytest.raises(VqtkError) as info:
        convert_taming(tmp_path / "m.ckpt", tmp_path / "c", config=tmp_path / "bad.yaml")
    assert str(info.value).splitlines() == [
        f"{tmp_path / 'bad.yaml'}: model.params.ddconfig.ch: expected int, got '32'",
        f"{tmp_path / 'bad.yaml'}: model.params.lossconfig.params.use_actnorm: expected bool, got 'maybe'",
    ]


def test_config_without_pyyaml_says_so(tmp_path, registry, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    torch.save({"state_dict": tiny_taming_state()}, tmp_path / "m.ckpt")
    (tmp_path / "model.yaml").write_text(TINY_YAML)
    with pytest.raises(VqtkError, match=r"^--config: reading taming's YAML configs needs PyYAML \(pip install "
                                        r"pyyaml\); without --config the architecture is inferred"):
        convert_taming(tmp_path / "m.ckpt", tmp_path / "c", config=tmp_path / "model.yaml")


def test_net2net_transformer_checkpoint_is_refused_with_the_reason(tmp_path, registry, capsys):
    sd = {f"first_stage_model.{k}": v for k, v in ref.make_vqgan_state(TINY).items()}
    g = torch.Generator().manual_seed(0)
    for name, shape in {"transformer.tok_emb.weight": (16, 32), "transformer.pos_emb": (1, 64, 32),
                        "transformer.blocks.0.ln1.weight": (32,), "transformer.blocks.0.ln1.bias": (32,),
                        "transformer.blocks.0.attn.query.weight": (32, 32),
                        "transformer.blocks.0.attn.query.bias": (32,), "transformer.head.weight": (16, 32)}.items():
        sd[name] = torch.randn(*shape, generator=g)
    save_lightning_checkpoint(tmp_path / "net2net.ckpt", sd)
    rc = run_cli(["convert", "taming", str(tmp_path / "net2net.ckpt"), "--out", str(tmp_path / "c")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("vqtk: error: taming Net2NetTransformer checkpoints do not map to vqtk's gpt prior: "
                             "minGPT's attention projections and layer norms carry biases")
    assert err[0].endswith("(net2net.ckpt holds 7 transformer.* tensors)")
    assert not (tmp_path / "c").exists()
    with pytest.raises(VqtkError, match="^taming Net2NetTransformer checkpoints do not map to vqtk's gpt prior: "):
        vqtk.load(tmp_path / "net2net.ckpt")


def test_missing_or_unexpected_weights_are_named(tmp_path, registry):
    sd = tiny_taming_state()
    del sd["encoder.down.1.attn.0.q.bias"]
    torch.save({"state_dict": sd}, tmp_path / "m.ckpt")
    with pytest.raises(VqtkError, match=r"weights do not match the model \(missing 1: encoder.down.1.attn.0.q.bias\)"):
        convert_taming(tmp_path / "m.ckpt", tmp_path / "c", resolution=16)
    sd = tiny_taming_state()
    sd["quant_conv.weight"] = torch.zeros(8, 16, 1, 1)  # double_z: the encoder would give 16 channels
    torch.save({"state_dict": sd}, tmp_path / "z.ckpt")
    with pytest.raises(VqtkError, match=r"encoder.conv_out gives 8 channels but quant_conv takes 16"):
        convert_taming(tmp_path / "z.ckpt", tmp_path / "c")
    with pytest.raises(VqtkError, match=r"--resolution: 13 is not a positive multiple of the downsampling factor 2"):
        convert_taming(tmp_path / "m.ckpt", tmp_path / "c", resolution=13)


def test_existing_output_is_not_overwritten_and_ignored_tensors_are_logged(tmp_path, registry, caplog):
    sd = tiny_taming_state(discriminator=False)
    sd["colorize"] = torch.randn(3, 5, 1, 1)  # a segmentation model's extra buffer
    sd["quantize.used"] = torch.arange(0, 16, 2)  # VectorQuantizer2's index remapping
    torch.save({"state_dict": sd}, tmp_path / "m.ckpt")
    with caplog.at_level("WARNING", logger="vqtk"):
        folder, converted = convert_taming(tmp_path / "m.ckpt", tmp_path / "c")
    assert "ignored 2 tensor(s) with no vqtk counterpart: colorize, quantize.used" in caplog.text
    assert "remaps its indices to a subset of codes (quantize.used)" in caplog.text
    assert converted.discriminator is None
    assert "discriminator" not in tomllib.loads((tmp_path / "c" / "recipe.toml").read_text())["model"]
    with pytest.raises(VqtkError, match="already holds a run or a converted checkpoint"):
        convert_taming(tmp_path / "m.ckpt", tmp_path / "c")


def test_vqtk_load_reads_a_taming_checkpoint_directly(tmp_path, registry):
    sd = tiny_taming_state()
    save_lightning_checkpoint(tmp_path / "last.ckpt", sd)
    model = vqtk.load(tmp_path / "last.ckpt", device="cpu", dtype=torch.float64)
    assert not model.training and next(model.parameters()).dtype == torch.float64
    x = _images(n=1)
    sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    idx = model.encode_to_indices(x.double())
    assert torch.equal(idx, ref.encode_to_indices(sd64, x.double(), TINY))
    torch.testing.assert_close(model.decode_indices(idx), ref.decode_indices(sd64, idx, TINY), atol=1e-10, rtol=1e-10)


def test_reconstruct_command_works_on_a_converted_checkpoint(tmp_path, registry, capsys):
    from PIL import Image

    torch.save({"state_dict": tiny_taming_state()}, tmp_path / "m.ckpt")
    convert_taming(tmp_path / "m.ckpt", tmp_path / "c", resolution=16)
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(20, 20, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(tmp_path / "img.png")
    capsys.readouterr()
    rc = run_cli(["reconstruct", str(tmp_path / "c"), str(tmp_path / "img.png"), "--out", str(tmp_path / "rec"),
                  "--device", "cpu"])
    assert rc == 0
    assert "(8, 8) codes, PSNR" in capsys.readouterr().out
    assert list((tmp_path / "rec").iterdir())
