"""Configs and build functions for the built-in discriminators."""

from __future__ import annotations

from typing import Literal

import attrs

from vqtk.config import positive


def _power_of_two_at_least_8(_inst, _attr, value: int) -> None:
    if value < 8 or value & (value - 1):
        raise ValueError(f"must be a power of two >= 8, got {value!r}")


@attrs.define(kw_only=True)
class PatchGANConfig:
    """PatchGAN (pix2pix / taming NLayerDiscriminator): one logit per image patch."""

    #: channels of the images it scores
    in_channels: int = attrs.field(default=3, validator=positive)
    #: channels of the first convolution (doubled per layer, at most 8x)
    ndf: int = attrs.field(default=64, validator=positive)
    #: stride-2 convolutions; 3 gives 70x70 receptive fields (images need >= 3 * 2**n_layers pixels)
    n_layers: int = attrs.field(default=3, validator=positive)
    #: normalisation after inner convolutions; "actnorm" initialises from the first batch
    norm: Literal["batch", "actnorm", "group", "none"] = "batch"


def build_patchgan(config: PatchGANConfig):
    """PatchGAN (pix2pix / taming NLayerDiscriminator): one logit per image patch."""
    from vqtk_builtins.discriminators.patchgan import PatchGANDiscriminator

    return PatchGANDiscriminator(
        in_channels=config.in_channels, ndf=config.ndf, n_layers=config.n_layers, norm=config.norm
    )


@attrs.define(kw_only=True)
class StyleGANConfig:
    """StyleGAN2-style residual discriminator: one logit per image of a fixed resolution."""

    #: side of the (square) images it scores; must equal the data resolution
    resolution: int = attrs.field(default=256, validator=_power_of_two_at_least_8)
    in_channels: int = attrs.field(default=3, validator=positive)
    #: channels at full resolution, doubled at each downsampling
    channels: int = attrs.field(default=64, validator=positive)
    #: cap on the channels of any layer
    max_channels: int = attrs.field(default=512, validator=positive)
    #: append the minibatch standard deviation channel before the head
    mbstd: bool = True
    mbstd_group_size: int = attrs.field(default=4, validator=positive)
    #: low-pass filter before each stride-2 convolution
    blur: bool = True

    def __attrs_post_init__(self) -> None:
        if self.max_channels < self.channels:
            raise ValueError(f"max_channels ({self.max_channels}) must be >= channels ({self.channels})")


def build_stylegan(config: StyleGANConfig):
    """StyleGAN2-style residual discriminator: one logit per image of a fixed resolution."""
    from vqtk_builtins.discriminators.stylegan import StyleGANDiscriminator

    return StyleGANDiscriminator(
        in_channels=config.in_channels,
        resolution=config.resolution,
        channels=config.channels,
        max_channels=config.max_channels,
        mbstd=config.mbstd,
        mbstd_group_size=config.mbstd_group_size,
        blur=config.blur,
    )


def register_components(register) -> None:
    """Register the built-in discriminators."""
    register(
        "discriminator",
        "patchgan",
        config=PatchGANConfig,
        build=build_patchgan,
        doc="PatchGAN (pix2pix / taming NLayerDiscriminator): one logit per image patch",
    )
    register(
        "discriminator",
        "stylegan",
        config=StyleGANConfig,
        build=build_stylegan,
        doc="StyleGAN2-style residual critic: one logit per image of a fixed resolution",
    )
