"""Encoder: image to latent grid."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn


class Encoder(nn.Module, abc.ABC):
    """Maps images ``(B, in_channels, H, W)`` to latents ``(B, out_channels, H/f, W/f)``.

    ``f`` is :attr:`downsample_factor`. The assembly reads these attributes to
    check a recipe's shapes (channels between parts, resolution divisible by
    ``f``) before anything is trained.
    """

    #: arguments the assembler fills in from other parts of the recipe
    provided_arguments: ClassVar[tuple[str, ...]] = ()
    #: arguments every component of this kind takes (none)
    required_arguments: ClassVar[tuple[str, ...]] = ()

    in_channels: int
    out_channels: int
    downsample_factor: int

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...
