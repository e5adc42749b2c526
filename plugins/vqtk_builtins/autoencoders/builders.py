"""Configs and build functions of the taming-transformers encoder and decoder.

Defaults are taming's ImageNet f16-16384 VQGAN (ch 128, ch_mult [1, 1, 2, 2, 4],
2 residual blocks, attention at 16x16, 256 latent channels, 256x256 images).
"""

from __future__ import annotations

from typing import Any

import attrs

from vqtk.config import each, non_empty, positive

from vqtk_builtins.autoencoders.architecture import check_architecture


def _dropout(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None and not 0 <= value < 1:
        raise ValueError(f"must be >= 0 and < 1, got {value!r}")


def _check(config: Any, *, include_base: bool) -> None:
    """Cross-field checks, skipped when a field already failed its own validator."""
    ch, mult, attn, res = config.ch, config.ch_mult, config.attn_resolutions, config.resolution
    if not (isinstance(ch, int) and ch > 0 and isinstance(res, int) and res > 0):
        return
    if not mult or not all(isinstance(m, int) and m > 0 for m in mult):
        return
    if not all(isinstance(r, int) and r > 0 for r in attn):
        return
    check_architecture(ch=ch, ch_mult=mult, attn_resolutions=attn, resolution=res, include_base=include_base)


@attrs.define(kw_only=True)
class _TamingFields:
    """Fields shared by the taming encoder and decoder (which mirror each other)."""

    #: base channel width; level i has ch * ch_mult[i] channels (all divisible by 32)
    ch: int = attrs.field(default=128, validator=positive)
    #: width multiplier per level; the encoder has len(ch_mult) - 1 stride-2 downsamplings,
    #: the decoder as many x2 upsamplings
    ch_mult: tuple[int, ...] = attrs.field(default=(1, 1, 2, 2, 4), validator=[non_empty, each(positive)])
    #: residual blocks per level (the decoder uses num_res_blocks + 1, like taming)
    num_res_blocks: int = attrs.field(default=2, validator=positive)
    #: image sides (pixels) at which attention follows each residual block
    attn_resolutions: tuple[int, ...] = attrs.field(default=(16,), validator=each(positive))
    #: channels of the latents the encoder outputs and the decoder takes
    z_channels: int = attrs.field(default=256, validator=positive)
    #: image side the attention placement refers to (divisible by 2 ** (len(ch_mult) - 1))
    resolution: int = attrs.field(default=256, validator=positive)
    #: dropout before each block's second convolution
    dropout: float = attrs.field(default=0.0, validator=_dropout)


def _architecture(config: _TamingFields) -> dict:
    """The constructor arguments the taming encoder and decoder share."""
    return dict(
        ch=config.ch,
        ch_mult=tuple(config.ch_mult),
        num_res_blocks=config.num_res_blocks,
        attn_resolutions=tuple(config.attn_resolutions),
        z_channels=config.z_channels,
        resolution=config.resolution,
        dropout=config.dropout,
    )


@attrs.define(kw_only=True)
class TamingEncoderConfig(_TamingFields):
    """taming-transformers VQGAN encoder: ResNet blocks, GroupNorm, swish, attention at chosen resolutions."""

    #: image channels
    in_channels: int = attrs.field(default=3, validator=positive)

    def __attrs_post_init__(self) -> None:
        _check(self, include_base=True)


def build_taming_encoder(config: TamingEncoderConfig):
    """Build a :class:`~vqtk_builtins.autoencoders.encoder.TamingEncoder`."""
    from vqtk_builtins.autoencoders.encoder import TamingEncoder

    return TamingEncoder(in_channels=config.in_channels, **_architecture(config))


@attrs.define(kw_only=True)
class TamingDecoderConfig(_TamingFields):
    """taming-transformers VQGAN decoder: ResNet blocks, GroupNorm, swish, nearest x2 upsampling, attention."""

    #: image channels
    out_channels: int = attrs.field(default=3, validator=positive)

    def __attrs_post_init__(self) -> None:
        _check(self, include_base=False)


def build_taming_decoder(config: TamingDecoderConfig):
    """Build a :class:`~vqtk_builtins.autoencoders.decoder.TamingDecoder`."""
    from vqtk_builtins.autoencoders.decoder import TamingDecoder

    return TamingDecoder(out_channels=config.out_channels, **_architecture(config))


def register_components(register) -> None:
    """Register the taming encoder and decoder."""
    register(
        "encoder",
        "taming",
        config=TamingEncoderConfig,
        build=build_taming_encoder,
        doc="taming-transformers VQGAN encoder (GroupNorm ResNet + attention); loads taming weights",
    )
    register(
        "decoder",
        "taming",
        config=TamingDecoderConfig,
        build=build_taming_decoder,
        doc="taming-transformers VQGAN decoder (GroupNorm ResNet + attention); loads taming weights",
    )
