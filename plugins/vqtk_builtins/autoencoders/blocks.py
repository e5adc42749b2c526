"""Building blocks of taming-transformers' VQGAN encoder and decoder.

Layouts and parameter names follow ``taming/modules/diffusionmodules/model.py``
so that taming checkpoints load with a plain ``load_state_dict``. Every block
works on ``channels_last`` tensors as well as contiguous ones and keeps the
layout it is given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqtk_builtins.autoencoders.architecture import NUM_GROUPS


def Normalize(channels: int) -> nn.GroupNorm:  # noqa: N802 - taming's name
    """GroupNorm with 32 groups, eps 1e-6 and a learned affine transform."""
    if channels % NUM_GROUPS:
        raise ValueError(
            f"GroupNorm needs channels divisible by {NUM_GROUPS} groups, got {channels} channels"
        )
    return nn.GroupNorm(num_groups=NUM_GROUPS, num_channels=channels, eps=1e-6, affine=True)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 stride-1 convolution keeping the spatial size."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 convolution (per-position linear map)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


def same_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` in the memory layout of ``like`` (channels_last or contiguous)."""
    if like.is_contiguous():
        return t.contiguous()
    if like.is_contiguous(memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t


class ResnetBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, swish, 3x3 conv) twice, dropout before the second conv.

    When the channel count changes, the skip path goes through a 1x1
    convolution named ``nin_shortcut`` (taming's default ``conv_shortcut=False``).
    """

    def __init__(self, *, in_channels: int, out_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_channels, out_channels)
        if in_channels != out_channels:
            self.nin_shortcut = conv1x1(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, out_channels, H, W)``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.nin_shortcut(x) if self.in_channels != self.out_channels else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, with a residual connection.

    GroupNorm, then 1x1 convolutions ``q``, ``k``, ``v``; softmax(q k^T / sqrt(C)) v
    computed by :func:`torch.nn.functional.scaled_dot_product_attention`; a 1x1
    ``proj_out``.
    """

    def __init__(self, *, channels: int):
        super().__init__()
        self.channels = channels
        self.norm = Normalize(channels)
        self.q = conv1x1(channels, channels)
        self.k = conv1x1(channels, channels)
        self.v = conv1x1(channels, channels)
        self.proj_out = conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        b, c, height, width = x.shape
        h = self.norm(x)
        # one 1x1 convolution for q, k and v: a single pass over the activations
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        qkv = F.conv2d(h, weight, bias)
        # (B, 3C, H, W) -> three (B, HW, C): a view for channels_last, one copy otherwise
        qkv = qkv.permute(0, 2, 3, 1).reshape(b, height * width, 3 * c)
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C), scale 1/sqrt(C)
        # (B, HW, C) -> (B, C, H, W) with channels_last strides (a view), then x's layout
        out = out.transpose(1, 2).reshape(b, c, height, width)
        return x + self.proj_out(same_layout(out, x))


class Downsample(nn.Module):
    """Halve the resolution: pad right and bottom by one, then a 3x3 stride-2 conv without padding."""

    def __init__(self, *, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H/2, W/2)``."""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, *, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, 2H, 2W)``."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
