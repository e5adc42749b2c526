"""Built-in taming encoder/decoder: shapes, taming's parameter names, attention, layouts, configs."""

from __future__ import annotations

import inspect
import math

import attrs
import pytest
import torch
import torch.nn.functional as F

import vqtk_builtins
from vqtk.errors import RecipeError
from vqtk.interfaces import Decoder, Encoder
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import DecoderRef, EncoderRef
from vqtk.registry import Registry
from vqtk_builtins.autoencoders import (
    AttnBlock,
    Downsample,
    ResnetBlock,
    TamingDecoder,
    TamingEncoder,
    TamingLayout,
    Upsample,
)
from vqtk.registry.forwarding import forwards_arguments

#: The tiny layout of most tests: levels at 16 and 8 pixels, attention at 8.
TINY = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=4, resolution=16)


def tiny_encoder(**kw) -> TamingEncoder:
    torch.manual_seed(0)
    return TamingEncoder(**{**TINY, **kw})


def tiny_decoder(**kw) -> TamingDecoder:
    torch.manual_seed(0)
    return TamingDecoder(**{**TINY, **kw})


def registry() -> Registry:
    reg = Registry()
    record = reg.register_plugin(vqtk_builtins, "builtins")
    assert record.error is None, record.error
    return reg


# -- taming's state-dict names, written out from taming/modules/diffusionmodules/model.py --


def resnet_keys(prefix: str, shortcut: bool) -> list[str]:
    names = ["norm1", "conv1", "norm2", "conv2"] + (["nin_shortcut"] if shortcut else [])
    return [f"{prefix}.{n}.{p}" for n in names for p in ("weight", "bias")]


def attn_keys(prefix: str) -> list[str]:
    return [f"{prefix}.{n}.{p}" for n in ("norm", "q", "k", "v", "proj_out") for p in ("weight", "bias")]


def conv_keys(name: str) -> list[str]:
    return [f"{name}.weight", f"{name}.bias"]


MID_KEYS = resnet_keys("mid.block_1", False) + attn_keys("mid.attn_1") + resnet_keys("mid.block_2", False)

# TINY encoder: down.0 at 16 px (32 -> 32, downsample), down.1 at 8 px (32 -> 64, attention).
ENCODER_KEYS = (
    conv_keys("conv_in")
    + resnet_keys("down.0.block.0", False)
    + conv_keys("down.0.downsample.conv")
    + resnet_keys("down.1.block.0", True)
    + attn_keys("down.1.attn.0")
    + MID_KEYS
    + conv_keys("norm_out")
    + conv_keys("conv_out")
)

# TINY decoder: up.0 at 16 px (64 -> 32, then 32 -> 32), up.1 at 8 px (64 -> 64, attention, upsample).
DECODER_KEYS = (
    conv_keys("conv_in")
    + MID_KEYS
    + resnet_keys("up.0.block.0", True)
    + resnet_keys("up.0.block.1", False)
    + resnet_keys("up.1.block.0", False)
    + resnet_keys("up.1.block.1", False)
    + attn_keys("up.1.attn.0")
    + attn_keys("up.1.attn.1")
    + conv_keys("up.1.upsample.conv")
    + conv_keys("norm_out")
    + conv_keys("conv_out")
)


def test_encoder_state_dict_keys_are_tamings():
    sd = tiny_encoder().state_dict()
    assert list(sd) == ENCODER_KEYS
    assert sd["conv_in.weight"].shape == (32, 3, 3, 3)
    assert sd["down.1.block.0.nin_shortcut.weight"].shape == (64, 32, 1, 1)
    assert sd["down.0.downsample.conv.weight"].shape == (32, 32, 3, 3)
    assert sd["down.1.attn.0.q.weight"].shape == (64, 64, 1, 1)
    assert sd["conv_out.weight"].shape == (4, 64, 3, 3)


def test_decoder_state_dict_keys_are_tamings():
    sd = tiny_decoder().state_dict()
    assert list(sd) == DECODER_KEYS
    assert sd["conv_in.weight"].shape == (64, 4, 3, 3)
    assert sd["up.0.block.0.nin_shortcut.weight"].shape == (32, 64, 1, 1)
    assert sd["up.1.upsample.conv.weight"].shape == (64, 64, 3, 3)
    assert sd["conv_out.weight"].shape == (3, 32, 3, 3)


def test_state_dicts_load_strictly_into_a_fresh_instance():
    enc, dec = tiny_encoder(), tiny_decoder()
    torch.manual_seed(1)
    enc2, dec2 = TamingEncoder(**TINY), TamingDecoder(**TINY)
    enc2.load_state_dict(enc.state_dict())
    dec2.load_state_dict(dec.state_dict())
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(dec2(enc2(x)), dec(enc(x)), rtol=0, atol=0)


# -- shapes and interface attributes ---------------------------------------------------


def test_encoder_shapes_and_attributes():
    enc = tiny_encoder()
    assert isinstance(enc, Encoder)
    assert (enc.in_channels, enc.out_channels, enc.downsample_factor) == (3, 4, 2)
    assert enc(torch.randn(2, 3, 16, 16)).shape == (2, 4, 8, 8)
    assert enc(torch.randn(1, 3, 16, 32)).shape == (1, 4, 8, 16)  # non-square works too


def test_decoder_shapes_and_attributes():
    dec = tiny_decoder(out_channels=1)
    assert isinstance(dec, Decoder)
    assert (dec.in_channels, dec.out_channels, dec.upsample_factor) == (4, 1, 2)
    assert dec(torch.randn(2, 4, 8, 8)).shape == (2, 1, 16, 16)
    assert dec.last_layer is dec.conv_out.weight


def test_three_levels_downsample_by_four():
    kw = dict(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8, resolution=16)
    enc, dec = TamingEncoder(**kw), TamingDecoder(**kw)
    assert enc.downsample_factor == dec.upsample_factor == 4
    z = enc(torch.randn(1, 3, 16, 16))
    assert z.shape == (1, 8, 4, 4)
    assert dec(z).shape == (1, 3, 16, 16)
    assert not any(".attn." in k for k in enc.state_dict())  # only mid.attn_1


def test_gradients_reach_every_parameter():
    enc, dec = tiny_encoder(), tiny_decoder()
    x = torch.randn(2, 3, 16, 16)
    F.l1_loss(dec(enc(x)), x).backward()
    for module in (enc, dec):
        for name, p in module.named_parameters():
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name


# -- blocks against hand computations --------------------------------------------------


def test_attention_equals_naive_softmax_attention():
    torch.manual_seed(0)
    block = AttnBlock(channels=32)
    for p in block.parameters():  # non-trivial norm affine and biases
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 32, 4, 5)
    b, c, h, w = x.shape
    n = block.norm(x)
    q, k, v = (m(n).reshape(b, c, h * w) for m in (block.q, block.k, block.v))  # (B, C, N)
    attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (B, N_q, N_k)
    out = (v @ attn.transpose(1, 2)).reshape(b, c, h, w)
    expected = x + block.proj_out(out)
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_downsample_pads_right_and_bottom_only():
    down = Downsample(channels=1)
    with torch.no_grad():
        down.conv.weight.fill_(1.0)
        down.conv.bias.zero_()
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # output (i, j) sums rows 2i..2i+2, cols 2j..2j+2; the padded 5th row/col is zero
    expected = torch.tensor([[[[x[0, 0, 0:3, 0:3].sum(), x[0, 0, 0:3, 2:4].sum()],
                               [x[0, 0, 2:4, 0:3].sum(), x[0, 0, 2:4, 2:4].sum()]]]])
    torch.testing.assert_close(down(x), expected)


def test_upsample_is_nearest_then_conv():
    up = Upsample(channels=1)
    with torch.no_grad():
        up.conv.weight.zero_()
        up.conv.weight[0, 0, 1, 1] = 1.0  # identity 3x3 kernel
        up.conv.bias.fill_(0.5)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    expected = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]).float() + 0.5
    torch.testing.assert_close(up(x)[0, 0], expected)


def test_resnet_block_shortcut():
    same = ResnetBlock(in_channels=32, out_channels=32)
    wider = ResnetBlock(in_channels=32, out_channels=64, dropout=0.1)
    assert not hasattr(same, "nin_shortcut")
    assert wider.nin_shortcut.kernel_size == (1, 1)
    assert wider.dropout.p == 0.1
    for block in (same, wider):
        with torch.no_grad():
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
    x = torch.randn(1, 32, 4, 4)
    torch.testing.assert_close(same(x), x)  # residual branch silenced: identity
    torch.testing.assert_close(wider(x), wider.nin_shortcut(x))


def test_norm_is_32_group_groupnorm():
    norm = ResnetBlock(in_channels=64).norm1
    assert (norm.num_groups, norm.eps, norm.affine) == (32, 1e-6, True)


def test_dropout_is_active_only_in_training():
    enc = tiny_encoder(dropout=0.5)
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(enc(x), enc(x))
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x), rtol=0, atol=0)


# -- channels_last -----------------------------------------------------------------------


def test_channels_last_matches_contiguous():
    enc, dec = tiny_encoder(), tiny_decoder()
    x = torch.randn(2, 3, 16, 16)
    z = enc(x)
    y = dec(z)
    cl = torch.channels_last
    enc_cl, dec_cl = tiny_encoder().to(memory_format=cl), tiny_decoder().to(memory_format=cl)
    z_cl = enc_cl(x.contiguous(memory_format=cl))
    y_cl = dec_cl(z_cl)
    assert z_cl.is_contiguous(memory_format=cl) and y_cl.is_contiguous(memory_format=cl)
    torch.testing.assert_close(z_cl, z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-5)
    # gradients agree too
    y.square().mean().backward()
    y_cl.square().mean().backward()
    torch.testing.assert_close(enc_cl.conv_in.weight.grad, enc.conv_in.weight.grad, rtol=1e-3, atol=1e-5)


def test_attention_keeps_the_input_layout():
    block = AttnBlock(channels=32)
    x = torch.randn(1, 32, 4, 4)
    assert block(x).is_contiguous()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out = block.to(memory_format=torch.channels_last)(x_cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, block(x))


# -- configs and the registry --------------------------------------------------------------


@pytest.fixture
def encoder_config(builtins_registry):
    """The encoder's recipe config class, derived from TamingEncoder's signature."""
    return builtins_registry.get("encoder", "taming").config


@pytest.fixture
def decoder_config(builtins_registry):
    return builtins_registry.get("decoder", "taming").config


def test_f16_defaults_match_tamings_imagenet_model(builtins_registry, encoder_config, decoder_config):
    with torch.device("meta"):
        enc = builtins_registry.get("encoder", "taming").create(encoder_config())
        dec = builtins_registry.get("decoder", "taming").create(decoder_config())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(enc) == 29_298_176
    assert count(dec) == 42_449_795
    quant_convs = 2 * (256 * 256 + 256)
    codebook = 16384 * 256
    assert round((count(enc) + count(dec) + quant_convs + codebook) / 1e6) == 76
    assert enc.downsample_factor == 16
    assert len(enc.down[4].attn) == 2 and len(dec.up[4].attn) == 3  # attention at 16x16 only
    assert sum(len(level.attn) for level in enc.down) == 2


def test_build_through_the_registry(encoder_config, decoder_config):
    reg = registry()
    enc = reg.get("encoder", "taming").create(encoder_config(**TINY))
    dec = reg.get("decoder", "taming").create(decoder_config(**TINY))
    assert isinstance(enc, TamingEncoder) and isinstance(dec, TamingDecoder)
    assert dec(enc(torch.randn(1, 3, 16, 16))).shape == (1, 3, 16, 16)
    assert list(enc.state_dict()) == ENCODER_KEYS


def test_configs_are_the_signatures_with_the_layout_declared_once(encoder_config, decoder_config):
    layout = list(inspect.signature(TamingLayout).parameters)
    assert [f.name for f in attrs.fields(encoder_config)] == layout + ["in_channels"]
    assert [f.name for f in attrs.fields(decoder_config)] == layout + ["out_channels"]
    assert list(inspect.signature(TamingEncoder).parameters) == layout + ["in_channels"]
    for name in layout:
        enc, dec = attrs.fields_dict(encoder_config)[name], attrs.fields_dict(decoder_config)[name]
        declared = inspect.signature(TamingLayout).parameters[name]
        assert enc.default == dec.default == declared.default
        assert enc.metadata["vqtk_doc"] == dec.metadata["vqtk_doc"] != ""
    assert attrs.fields_dict(encoder_config)["in_channels"].metadata["vqtk_doc"] == "image channels."
    with pytest.raises(TypeError, match="unexpected keyword argument 'chh'"):
        TamingEncoder(chh=32)


def test_forwards_arguments_refuses_signatures_it_cannot_merge():
    def no_rest(self, *, ch: int = 1):
        pass

    def repeats(self, *, ch: int = 1, **rest):
        pass

    with pytest.raises(TypeError, match=r"needs a \*\*kwargs"):
        forwards_arguments(TamingLayout)(no_rest)
    with pytest.raises(TypeError, match="repeats ch"):
        forwards_arguments(TamingLayout)(repeats)


def test_every_field_has_a_doc(builtins_registry):
    for kind in ("encoder", "decoder"):
        spec = builtins_registry.get(kind, "taming")
        assert spec.doc
        for field in attrs.fields(spec.config):
            assert field.metadata["vqtk_doc"].strip(), f"{kind} taming: {field.name} has no doc"


def test_recipe_tables_structure_into_configs():
    converter = RecipeConverter(registry())
    table = {"type": "taming", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
             "attn_resolutions": [8], "z_channels": 4, "resolution": 16}
    enc_ref = converter.structure(table, EncoderRef)
    dec_ref = converter.structure({**table, "out_channels": 1}, DecoderRef)
    assert enc_ref.config.ch_mult == (1, 2)
    assert dec_ref.config.out_channels == 1
    with pytest.raises(RecipeError, match="ch_mult: must not be empty"):
        converter.structure({**table, "ch_mult": []}, EncoderRef)
    with pytest.raises(RecipeError, match=r"dropout: must be >= 0 and < 1, got 1\.0"):
        converter.structure({**table, "dropout": 1.0}, EncoderRef)
    # the registered cross-field check: only the encoder normalises ch itself
    with pytest.raises(RecipeError, match="but 16 is not"):
        converter.structure({**table, "ch": 16, "ch_mult": [2, 4]}, EncoderRef)
    assert converter.structure({**table, "ch": 16, "ch_mult": [2, 4]}, DecoderRef).config.ch == 16


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(ch=48), r"divisible by the 32 GroupNorm groups, but 48 is not"),
        (dict(ch=40), r"\(ch = 40, ch_mult = \[1, 2\], and ch itself\).*but 40, 80 are not"),
        (dict(ch=16, ch_mult=(2, 4)), r"divisible by the 32 GroupNorm groups, but 16 is not"),
        (dict(ch=0), r"must be > 0, got 0"),
        (dict(ch_mult=()), r"must not be empty"),
        (dict(ch_mult=(1, 0)), r"\[1\] must be > 0, got 0"),
        (dict(attn_resolutions=(-8,)), r"\[0\] must be > 0, got -8"),
        (dict(attn_resolutions=(4,)), r"attn_resolutions \[4\] never occur: .* works at \[16, 8\]"),
        (dict(resolution=17), r"resolution 17 is not divisible by the downsampling factor 2"),
        (dict(dropout=-0.1), r"must be >= 0 and < 1"),
        (dict(num_res_blocks=0), r"must be > 0, got 0"),
    ],
)
def test_encoder_config_validation(encoder_config, fields, message):
    with pytest.raises(ValueError, match=message):
        encoder_config(**{**TINY, **fields})


def test_decoder_config_validation(decoder_config):
    # the decoder never normalises ch itself, only ch * mult
    assert decoder_config(**{**TINY, "ch": 16, "ch_mult": (2, 4)}).ch == 16
    with pytest.raises(ValueError, match="divisible by the 32 GroupNorm groups, but 48 is not"):
        decoder_config(**{**TINY, "ch": 16, "ch_mult": (3, 4)})
    with pytest.raises(ValueError, match=r"must be >= 0 and < 1, got 1\.0"):
        decoder_config(**{**TINY, "dropout": 1.0})


def test_modules_check_their_arguments_without_configs():
    with pytest.raises(ValueError, match="32 GroupNorm groups"):
        TamingEncoder(**{**TINY, "ch": 40})
    with pytest.raises(ValueError, match="not divisible by the downsampling factor"):
        TamingDecoder(**{**TINY, "resolution": 15})
