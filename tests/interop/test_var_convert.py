"""``vqtk convert var`` / ``to-var``: VAR's VQVAE files become vqtk checkpoints that compute the same.

Faithfulness is checked against tests/interop/var_reference.py, an independent
re-implementation of VAR's VQVAE with its state-dict layout, at a small config
with random weights saved as VAR saves vae_ch160v4096z32.pth (a bare state
dict). Tolerances: code indices of every scale equal exactly; pixels within
atol 1e-5, rtol 1e-5 (float32 summation order: SDPA against bmm/softmax).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image

import var_reference as ref
import vqtk
from taming_fixtures import RunsShellCommand, registry, run_cli  # noqa: F401 - registry is a fixture
from vqtk_builtins.converters.var_state import HITS, var_to_vqtk, vqtk_to_var

ATOL = RTOL = 1e-5
SCALES = (1, 2, 3, 4, 6, 8)
#: three levels (f4): 32 px images, an 8x8 latent, 6 scales, 64 codes of 8 dims, 4 shared phi convs
CFG = dict(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=8, vocab_size=64, scales=SCALES)
FLAGS = ("--scales", ",".join(map(str, SCALES)))


def _images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _save(model, path: Path) -> Path:
    torch.save(model.state_dict(), path)  # as VAR releases its VQVAE
    return path


def _convert(src: Path, out: Path, *flags: str) -> Path:
    assert run_cli(["convert", "var", str(src), *flags, "--out", str(out)]) == 0
    return out


def _assert_same(model, reference, x):
    idx = model.encode_to_indices(x)
    want = reference.img_to_idx(x)
    assert idx.dtype == torch.int64 and idx.shape == (x.shape[0], sum(s * s for s in reference.quantize.scales))
    for k, (got, expected) in enumerate(zip(model.quantizer.layout.split(idx), want)):
        assert torch.equal(got.flatten(1), expected), f"scale {k}"
    assert len(idx.unique()) > 8  # a meaningful comparison: many codes in use
    pixels = reference.decode(reference.idx_to_fhat(want))
    torch.testing.assert_close(model.decode_indices(idx), pixels, atol=ATOL, rtol=RTOL)
    with torch.no_grad():
        torch.testing.assert_close(model(x).reconstruction, pixels, atol=ATOL, rtol=RTOL)


def test_a_var_file_converts_to_the_same_codes_per_scale_and_pixels(tmp_path, registry, capsys):
    reference = ref.vqvae(CFG)
    out = _convert(_save(reference, tmp_path / "vae_ch32v64z8.pth"), tmp_path / "conv", *FLAGS)
    assert capsys.readouterr().out.splitlines()[0] == (
        "VAR VQVAE: ch 32, ch_mult [1, 1, 2], 1 res blocks, z 8, 64 codes of 8 dims, scales [1, 2, 3, 4, 6, 8], "
        "4 phi convs (share_quant_resi 4), 3x3 quant convs")
    model = vqtk.load(out, device="cpu")
    assert not model.training
    _assert_same(model, reference, _images())
    recipe = tomllib.loads((out / "recipe.toml").read_text())
    q = recipe["model"]["quantizer"]
    assert (q["type"], q["dim"], q["codebook_size"], q["scales"], q["quant_resi"], q["share_quant_resi"]) == (
        "msvq", 8, 64, list(SCALES), 0.5, 4)
    assert recipe["model"]["quant_conv_kernel"] == 3 and recipe["data"]["resolution"] == 32
    assert recipe["model"]["encoder"]["attn_resolutions"] == [8]  # VAR: the deepest level only


def test_to_var_loads_strictly_into_var_and_round_trips_exactly(tmp_path, registry):
    reference = ref.vqvae(CFG, seed=3)
    conv = _convert(_save(reference, tmp_path / "vae.pth"), tmp_path / "conv", *FLAGS)
    assert run_cli(["convert", "to-var", str(conv), "--out", str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)  # plain tensors only
    original = reference.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[k], v) for k, v in original.items() if k != HITS)
    assert torch.equal(back[HITS], torch.zeros(len(SCALES), CFG["vocab_size"]))  # a training log, not kept
    again = ref.VQVAE(CFG).eval()
    again.load_state_dict(back, strict=True)
    _assert_same(vqtk.load(conv, device="cpu"), again, _images(seed=1))


@pytest.mark.parametrize("share", [0, 1, 4])
def test_each_phi_layout_maps_both_ways(share):
    sd = ref.vqvae({**CFG, "share_quant_resi": share}).state_dict()
    state = var_to_vqtk(sd, "x.pth")
    phis = {k for k in state.model if k.startswith("quantizer.phi.")}
    assert len(phis) == 2 * (len(SCALES) if share == 0 else share)
    assert (state.share_quant_resi, state.num_scales) == (share, len(SCALES))
    back = vqtk_to_var(state.model, share_quant_resi=share, num_scales=len(SCALES))
    assert set(back) == set(sd) and all(torch.equal(back[k], v) for k, v in sd.items() if k != HITS)


def test_var_s_own_scales_need_no_flag(tmp_path, registry):
    """VAR's ten scales are the default (an f2 model at 32 px: a 16x16 latent as VAR's f16 at 256 px)."""
    cfg = {**CFG, "ch_mult": (1, 2), "scales": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)}
    reference = ref.vqvae(cfg)
    out = _convert(_save(reference, tmp_path / "vae.pth"), tmp_path / "conv")
    q = tomllib.loads((out / "recipe.toml").read_text())["model"]["quantizer"]
    assert q["scales"] == list(cfg["scales"])
    _assert_same(vqtk.load(out, device="cpu"), reference, _images())  # 4 phi convs over 10 scales, ties included
    # the released file itself loads in memory through the var converter (taming's encoder names
    # are in it too: the taming converter must not claim it)
    assert registry.converter_for(tmp_path / "vae.pth").name == "var"
    _assert_same(vqtk.load(tmp_path / "vae.pth", device="cpu", registry=registry), reference, _images())


def test_reading_never_runs_code_from_the_file(tmp_path, registry):
    marker = tmp_path / "ran"
    sd = ref.vqvae(CFG).state_dict()
    torch.save({"state_dict": sd, "payload": RunsShellCommand(marker)}, tmp_path / "evil.pth")
    out = _convert(tmp_path / "evil.pth", tmp_path / "conv", *FLAGS)
    assert not marker.exists() and (out / "recipe.toml").exists()


@pytest.mark.parametrize("change, flags, named", [
    ({"quantize.extra.weight": torch.zeros(1)}, FLAGS, "quantize.extra.weight"),
    ({}, ("--scales", "1,2,4,8"), "--scales: 4 scales given, but the checkpoint was trained with 6"),
    ({}, (), "trained with 6 scales"),
    ({}, (*FLAGS, "--resolution", "64"), "--resolution: 64 px images give a 16x16 latent grid"),
])
def test_what_does_not_map_is_a_one_line_error(tmp_path, registry, capsys, change, flags, named):
    torch.save({**ref.vqvae(CFG).state_dict(), **change}, tmp_path / "odd.pth")
    assert run_cli(["convert", "var", str(tmp_path / "odd.pth"), *flags, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vqtk: error: ") and named in err
    assert not (tmp_path / "c").exists()


def test_a_converted_model_reconstructs_from_the_command_line(tmp_path, registry, capsys):
    conv = _convert(_save(ref.vqvae(CFG), tmp_path / "vae.pth"), tmp_path / "conv", *FLAGS)
    pixels = (torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "img.png")
    capsys.readouterr()
    assert run_cli(["reconstruct", str(conv), str(tmp_path / "img.png"), "--out", str(tmp_path / "rec"),
                    "--size", "32"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(130,) codes" in line and "PSNR" in line
    assert any((tmp_path / "rec").iterdir())


def test_the_shipped_recipe_is_what_converting_the_release_gives(registry):
    """recipes/var_tokenizer.toml and `vqtk convert var vae_ch160v4096z32.pth` agree on every value but the name."""
    from vqtk.recipe.loader import load_recipe
    from vqtk_builtins.converters.taming_recipe import validated_recipe
    from vqtk_builtins.converters.taming_spec import DDConfig, TamingSpec
    from vqtk_builtins.converters.var_convert import var_recipe
    from vqtk_builtins.converters.var_state import VarState
    from vqtk_builtins.quantizers.msvq import VAR_SCALES

    dd = DDConfig(ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), z_channels=32,
                  resolution=256)
    state = VarState(model={}, share_quant_resi=4, num_phi=4, num_scales=10)
    raw = var_recipe(state, TamingSpec(ddconfig=dd, embed_dim=32, n_embed=4096), scales=VAR_SCALES,
                     quant_resi=0.5, znorm=False, kernel=3, name="var_tokenizer")
    converted = validated_recipe(raw, registry)[1]
    _, shipped = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "var_tokenizer.toml", registry=registry)
    assert shipped == converted
