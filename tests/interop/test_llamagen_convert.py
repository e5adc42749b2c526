"""``vqtk convert llamagen`` / ``to-llamagen``: LlamaGen VQ checkpoints become vqtk checkpoints that compute the same.

Faithfulness is checked against tests/interop/llamagen_reference.py, an independent
re-implementation of LlamaGen's VQModel with its state-dict layout. Tolerances: code
indices equal exactly; pixels and discriminator logits within atol 1e-5, rtol 1e-5
(measured differences about 1e-5 on outputs of magnitude ~4, from float32 summation
order: SDPA and a fused q/k/v conv against bmm/softmax).
"""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import torch

import llamagen_reference as ref
import vqtk
from taming_fixtures import registry, run_cli, tiny_taming_state  # noqa: F401 - registry is a fixture
from vqtk.build import build_discriminator, build_vqgan
from vqtk.io.checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from vqtk.pretrained import recipe_of
from vqtk.recipe import dump_toml
from vqtk.recipe.loader import load_recipe
from vqtk_builtins.converters.llamagen import LlamaGenConverter
from vqtk_builtins.converters.llamagen_state import USAGE_LOG, llamagen_to_taming
from vqtk_builtins.converters.taming_recipe import validated_recipe
from vqtk_builtins.converters.taming_state import VQTK_CODEBOOK, taming_to_vqtk_state

ROOT = Path(__file__).resolve().parents[2]
ATOL = RTOL = 1e-5
#: three levels (the decoder's level order reverses: 0 <-> 2), 2 blocks, 64 codes of 8 dims
CFG = dict(ch=32, ch_mult=(1, 1, 2), num_res_blocks=2, z_channels=16, codebook_size=64, codebook_embed_dim=8)


def _images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _convert(src: Path, out: Path, *flags: str) -> Path:
    assert run_cli(["convert", "llamagen", str(src), *flags, "--out", str(out)]) == 0
    return out


def _assert_same(model, reference, x):
    idx = model.encode_to_indices(x)
    want = reference.encode_to_indices(x)
    assert idx.dtype == torch.int64 and torch.equal(idx, want)
    assert len(idx.unique()) > 8  # a meaningful comparison: many codes in use
    pixels = reference.decode_indices(want)
    torch.testing.assert_close(model.decode_indices(idx), pixels, atol=ATOL, rtol=RTOL)
    with torch.no_grad():
        torch.testing.assert_close(model(x).reconstruction, pixels, atol=ATOL, rtol=RTOL)


@pytest.fixture
def training_checkpoint(tmp_path):
    """A LlamaGen vq_train.py checkpoint: model, ema, discriminator, optimizer states, steps, args."""
    model, ema, disc = ref.vq_model(CFG, seed=0), ref.vq_model(CFG, seed=5), ref.discriminator(ndf=8, n_layers=2)
    obj = {"model": model.state_dict(), "ema": ema.state_dict(), "discriminator": disc.state_dict(),
           "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "optimizer_disc": {"state": {}},
           "steps": 5000, "args": argparse.Namespace(vq_model="VQ-16", disc_weight=0.5)}
    torch.save(obj, tmp_path / "0005000.pt")
    return tmp_path / "0005000.pt", model, ema, disc


def test_released_format_checkpoint_computes_what_llamagen_computes(tmp_path, registry, capsys):
    reference = ref.vq_model(CFG)
    torch.save({"model": reference.state_dict()}, tmp_path / "vq_ds16_c2i.pt")  # as LlamaGen releases them
    out = _convert(tmp_path / "vq_ds16_c2i.pt", tmp_path / "conv")
    assert capsys.readouterr().out.splitlines()[:2] == [
        "LlamaGen VQModel: ch 32, ch_mult [1, 1, 2], 2 res blocks, z 16, 64 l2-normalised codes of 8 dims",
        "imported checkpoint['model']"]
    model = vqtk.load(out, device="cpu")
    assert not model.training
    _assert_same(model, reference, _images())
    recipe = tomllib.loads((out / "recipe.toml").read_text())
    q = recipe["model"]["quantizer"]
    assert (q["type"], q["dim"], q["codebook_dim"], q["codebook_size"], q["use_cosine_sim"],
            q["threshold_ema_dead_code"]) == ("factorized", 8, 8, 64, True, 0.0)
    assert recipe["model"]["encoder"]["attn_resolutions"] == [64] == recipe["model"]["decoder"]["attn_resolutions"]
    assert "discriminator" not in load_checkpoint(out).modules  # none in the file: the recipe's starts untrained


def test_training_checkpoint_takes_ema_and_the_discriminator_and_says_what_it_left(
        tmp_path, registry, capsys, training_checkpoint):
    src, model_ref, ema_ref, disc_ref = training_checkpoint
    out = _convert(src, tmp_path / "conv")
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "imported checkpoint['ema'] and checkpoint['discriminator']"
    assert lines[2] == ("not converted: model, optimizer, optimizer_disc, steps, args "
                        "(vqtk starts its own optimizer states)")
    _assert_same(vqtk.load(out, device="cpu"), ema_ref, _images())  # LlamaGen's scripts prefer ema too
    ckpt = load_checkpoint(out)
    disc = build_discriminator(recipe_of(ckpt))
    load_state_strict(disc, ckpt.state_dict("discriminator"), "disc")
    x = _images(size=64)
    with torch.no_grad():
        torch.testing.assert_close(disc.eval()(x), disc_ref(x), atol=ATOL, rtol=RTOL)
    assert ckpt.metadata["source"] == "LlamaGen 0005000.pt['ema'] (steps 5000)"

    plain = _convert(src, tmp_path / "plain", "--weights", "model", "--no-discriminator", "--resolution", "64")
    _assert_same(vqtk.load(plain, device="cpu"), model_ref, _images())
    assert "discriminator" not in load_checkpoint(plain).modules
    recipe = tomllib.loads((plain / "recipe.toml").read_text())  # attention sides follow the resolution
    assert (recipe["model"]["encoder"]["attn_resolutions"], recipe["data"]["resolution"]) == ([16], 64)


def test_to_llamagen_loads_strictly_into_llamagen_and_computes_the_same(tmp_path, registry, training_checkpoint):
    src, _, ema_ref, disc_ref = training_checkpoint
    conv = _convert(src, tmp_path / "conv")
    assert run_cli(["convert", "to-llamagen", str(conv), "--out", str(tmp_path / "back.pt")]) == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)  # plain tensors only
    assert set(back) == {"model", "discriminator"}
    reference = ref.VQModel(CFG).eval()
    reference.load_state_dict(back["model"], strict=True)
    _assert_same(vqtk.load(conv, device="cpu"), reference, _images(seed=1))
    original = ema_ref.state_dict()
    assert set(back["model"]) == set(original)
    assert all(torch.equal(back["model"][k], v) for k, v in original.items() if k != USAGE_LOG)
    assert torch.equal(back["model"][USAGE_LOG], torch.zeros(ref.USAGE_SLOTS))
    disc = ref.PatchGAN(ndf=8, n_layers=2).eval()
    disc.load_state_dict(back["discriminator"], strict=True)
    assert all(torch.equal(disc.state_dict()[k], v) for k, v in disc_ref.state_dict().items())

    assert run_cli(["convert", "to-llamagen", str(conv), "--no-discriminator", "--out", str(tmp_path / "m.pt")]) == 0
    assert set(torch.load(tmp_path / "m.pt", weights_only=True)) == {"model"}


@pytest.mark.parametrize("extra, named", [
    ({"quantize.embedding.bias": torch.zeros(8)}, "quantize.embedding.bias"),  # no such tensor in vqtk
    ({"decoder.conv_blocks.3.res.0.conv1.weight": torch.zeros(1)}, "decoder.conv_blocks.3.res.0.conv1.weight"),
    ({"encoder.adapter.weight": torch.zeros(1)}, "encoder.adapter.weight"),
])
def test_a_tensor_that_does_not_map_is_refused_by_name(tmp_path, registry, capsys, extra, named):
    torch.save({"model": {**ref.vq_model(CFG).state_dict(), **extra}}, tmp_path / "odd.pt")
    assert run_cli(["convert", "llamagen", str(tmp_path / "odd.pt"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vqtk: error: ") and named in err
    assert not (tmp_path / "c").exists()


def test_a_stylegan_discriminator_is_refused_unless_left_out(tmp_path, registry, capsys):
    reference = ref.vq_model(CFG)
    disc = {"conv1.weight": torch.zeros(8, 3, 3, 3), "final_linear.weight": torch.zeros(1, 8)}
    torch.save({"model": reference.state_dict(), "discriminator": disc}, tmp_path / "sg.pt")
    assert run_cli(["convert", "llamagen", str(tmp_path / "sg.pt"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "discriminator: conv1.weight" in err and "--no-discriminator" in err
    _assert_same(vqtk.load(_convert(tmp_path / "sg.pt", tmp_path / "c", "--no-discriminator"), device="cpu"),
                 reference, _images())


def test_to_llamagen_refuses_each_part_that_does_not_map(tmp_path, registry, capsys):
    raw = tomllib.loads(dump_toml(load_recipe(ROOT / "recipes" / "small_f8.toml", registry=registry)[1]))
    raw["model"]["encoder"]["attn_resolutions"] = [64]            # not the deepest level
    raw["model"]["decoder"]["attn_resolutions"] = [8]             # the deepest level: maps
    raw["model"]["quantizer"] = {"type": "fsq", "levels": [8, 5, 5, 5]}
    raw["model"]["discriminator"]["norm"] = "actnorm"
    recipe, resolved = validated_recipe(raw, registry)
    save_checkpoint(tmp_path / "run" / "checkpoints", 0, {"model": build_vqgan(recipe, registry)},
                    {"recipe": dump_toml(resolved), "stage": "1"})
    assert run_cli(["convert", "to-llamagen", str(tmp_path / "run"), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "this tokenizer does not map to LlamaGen's VQModel" in err
    assert "model.encoder.attn_resolutions: [64]" in err and "[8] for resolution 64" in err
    assert "model.quantizer: type 'fsq'" in err and "model.discriminator: 'patchgan' (norm 'actnorm')" in err
    assert "model.decoder" not in err and not (tmp_path / "x.pt").exists()


def test_the_converter_recognises_llamagen_files_and_loads_them_directly(tmp_path, registry):
    reference = ref.vq_model(CFG)
    torch.save({"model": reference.state_dict()}, tmp_path / "vq.pt")
    torch.save({"state_dict": tiny_taming_state()}, tmp_path / "taming.ckpt")
    converter = LlamaGenConverter()
    assert converter.recognizes(tmp_path / "vq.pt")
    assert not converter.recognizes(tmp_path / "taming.ckpt")
    model, recipe = converter.load(tmp_path / "vq.pt", registry=registry)
    assert recipe.model.quantizer.type == "factorized"
    _assert_same(model.eval(), reference, _images())
    torch.save(reference.state_dict(), tmp_path / "bare.pth")  # a state dict saved at the top level
    assert converter.recognizes(tmp_path / "bare.pth")
    _assert_same(converter.load(tmp_path / "bare.pth", registry=registry)[0].eval(), reference, _images())


def test_converted_training_settings_are_the_shipped_vq16_recipe(tmp_path, registry):
    torch.save({"model": ref.vq_model(CFG).state_dict()}, tmp_path / "vq.pt")
    converted = tomllib.loads((_convert(tmp_path / "vq.pt", tmp_path / "c") / "recipe.toml").read_text())
    shipped = tomllib.loads(dump_toml(load_recipe(ROOT / "recipes" / "llamagen_vq16.toml", registry=registry)[1]))
    for section in ("loss", "train"):
        assert converted[section] == shipped[section], section
    assert converted["model"]["discriminator"] == shipped["model"]["discriminator"]
    architecture = ("dim", "codebook_dim", "codebook_size")
    assert ({k: v for k, v in converted["model"]["quantizer"].items() if k not in architecture}
            == {k: v for k, v in shipped["model"]["quantizer"].items() if k not in architecture})
    assert (converted["data"]["scale"], converted["data"]["hflip"]) == (shipped["data"]["scale"], True)


def test_vq16_recipe_has_llamagens_tensor_names_shapes_and_parameter_count(registry):
    """recipes/llamagen_vq16.toml builds exactly what vq_ds16_c2i.pt's tensors map to (on the meta device)."""
    recipe, _ = load_recipe(ROOT / "recipes" / "llamagen_vq16.toml", registry=registry)
    with torch.device("meta"):
        model = build_vqgan(recipe, registry)
        llamagen = ref.VQModel(ref.VQ16)
    mapped, _, ignored = taming_to_vqtk_state(llamagen_to_taming(llamagen.state_dict(), None, "VQ-16"))
    assert ignored == [] and len(mapped) == len(llamagen.state_dict()) - 1  # all but the usage log
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()
           if not k.startswith("quantizer.") or k == VQTK_CODEBOOK}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == own
    assert own[VQTK_CODEBOOK] == (1, 16384, 8)
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in llamagen.parameters()) == 71_883_403  # README: "72M"


@pytest.mark.parametrize("name", ["llamagen_lfq", "llamagen_fsq", "llamagen_rotation", "llamagen_ibq"])
def test_llamagen_variants_build(registry, name):
    if name == "llamagen_ibq" and "ibq" not in registry.names("quantizer"):
        pytest.skip("the ibq quantizer is not registered")
    recipe, resolved = load_recipe(ROOT / "recipes" / "variants" / f"{name}.toml", registry=registry)
    model = build_vqgan(recipe, registry)  # not on the meta device: fsq computes its levels when built
    assert model.encoder.downsample_factor == 16 and resolved["model"]["encoder"]["ch_mult"] == [1, 1, 2, 2, 4]
    assert 71.7e6 < sum(p.numel() for p in model.parameters()) < 71.9e6


def test_readme_section_runs(tmp_path, registry):
    """The README's "Importing LlamaGen checkpoints" commands and Python, on a tiny checkpoint."""
    readme = (ROOT / "README.md").read_text()
    heading = "## Importing LlamaGen checkpoints"
    if heading not in readme:
        pytest.skip("the README has no LlamaGen section yet")
    start = readme.index(heading)
    end = readme.find("\n## ", start + len(heading))
    section = readme[start:] if end < 0 else readme[start:end]
    reference = ref.vq_model(CFG)
    torch.save({"model": reference.state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    out = str(tmp_path / "converted")
    (bash,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    command = shlex.split(bash.replace("pretrained_models/vq_ds16_c2i.pt", str(tmp_path / "vq_ds16_c2i.pt"))
                          .replace("converted/llamagen_vq16", out))
    assert command[:3] == ["vqtk", "convert", "llamagen"] and run_cli(command[1:]) == 0
    (python,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    code = (python.replace('vqtk.load("converted/llamagen_vq16")', f"vqtk.load({out!r}, device='cpu')")
            .replace("torch.rand(1, 3, 256, 256)", "torch.rand(1, 3, 32, 32)"))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert torch.equal(namespace["indices"], reference.encode_to_indices(namespace["images"]))
    (export,) = re.findall(r"`(vqtk convert to-llamagen [^`]*)`", section)
    command = shlex.split(export.replace("converted/llamagen_vq16", out).replace("vq.pt", str(tmp_path / "vq.pt")))
    assert run_cli(command[1:]) == 0
    reference.load_state_dict(torch.load(tmp_path / "vq.pt", weights_only=True)["model"], strict=True)
