"""taming-transformers' VQGAN encoder (``taming.modules.diffusionmodules.model.Encoder``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.interfaces import Encoder

from vqtk_builtins.autoencoders.architecture import check_architecture, level_resolutions
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
    """

    def __init__(
        self,
        *,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        z_channels: int = 256,
        resolution: int = 256,
        in_channels: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        check_architecture(ch=ch, ch_mult=ch_mult, attn_resolutions=attn_resolutions, resolution=resolution)
        self.in_channels = in_channels
        self.out_channels = z_channels
        self.z_channels = z_channels
        self.downsample_factor = 2 ** (len(ch_mult) - 1)
        self.resolution = resolution

        self.conv_in = conv3x3(in_channels, ch)
        widths = [ch] + [ch * m for m in ch_mult]  # input width of each level, then its output
        last = len(ch_mult) - 1
        self.down = nn.ModuleList(
            Level(
                in_channels=widths[i],
                out_channels=widths[i + 1],
                num_blocks=num_res_blocks,
                attention=side in attn_resolutions,
                dropout=dropout,
                resample="down" if i != last else None,
            )
            for i, side in enumerate(level_resolutions(resolution, len(ch_mult)))
        )
        self.mid = Middle(channels=widths[-1], dropout=dropout)
        self.norm_out = Normalize(widths[-1])
        self.conv_out = conv3x3(widths[-1], z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, in_channels, H, W)`` to latents ``(B, z_channels, H/f, W/f)``."""
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))
