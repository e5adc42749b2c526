"""Configs and build functions for the built-in losses."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from vqtk.config import non_negative, positive


@attrs.define(kw_only=True)
class L1Config:
    """Mean absolute pixel error between images and reconstructions."""


def build_l1(config: L1Config):
    """Mean absolute pixel error between images and reconstructions."""
    from vqtk_builtins.losses.pixel import L1Loss

    return L1Loss()


@attrs.define(kw_only=True)
class L2Config:
    """Mean squared pixel error between images and reconstructions."""


def build_l2(config: L2Config):
    """Mean squared pixel error between images and reconstructions."""
    from vqtk_builtins.losses.pixel import L2Loss

    return L2Loss()


@attrs.define(kw_only=True)
class LPIPSConfig:
    """LPIPS perceptual distance (lpips package), frozen; never downloads backbone weights."""

    #: backbone; taming uses "vgg"
    net: Literal["vgg", "alex", "squeeze"] = "vgg"
    #: torchvision's ImageNet weight file for the backbone (vgg16-397923af.pth,
    #: alexnet-owt-7be5be79.pth or squeezenet1_1-b8a52dc0.pth); default: the torch
    #: hub cache, $TORCH_HOME/hub/checkpoints/
    backbone_weights: Optional[str] = None
    #: false runs with a random backbone (plumbing only: not a meaningful metric)
    pretrained_backbone: bool = True

    def __attrs_post_init__(self) -> None:
        if self.backbone_weights is not None and not self.pretrained_backbone:
            raise ValueError("backbone_weights is set but pretrained_backbone = false; drop one of them")
        if self.backbone_weights is not None and not self.backbone_weights.strip():
            raise ValueError("backbone_weights must be a file path, got an empty string")


def build_lpips(config: LPIPSConfig):
    """LPIPS perceptual distance (lpips package), frozen; never downloads backbone weights."""
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    return LPIPSLoss(
        net=config.net,
        backbone_weights=config.backbone_weights,
        pretrained_backbone=config.pretrained_backbone,
    )


@attrs.define(kw_only=True)
class QuantizerLossConfig:
    """The quantizer's auxiliary loss (codebook / commitment / entropy terms)."""


def build_quantizer_loss(config: QuantizerLossConfig):
    """The quantizer's auxiliary loss (codebook / commitment / entropy terms)."""
    from vqtk_builtins.losses.quantizer import QuantizerLoss

    return QuantizerLoss()


@attrs.define(kw_only=True)
class GANConfig:
    """Adversarial loss against the recipe's discriminator, with taming's adaptive weight."""

    #: hinge and vanilla train the generator on -mean(D(fake)) (taming); non_saturating on softplus(-D(fake))
    objective: Literal["hinge", "vanilla", "non_saturating"] = "hinge"
    #: both terms are zero before this step (taming's disc_start)
    start_step: int = attrs.field(default=0, validator=non_negative)
    #: scale the generator term by ||grad nll|| / ||grad g_loss|| at the decoder's last layer
    adaptive: bool = True
    #: upper clamp of the adaptive weight
    max_adaptive_weight: float = attrs.field(default=1e4, validator=positive)
    #: R1 gradient penalty weight on real images (0 disables); the term is r1_gamma / 2 * E||dD/dx||^2
    r1_gamma: float = attrs.field(default=0.0, validator=non_negative)


def build_gan(config: GANConfig):
    """Adversarial loss against the recipe's discriminator, with taming's adaptive weight."""
    from vqtk_builtins.losses.adversarial import GANLoss

    return GANLoss(
        objective=config.objective,
        start_step=config.start_step,
        adaptive=config.adaptive,
        max_adaptive_weight=config.max_adaptive_weight,
        r1_gamma=config.r1_gamma,
    )


def register_components(register) -> None:
    """Register the built-in losses."""
    register("loss", "l1", config=L1Config, build=build_l1, doc="Mean absolute pixel error")
    register("loss", "l2", config=L2Config, build=build_l2, doc="Mean squared pixel error")
    register(
        "loss",
        "lpips",
        config=LPIPSConfig,
        build=build_lpips,
        doc="LPIPS perceptual distance (vgg/alex/squeeze); loads backbone weights from disk, never downloads",
    )
    register(
        "loss",
        "quantizer",
        config=QuantizerLossConfig,
        build=build_quantizer_loss,
        doc="The quantizer's auxiliary loss (codebook, commitment, entropy terms)",
    )
    register(
        "loss",
        "gan",
        config=GANConfig,
        build=build_gan,
        doc="Adversarial loss (hinge / vanilla / non-saturating), taming's adaptive weight, optional R1",
    )
