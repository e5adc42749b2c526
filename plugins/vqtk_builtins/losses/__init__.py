"""Built-in losses: pixel (l1, l2), perceptual (lpips), quantizer auxiliary loss, adversarial (gan), LeCam (lecam)."""

from vqtk_builtins.losses.adversarial import (
    GANLoss,
    adaptive_weight,
    combine_scales,
    discriminator_objective,
    generator_objective,
    r1_penalty,
)
from vqtk_builtins.losses.lecam import LeCamLoss, lecam_penalty
from vqtk_builtins.losses.pixel import L1Loss, L2Loss
from vqtk_builtins.losses.quantizer import QuantizerLoss

__all__ = [
    "GANLoss",
    "L1Loss",
    "L2Loss",
    "LeCamLoss",
    "QuantizerLoss",
    "adaptive_weight",
    "combine_scales",
    "discriminator_objective",
    "generator_objective",
    "lecam_penalty",
    "r1_penalty",
]
# LPIPSLoss lives in vqtk_builtins.losses.perceptual (its module imports lpips only when a loss is built).


def register_components(register) -> None:
    """Register the built-in losses (each class's keyword-only signature is its recipe table)."""
    from vqtk_builtins.losses.perceptual import LPIPSLoss, check_lpips

    register("loss", "l1", L1Loss, doc="Mean absolute pixel error")
    register("loss", "l2", L2Loss, doc="Mean squared pixel error")
    register(
        "loss",
        "lpips",
        LPIPSLoss,
        doc="LPIPS perceptual distance (vgg/alex/squeeze); loads backbone weights from disk, never downloads",
        check=check_lpips,
    )
    register(
        "loss",
        "quantizer",
        QuantizerLoss,
        doc="The quantizer's auxiliary loss (codebook, commitment, entropy terms)",
    )
    register(
        "loss",
        "gan",
        GANLoss,
        doc="Adversarial loss (hinge / vanilla / non-saturating), taming's adaptive weight, optional R1",
    )
    register(
        "loss",
        "lecam",
        LeCamLoss,
        doc="LeCam regulariser of the discriminator (EMA-anchored logits; Tseng et al. 2021)",
    )
