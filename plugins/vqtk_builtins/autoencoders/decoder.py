"""taming-transformers' VQGAN decoder (``taming.modules.diffusionmodules.model.Decoder``)."""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import positive
from vqtk.interfaces import Decoder

from vqtk_builtins.autoencoders.architecture import TamingLayout, check_architecture
from vqtk.registry.forwarding import forwards_arguments
from vqtk_builtins.autoencoders.blocks import Normalize, conv3x3
from vqtk_builtins.autoencoders.stages import Level, Middle


class TamingDecoder(Decoder):
    """Convolutional decoder: ``(B, z_channels, h, w) -> (B, out_channels, h*f, w*f)``, ``f = 2**(len(ch_mult)-1)``.

    ``conv_in`` to ``ch * ch_mult[-1]`` channels; the middle stage; levels
    from the deepest to the first, each with ``num_res_blocks + 1`` residual
    blocks to ``ch * ch_mult[i]`` channels (attention after each where the side
    length is in ``attn_resolutions``) and a nearest x2 upsampling on every
    level but level 0; then GroupNorm, swish and ``conv_out``. ``up[i]`` is
    level ``i`` (taming builds them deepest-first and prepends), so parameter
    names equal taming's and its ``decoder.*`` weights load directly. The
    layout arguments (``ch``, ``ch_mult``, ...) are :class:`TamingLayout`'s.

    Args:
        out_channels: image channels.
    """

    @forwards_arguments(TamingLayout)
    def __init__(self, *, out_channels: Annotated[int, positive] = 3, **layout: Any):
        super().__init__()
        arch = TamingLayout(**layout)
        check_architecture(arch, include_base=False)
        ch, ch_mult, dropout = arch.ch, arch.ch_mult, arch.dropout
        self.in_channels = arch.z_channels
        self.z_channels = arch.z_channels
        self.out_channels = out_channels
        self.upsample_factor = arch.factor
        self.resolution = arch.resolution

        block_in = ch * ch_mult[-1]
        self.conv_in = conv3x3(arch.z_channels, block_in)
        self.mid = Middle(channels=block_in, dropout=dropout)
        sides = arch.sides
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch_mult))):  # deepest first, as taming creates them
            level = Level(
                in_channels=block_in,
                out_channels=ch * ch_mult[i],
                num_blocks=arch.num_res_blocks + 1,
                attention=sides[i] in arch.attn_resolutions,
                dropout=dropout,
                resample="up" if i != 0 else None,
            )
            self.up.insert(0, level)
            block_in = ch * ch_mult[i]
        self.norm_out = Normalize(block_in)
        self.conv_out = conv3x3(block_in, out_channels)

    @property
    def last_layer(self) -> torch.Tensor:
        """``conv_out.weight``: the layer producing the image (for adaptive GAN weights)."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, z_channels, h, w)`` to images ``(B, out_channels, h*f, w*f)``."""
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))
