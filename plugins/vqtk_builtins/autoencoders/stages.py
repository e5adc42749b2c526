"""The stages the encoder and decoder are made of: one resolution level, and the middle.

Attribute names (``block``, ``attn``, ``downsample``, ``upsample``, ``block_1``,
``attn_1``, ``block_2``) are taming-transformers' state-dict names.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from vqtk_builtins.autoencoders.blocks import AttnBlock, Downsample, ResnetBlock, Upsample


class Level(nn.Module):
    """Residual blocks at one resolution, each optionally followed by attention, then a resampling.

    ``block[j]`` maps ``in_channels`` (first block) or ``out_channels`` (the
    others) to ``out_channels``; with ``attention``, ``attn[j]`` follows
    ``block[j]``. ``resample`` adds a ``downsample`` or ``upsample`` submodule
    applied last. Modules are created in taming's order (block, attention,
    block, ...), so the same seed gives the same initial weights.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        attention: bool,
        dropout: float = 0.0,
        resample: Optional[Literal["down", "up"]] = None,
    ):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        channels = in_channels
        for _ in range(num_blocks):
            self.block.append(ResnetBlock(in_channels=channels, out_channels=out_channels, dropout=dropout))
            channels = out_channels
            if attention:
                self.attn.append(AttnBlock(channels=channels))
        self.resample = resample
        if resample == "down":
            self.downsample = Downsample(channels=out_channels)
        elif resample == "up":
            self.upsample = Upsample(channels=out_channels)
        elif resample is not None:
            raise ValueError(f"resample must be 'down', 'up' or None, got {resample!r}")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Blocks (and attention) at this resolution, then the resampling if any."""
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[j](h)
        if self.resample == "down":
            h = self.downsample(h)
        elif self.resample == "up":
            h = self.upsample(h)
        return h


class Middle(nn.Module):
    """The lowest-resolution stage: residual block, attention, residual block (``mid.*``)."""

    def __init__(self, *, channels: int, dropout: float = 0.0):
        super().__init__()
        self.block_1 = ResnetBlock(in_channels=channels, out_channels=channels, dropout=dropout)
        self.attn_1 = AttnBlock(channels=channels)
        self.block_2 = ResnetBlock(in_channels=channels, out_channels=channels, dropout=dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w) -> (B, C, h, w)``."""
        return self.block_2(self.attn_1(self.block_1(h)))
