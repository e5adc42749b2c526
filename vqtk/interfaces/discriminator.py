"""Discriminator: real vs. reconstructed images."""

from __future__ import annotations

import abc

import torch
from torch import nn


class Discriminator(nn.Module, abc.ABC):
    """Scores images ``(B, in_channels, H, W)``; higher means "real".

    Returns logits of any shape with a leading batch dimension: a PatchGAN
    returns one logit per patch ``(B, 1, h, w)``, a global critic ``(B, 1)``.
    """

    in_channels: int

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...
