"""Built-in losses: pixel (l1, l2), perceptual (lpips), quantizer auxiliary loss, adversarial (gan)."""

from vqtk_builtins.losses.adversarial import (
    GANLoss,
    adaptive_weight,
    discriminator_objective,
    generator_objective,
    r1_penalty,
)
from vqtk_builtins.losses.pixel import L1Loss, L2Loss
from vqtk_builtins.losses.quantizer import QuantizerLoss

__all__ = [
    "GANLoss",
    "L1Loss",
    "L2Loss",
    "QuantizerLoss",
    "adaptive_weight",
    "discriminator_objective",
    "generator_objective",
    "r1_penalty",
]
# LPIPSLoss lives in vqtk_builtins.losses.perceptual (imports lpips / torchvision on use).


def register_components(register) -> None:
    """Register this family's components (transitional: still through builders.py)."""
    from . import builders

    builders.register_components(register)
