"""Built-in encoders and decoders: taming-transformers' VQGAN architecture.

Parameter names equal taming's state-dict keys, so ``encoder.*`` / ``decoder.*``
weights of a taming checkpoint load with a plain ``load_state_dict``. Both
components' signatures are their recipe schemas; the layout arguments they share
are declared once, by :class:`~vqtk_builtins.autoencoders.architecture.TamingLayout`.
"""

import functools

from vqtk_builtins.autoencoders.architecture import TamingLayout, check_architecture
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
    "TamingLayout",
    "Upsample",
]


def register_components(register) -> None:
    """Register the taming encoder and decoder, each with its layout check.

    Only the encoder normalises ``ch`` itself (its first level); the decoder
    only ``ch * ch_mult[i]``, hence ``include_base``.
    """
    for kind, component, include_base in (("encoder", TamingEncoder, True), ("decoder", TamingDecoder, False)):
        register(
            kind,
            "taming",
            component,
            doc=f"taming-transformers VQGAN {kind} (GroupNorm ResNet + attention); loads taming weights",
            check=functools.partial(check_architecture, include_base=include_base),
        )
