"""A tiny plugin for core tests: one component of each kind, with no library behind it."""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import nn
from torch.utils.data import Dataset

from vqtk import hookimpl
from vqtk.config import positive
from vqtk.interfaces import (
    DataSource,
    Decoder,
    Discriminator,
    Encoder,
    Loss,
    LossTerm,
    Quantizer,
    QuantizerOutput,
)


class ToyEncoder(Encoder):
    def __init__(self, *, channels: int = 3, z_channels: int = 4, factor: int = 4):
        super().__init__()
        self.in_channels, self.out_channels, self.downsample_factor = channels, z_channels, factor
        self.conv = nn.Conv2d(channels, z_channels, factor, stride=factor)

    def forward(self, x):
        return self.conv(x)


class ToyDecoder(Decoder):
    def __init__(self, *, channels: int = 3, z_channels: int = 4, factor: int = 4):
        super().__init__()
        self.in_channels, self.out_channels, self.upsample_factor = z_channels, channels, factor
        self.conv_out = nn.ConvTranspose2d(z_channels, channels, factor, stride=factor)

    @property
    def last_layer(self):
        return self.conv_out.weight

    def forward(self, z):
        return self.conv_out(z)


class ToyQuantizer(Quantizer):
    """Rounds to the nearest of ``codebook_size`` learned codes (test-only)."""

    def __init__(self, *, dim: int = 4, codebook_size: int = 8):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.codes = nn.Parameter(torch.randn(codebook_size, dim))

    def quantize(self, z):
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = torch.cdist(flat, self.codes).argmin(1)
        q = self.codes[idx].reshape(b, h, w, d).permute(0, 3, 1, 2)
        loss = (q - z.detach()).pow(2).mean() + 0.25 * (q.detach() - z).pow(2).mean()
        return QuantizerOutput(quantized=z + (q - z).detach(), indices=idx.reshape(b, h, w), loss=loss)

    def lookup(self, indices):
        return self.codes[indices].permute(0, 3, 1, 2)


class ToyDiscriminator(Discriminator):
    def __init__(self, *, channels: int = 3):
        super().__init__()
        self.in_channels = channels
        self.conv = nn.Conv2d(channels, 1, 4, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class ToyL1(Loss):
    def generator_loss(self, inputs):
        return LossTerm((inputs.real - inputs.reconstruction).abs().mean())


class _Noise(Dataset):
    def __init__(self, n, resolution):
        self.n, self.resolution = n, resolution

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        base = torch.rand(3, self.resolution, self.resolution, generator=g) * 2 - 1
        return (base + 0.1 * torch.randn(3, self.resolution, self.resolution)).clamp(-1, 1)


class ToyData(DataSource):
    def __init__(self, *, resolution: int = 16, size: int = 16):
        self.resolution, self.size = resolution, size

    def train_set(self):
        return _Noise(self.size, self.resolution)

    def eval_set(self):
        return _Noise(4, self.resolution)


@attrs.define(kw_only=True)
class EncoderConfig:
    """A strided conv encoder (test toy)."""

    channels: int = attrs.field(default=3, validator=positive)
    z_channels: int = attrs.field(default=4, validator=positive)
    factor: int = attrs.field(default=4, validator=positive)


@attrs.define(kw_only=True)
class QuantizerConfig:
    """Nearest-code quantizer (test toy)."""

    dim: int = attrs.field(default=4, validator=positive)
    codebook_size: int = attrs.field(default=8, validator=positive)
    mode: Literal["nearest", "other"] = "nearest"


@attrs.define(kw_only=True)
class DiscConfig:
    """One conv layer (test toy)."""

    channels: int = 3


@attrs.define(kw_only=True)
class LossConfig:
    """Mean absolute error (test toy)."""


@attrs.define(kw_only=True)
class DataConfig:
    """Seeded noise images (test toy)."""

    resolution: int = attrs.field(default=16, validator=positive)
    size: int = attrs.field(default=16, validator=positive)


def _build_quantizer(cfg):
    return ToyQuantizer(dim=cfg.dim, codebook_size=cfg.codebook_size)


@hookimpl
def vqtk_register_components(register):
    register("encoder", "toy", config=EncoderConfig, build=lambda c: ToyEncoder(**attrs.asdict(c)))
    register("decoder", "toy", config=EncoderConfig, build=lambda c: ToyDecoder(**attrs.asdict(c)))
    register("quantizer", "toy", config=QuantizerConfig, build=_build_quantizer)
    register("quantizer", "toy_fancy", config=QuantizerConfig, build=_build_quantizer)
    register("discriminator", "toy", config=DiscConfig, build=lambda c: ToyDiscriminator(**attrs.asdict(c)))
    register("loss", "toy_l1", config=LossConfig, build=lambda c: ToyL1())
    register("data", "toy", config=DataConfig, build=lambda c: ToyData(**attrs.asdict(c)))


TOY_RECIPE = """
name = "toy"
[model.encoder]
type = "toy"
[model.quantizer]
type = "toy"
codebook_size = 8
[model.decoder]
type = "toy"
[data]
type = "toy"
resolution = 16
[loss.pixel]
type = "toy_l1"
[train]
steps = 4
batch_size = 2
"""
