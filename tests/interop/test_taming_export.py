"""``vqtk convert to-taming``: vqtk tokenizers written back as taming-transformers checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from taming_fixtures import TINY_YAML, registry, run_cli, tiny_taming_state  # noqa: F401 - registry is a fixture
from vqtk.errors import VqtkError
from vqtk_builtins.converters.taming_convert import convert_taming, export_taming


@pytest.mark.parametrize("actnorm", [False, True], ids=["batchnorm", "actnorm"])
def test_taming_to_vqtk_to_taming_gives_identical_tensors(tmp_path, registry, actnorm):
    sd = tiny_taming_state(actnorm=actnorm)
    torch.save({"state_dict": sd, "global_step": 3}, tmp_path / "in.ckpt")
    assert run_cli(["convert", "taming", str(tmp_path / "in.ckpt"), "--out", str(tmp_path / "vq")]) == 0
    assert run_cli(["convert", "to-taming", str(tmp_path / "vq"), "--out", str(tmp_path / "out.ckpt")]) == 0
    back = torch.load(tmp_path / "out.ckpt", weights_only=True)  # plain tensors only
    assert set(back) == {"state_dict"}
    back = back["state_dict"]
    want = {k: v for k, v in sd.items() if not k.startswith("loss.perceptual_loss.")}
    assert sorted(back) == sorted(want)
    for k, v in want.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_exported_yaml_config_reconverts_to_the_same_recipe(tmp_path, registry):
    yaml = pytest.importorskip("yaml")
    torch.save({"state_dict": tiny_taming_state(actnorm=True)}, tmp_path / "in.ckpt")
    (tmp_path / "in.yaml").write_text(TINY_YAML.format(actnorm="True"))
    _, first = convert_taming(tmp_path / "in.ckpt", tmp_path / "vq", config=tmp_path / "in.yaml")
    path, spec, count = export_taming(tmp_path / "vq", tmp_path / "out.ckpt", config_out=tmp_path / "out.yaml")
    assert count == len(tiny_taming_state(actnorm=True)) - 2  # all but the two LPIPS tensors
    config = yaml.safe_load((tmp_path / "out.yaml").read_text())
    params = config["model"]["params"]
    assert config["model"]["target"] == "taming.models.vqgan.VQModel"
    assert config["model"]["base_learning_rate"] == pytest.approx(4.5e-6)
    assert params["ddconfig"] == {"double_z": False, "z_channels": 8, "resolution": 16, "in_channels": 3,
                                  "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                                  "attn_resolutions": [8], "dropout": 0.0}
    assert (params["embed_dim"], params["n_embed"]) == (8, 16)
    lp = params["lossconfig"]["params"]
    assert (lp["disc_num_layers"], lp["disc_ndf"], lp["use_actnorm"], lp["disc_start"], lp["disc_weight"]) == (
        2, 8, True, 250001, 0.8)
    _, second = convert_taming(path, tmp_path / "vq2", config=tmp_path / "out.yaml")
    assert second.resolved["model"] == first.resolved["model"]
    assert second.resolved["loss"] == first.resolved["loss"]
    assert second.resolved["train"]["optimizer"]["lr"] == pytest.approx(first.resolved["train"]["optimizer"]["lr"])


def _vqtk_checkpoint(tmp_path, changes: dict, registry):
    """A vqtk checkpoint (random weights) of the tiny taming recipe with some tables changed."""
    import tomllib

    from vqtk.build import build_discriminator, build_vqgan
    from vqtk_builtins.converters.taming_recipe import validated_recipe
    from vqtk.recipe import dump_toml
    from vqtk.io.checkpoint import save_checkpoint

    torch.save({"state_dict": tiny_taming_state()}, tmp_path / "in.ckpt")
    convert_taming(tmp_path / "in.ckpt", tmp_path / "base", resolution=16)
    raw = tomllib.loads((tmp_path / "base" / "recipe.toml").read_text())
    for path, table in changes.items():
        section, part = path.split(".")
        raw[section][part] = table
    recipe, resolved = validated_recipe(raw, registry)
    modules = {"model": build_vqgan(recipe, registry)}
    disc = build_discriminator(recipe, registry)
    if disc is not None:
        modules["discriminator"] = disc
    out = tmp_path / "changed"
    save_checkpoint(out / "checkpoints", 5, modules, {"recipe": dump_toml(resolved), "stage": "1",
                                                      "versions": json.dumps({})})
    return out


def test_components_without_a_taming_counterpart_are_named(tmp_path, registry, capsys):
    ckpt = _vqtk_checkpoint(tmp_path, {
        "model.quantizer": {"type": "factorized", "dim": 8, "codebook_size": 16, "codebook_dim": 4},
        "model.discriminator": {"type": "patchgan", "ndf": 8, "n_layers": 2, "norm": "group"},
    }, registry)
    rc = run_cli(["convert", "to-taming", str(ckpt), "--out", str(tmp_path / "out.ckpt")])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "vqtk: error: this tokenizer does not map to taming-transformers' VQModel:",
        "vqtk: error: model.quantizer: type 'factorized' has no taming counterpart (needs 'vq', taming's "
        "VectorQuantizer)",
        "vqtk: error: model.discriminator.norm: 'group' has no taming counterpart (batch or actnorm); "
        "--no-discriminator exports without it",
    ]
    assert not (tmp_path / "out.ckpt").exists()


def test_vq_options_and_mismatched_decoder_are_named(tmp_path, registry):
    dec = {"type": "taming", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 2, "attn_resolutions": [8],
           "z_channels": 8, "resolution": 16}
    ckpt = _vqtk_checkpoint(tmp_path, {
        "model.quantizer": {"type": "vq", "dim": 8, "codebook_size": 16, "codebook_dim": 4,
                            "use_cosine_sim": True},
        "model.decoder": dec,
    }, registry)
    with pytest.raises(VqtkError) as info:
        export_taming(ckpt, tmp_path / "out.ckpt", registry=registry)
    assert str(info.value).splitlines()[1:] == [
        "model.decoder.num_res_blocks: 2 differs from model.encoder.num_res_blocks 1 (taming's VQModel shares "
        "one ddconfig)",
        "model.quantizer.codebook_dim: 4 (a factorised codebook) has no taming counterpart; taming's codes "
        "have dim channels",
        "model.quantizer.use_cosine_sim: true has no taming counterpart (taming picks codes by L2 distance)",
    ]


def test_no_discriminator_flag_exports_the_tokenizer_alone(tmp_path, registry):
    ckpt = _vqtk_checkpoint(tmp_path, {
        "model.discriminator": {"type": "stylegan", "resolution": 16, "channels": 32, "max_channels": 32},
    }, registry)
    with pytest.raises(VqtkError, match="model.discriminator: type 'stylegan' has no taming counterpart"):
        export_taming(ckpt, tmp_path / "out.ckpt", registry=registry)
    assert run_cli(["convert", "to-taming", str(ckpt), "--no-discriminator", "--out", str(tmp_path / "o.ckpt")]) == 0
    sd = torch.load(tmp_path / "o.ckpt", weights_only=True)["state_dict"]
    assert not any(k.startswith("loss.") for k in sd)
    assert sd["quantize.embedding.weight"].shape == (16, 8)
    assert "encoder.down.1.attn.0.q.weight" in sd and "post_quant_conv.bias" in sd
