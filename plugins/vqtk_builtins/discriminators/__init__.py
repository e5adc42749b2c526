"""Built-in discriminators: taming's PatchGAN and a small StyleGAN2-style residual critic."""

from vqtk_builtins.discriminators.actnorm import ActNorm
from vqtk_builtins.discriminators.patchgan import PatchGANDiscriminator, init_weights
from vqtk_builtins.discriminators.stylegan import StyleGANDiscriminator

__all__ = ["ActNorm", "PatchGANDiscriminator", "StyleGANDiscriminator", "init_weights"]


def register_components(register) -> None:
    """Register this family's components (transitional: still through builders.py)."""
    from . import builders

    builders.register_components(register)
