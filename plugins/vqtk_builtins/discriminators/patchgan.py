"""PatchGAN discriminator (pix2pix), laid out like taming-transformers' ``NLayerDiscriminator``."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import nn

from vqtk.config import positive
from vqtk.errors import VqtkError
from vqtk.interfaces import Discriminator

from vqtk_builtins.discriminators.actnorm import ActNorm

Norm = Literal["batch", "actnorm", "group", "none"]


def make_norm(norm: Norm, channels: int) -> nn.Module:
    """The normalisation layer after each inner convolution."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "actnorm":
        return ActNorm(num_features=channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}")


def init_weights(module: nn.Module) -> None:
    """taming's ``weights_init``: convs ~ N(0, 0.02); norm scales ~ N(1, 0.02), shifts 0.

    ActNorm is left alone: it initialises itself from the first batch.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class PatchGANDiscriminator(Discriminator):
    """Fully convolutional critic scoring overlapping patches: ``(B, C, H, W) -> (B, 1, h, w)``.

    ``n_layers`` stride-2 4x4 convolutions (channels ``ndf * min(2**i, 8)``),
    then a stride-1 4x4 convolution and a 4x4 convolution to one channel, with
    LeakyReLU(0.2) and a normalisation layer between them. For ``n_layers = 3``
    a 256x256 image gives 30x30 patch logits, each seeing a 70x70 receptive field.

    Module indices inside ``main`` match taming-transformers, so its
    ``loss.discriminator.*`` weights load after stripping that prefix (with
    ``norm = "batch"``, or ``"actnorm"`` for taming's ``use_actnorm``).

    Args:
        in_channels: channels of the images it scores
        ndf: channels of the first convolution (doubled per layer, at most 8x)
        n_layers: stride-2 convolutions; 3 gives 70x70 receptive fields (images need >= 3 * 2**n_layers pixels)
        norm: normalisation after inner convolutions; "actnorm" initialises from the first batch
    """

    def __init__(
        self,
        *,
        in_channels: Annotated[int, positive] = 3,
        ndf: Annotated[int, positive] = 64,
        n_layers: Annotated[int, positive] = 3,
        norm: Norm = "batch",
    ):
        super().__init__()
        self.in_channels = in_channels
        self.n_layers = n_layers
        self.norm = norm
        bias = norm != "batch"  # batch norm's shift makes a conv bias redundant
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=bias),
                make_norm(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    @property
    def min_input_size(self) -> int:
        """Smallest image side that still yields a 1x1 logit map."""
        return 3 * 2**self.n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits ``(B, 1, h, w)`` for images ``(B, in_channels, H, W)``."""
        if min(x.shape[-2:]) < self.min_input_size:
            raise VqtkError(
                f"patchgan discriminator: {x.shape[-2]}x{x.shape[-1]} images are too small for "
                f"n_layers = {self.n_layers} (needs at least {self.min_input_size} pixels a side)"
            )
        return self.main(x)
