"""Built-in encoders and decoders: taming-transformers' VQGAN architecture.

Parameter names equal taming's state-dict keys, so ``encoder.*`` / ``decoder.*``
weights of a taming checkpoint load with a plain ``load_state_dict``.
"""

from vqtk_builtins.autoencoders.blocks import AttnBlock, Downsample, Normalize, ResnetBlock, Upsample
from vqtk_builtins.autoencoders.decoder import TamingDecoder
from vqtk_builtins.autoencoders.encoder import TamingEncoder
from vqtk_builtins.autoencoders.stages import Level, Middle

__all__ = [
    "AttnBlock",
    "Downsample",
    "Level",
    "Middle",
    "Normalize",
    "ResnetBlock",
    "TamingDecoder",
    "TamingEncoder",
    "Upsample",
]


def register_components(register) -> None:
    """Register this family's components (transitional: still through builders.py)."""
    from . import builders

    builders.register_components(register)
