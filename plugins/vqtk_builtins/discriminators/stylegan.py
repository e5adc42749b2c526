"""A small StyleGAN2-style residual discriminator (global critic, one logit per image)."""

from __future__ import annotations

import itertools
import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import constraint, positive
from vqtk.errors import VqtkError
from vqtk.interfaces import Discriminator


@constraint("a power of two >= 8")
def power_of_two_at_least_8(_inst, _attr, value: int) -> None:
    """An image side the residual blocks can halve down to 4x4."""
    if value < 8 or value & (value - 1):
        raise ValueError(f"must be a power of two >= 8, got {value!r}")


def check_stylegan(config) -> None:
    """Cross-field check of a ``stylegan`` recipe table."""
    if config.max_channels < config.channels:
        raise ValueError(f"max_channels ({config.max_channels}) must be >= channels ({config.channels})")


class Blur(nn.Module):
    """Depthwise low-pass filter with the separable kernel ``[1, 3, 3, 1]`` and explicit padding.

    Applied before every stride-2 convolution (StyleGAN2's anti-aliased
    downsampling); ``pad = (before, after)`` on both spatial axes.
    """

    def __init__(self, *, pad: tuple[int, int]):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = torch.outer(k, k)
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=False)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``(B, C, H, W)`` to ``(B, C, H + sum(pad) - 3, W + sum(pad) - 3)``."""
        before, after = self.pad
        x = F.pad(x, (before, after, before, after))
        kernel = self.kernel.to(x.dtype).expand(x.shape[1], 1, 4, 4)
        return F.conv2d(x, kernel, groups=x.shape[1])


def down_conv(in_channels: int, out_channels: int, kernel_size: int, *, blur: bool, bias: bool) -> nn.Module:
    """A stride-2 convolution halving even sizes, optionally preceded by :class:`Blur`."""
    if not blur:
        return nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=2, padding=kernel_size // 2, bias=bias
        )
    p = 4 - 2 + (kernel_size - 1)  # taps of blur kernel minus stride, plus the conv's own reach
    return nn.Sequential(
        Blur(pad=((p + 1) // 2, p // 2)),
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=2, padding=0, bias=bias),
    )


class ResidualDownBlock(nn.Module):
    """Two 3x3 convolutions (the second one stride 2) plus a 1x1 stride-2 skip, summed / sqrt(2)."""

    def __init__(self, *, in_channels: int, out_channels: int, blur: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = down_conv(in_channels, out_channels, 3, blur=blur, bias=True)
        self.skip = down_conv(in_channels, out_channels, 1, blur=blur, bias=False)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W) -> (B, out, H/2, W/2)``."""
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h))
        return (h + self.skip(x)) * (1.0 / math.sqrt(2.0))


class MinibatchStd(nn.Module):
    """Appends one channel: the feature standard deviation across groups of samples.

    Lets the critic see batch-level variety (a collapsed generator produces
    look-alike samples). Groups have ``gcd(batch, group_size)`` members, so any
    batch size works; a batch of one gets a constant channel.
    """

    def __init__(self, *, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C + 1, H, W)``."""
        b, _, h, w = x.shape
        g = math.gcd(b, self.group_size)
        y = x.float().reshape(g, b // g, *x.shape[1:])  # sample i sits in group i % (b // g)
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (b // g, C, H, W)
        std = std.mean(dim=(1, 2, 3)).to(x.dtype)  # (b // g,)
        std = std.view(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(b, 1, h, w)
        return torch.cat([x, std], dim=1)


def _he_init(module: nn.Module) -> None:
    """He-normal weights for LeakyReLU(0.2), zero biases.

    Keeps activations at unit scale through every block, as StyleGAN's
    equalised learning rate does at initialisation; PyTorch's default init
    shrinks them layer by layer and the critic starts out nearly blind.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, a=0.2, nonlinearity="leaky_relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class StyleGANDiscriminator(Discriminator):
    """Residual critic in the style of StyleGAN2: ``(B, C, R, R) -> (B, 1)``.

    A 1x1 ``from_rgb`` convolution, ``log2(R) - 2`` residual blocks halving the
    size down to 4x4 (channels ``channels * 2**i`` capped at ``max_channels``),
    optional minibatch standard deviation, a 3x3 convolution and two linear
    layers. Unlike a PatchGAN it returns one logit per image, so it only takes
    images of the ``resolution`` it was built for. Plain PyTorch layers with
    He initialisation (no equalised learning rate or fused ops), to stay small
    and portable.

    Args:
        resolution: side of the (square) images it scores; must equal the data resolution
        in_channels: channels of the images it scores
        channels: channels at full resolution, doubled at each downsampling
        max_channels: cap on the channels of any layer
        mbstd: append the minibatch standard deviation channel before the head
        mbstd_group_size: samples per minibatch standard deviation group (gcd with the batch size)
        blur: low-pass filter before each stride-2 convolution
    """

    def __init__(
        self,
        *,
        resolution: Annotated[int, power_of_two_at_least_8] = 256,
        in_channels: Annotated[int, positive] = 3,
        channels: Annotated[int, positive] = 64,
        max_channels: Annotated[int, positive] = 512,
        mbstd: bool = True,
        mbstd_group_size: Annotated[int, positive] = 4,
        blur: bool = True,
    ):
        super().__init__()
        try:
            power_of_two_at_least_8(None, None, resolution)
        except ValueError as exc:
            raise ValueError(f"resolution {exc}") from None
        self.in_channels = in_channels
        self.resolution = resolution
        num_blocks = int(math.log2(resolution)) - 2
        widths = [min(channels * 2**i, max_channels) for i in range(num_blocks + 1)]
        self.from_rgb = nn.Sequential(nn.Conv2d(in_channels, widths[0], 1), nn.LeakyReLU(0.2))
        self.blocks = nn.Sequential(
            *(
                ResidualDownBlock(in_channels=a, out_channels=b, blur=blur)
                for a, b in itertools.pairwise(widths)
            )
        )
        last = widths[-1]
        self.mbstd = MinibatchStd(group_size=mbstd_group_size) if mbstd else nn.Identity()
        self.conv = nn.Conv2d(last + (1 if mbstd else 0), last, 3, padding=1)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(last * 16, last), nn.LeakyReLU(0.2), nn.Linear(last, 1)
        )
        self.act = nn.LeakyReLU(0.2)
        self.apply(_he_init)
        nn.init.kaiming_normal_(self.head[-1].weight, nonlinearity="linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One logit per image: ``(B, in_channels, R, R) -> (B, 1)``."""
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            raise VqtkError(
                f"stylegan discriminator: built for {self.resolution}x{self.resolution} images "
                f"(resolution = {self.resolution}), got {x.shape[-2]}x{x.shape[-1]}"
            )
        h = self.blocks(self.from_rgb(x))
        h = self.act(self.conv(self.mbstd(h)))
        return self.head(h)
