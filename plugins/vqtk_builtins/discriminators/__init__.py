"""Built-in discriminators: taming's PatchGAN, its multi-scale version and a small StyleGAN2-style critic."""

from vqtk_builtins.discriminators.actnorm import ActNorm
from vqtk_builtins.discriminators.multiscale import MultiScalePatchGANDiscriminator
from vqtk_builtins.discriminators.patchgan import PatchGANDiscriminator, init_weights
from vqtk_builtins.discriminators.stylegan import StyleGANDiscriminator, check_stylegan

__all__ = [
    "ActNorm",
    "MultiScalePatchGANDiscriminator",
    "PatchGANDiscriminator",
    "StyleGANDiscriminator",
    "init_weights",
]


def register_components(register) -> None:
    """Register the built-in discriminators (each class's keyword-only signature is its recipe table)."""
    register(
        "discriminator",
        "patchgan",
        PatchGANDiscriminator,
        doc="PatchGAN (pix2pix / taming NLayerDiscriminator): one logit per image patch",
    )
    register(
        "discriminator",
        "multiscale_patchgan",
        MultiScalePatchGANDiscriminator,
        doc="Multi-scale PatchGAN (pix2pixHD): one PatchGAN per 2x-downsampled scale, one logit map each",
    )
    register(
        "discriminator",
        "stylegan",
        StyleGANDiscriminator,
        doc="StyleGAN2-style residual critic: one logit per image of a fixed resolution",
        check=check_stylegan,
    )
