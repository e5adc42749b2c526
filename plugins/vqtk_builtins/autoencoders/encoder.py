"""taming-transformers' VQGAN encoder (``taming.modules.diffusionmodules.model.Encoder``)."""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import positive
from vqtk.interfaces import Encoder

from vqtk_builtins.autoencoders.architecture import TamingLayout, check_architecture
from vqtk.registry.forwarding import forwards_arguments
from vqtk_builtins.autoencoders.blocks import Normalize, conv3x3
from vqtk_builtins.autoencoders.stages import Level, Middle


class TamingEncoder(Encoder):
    """Convolutional encoder: ``(B, in_channels, H, W) -> (B, z_channels, H/f, W/f)``, ``f = 2**(len(ch_mult)-1)``.

    ``conv_in`` to ``ch`` channels; one :class:`Level` per entry of ``ch_mult``
    (``num_res_blocks`` residual blocks to ``ch * mult`` channels, attention
    after each block where the side length is in ``attn_resolutions``, and a
    stride-2 downsampling on every level but the last); the middle stage; then
    GroupNorm, swish and ``conv_out`` to ``z_channels``. Parameter names equal
    taming's, so its ``encoder.*`` weights load directly (taming's
    ``double_z = False``, the VQGAN setting).

    ``resolution`` is the image side the attention placement refers to; other
    image sizes divisible by ``f`` work too, with attention at the same levels.
    The layout arguments (``ch``, ``ch_mult``, ...) are :class:`TamingLayout`'s.

    Args:
        in_channels: image channels.
    """

    @forwards_arguments(TamingLayout)
    def __init__(self, *, in_channels: Annotated[int, positive] = 3, **layout: Any):
        super().__init__()
        arch = TamingLayout(**layout)
        check_architecture(arch)
        ch, ch_mult = arch.ch, arch.ch_mult
        self.in_channels = in_channels
        self.out_channels = arch.z_channels
        self.z_channels = arch.z_channels
        self.downsample_factor = arch.factor
        self.resolution = arch.resolution

        self.conv_in = conv3x3(in_channels, ch)
        widths = [ch] + [ch * m for m in ch_mult]  # input width of each level, then its output
        last = len(ch_mult) - 1
        self.down = nn.ModuleList(
            Level(
                in_channels=widths[i],
                out_channels=widths[i + 1],
                num_blocks=arch.num_res_blocks,
                attention=side in arch.attn_resolutions,
                dropout=arch.dropout,
                resample="down" if i != last else None,
            )
            for i, side in enumerate(arch.sides)
        )
        self.mid = Middle(channels=widths[-1], dropout=arch.dropout)
        self.norm_out = Normalize(widths[-1])
        self.conv_out = conv3x3(widths[-1], arch.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, in_channels, H, W)`` to latents ``(B, z_channels, H/f, W/f)``."""
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))
