"""Decoder: latent grid to image."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn


class Decoder(nn.Module, abc.ABC):
    """Maps latents ``(B, in_channels, h, w)`` to images ``(B, out_channels, h*f, w*f)``.

    ``f`` is :attr:`upsample_factor`. :attr:`last_layer` is the weight of the
    layer that produces the image; adversarial losses use its gradients to
    balance themselves against the reconstruction loss (taming's adaptive weight).
    """

    #: arguments the assembler fills in from other parts of the recipe
    provided_arguments: ClassVar[tuple[str, ...]] = ()
    #: arguments every component of this kind takes (none)
    required_arguments: ClassVar[tuple[str, ...]] = ()

    in_channels: int
    out_channels: int
    upsample_factor: int

    @property
    @abc.abstractmethod
    def last_layer(self) -> torch.Tensor:
        """The weight tensor of the decoder's output layer."""

    @abc.abstractmethod
    def forward(self, z: torch.Tensor) -> torch.Tensor: ...
