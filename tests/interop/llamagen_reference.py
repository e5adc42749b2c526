"""An independent re-implementation of LlamaGen's VQ tokenizer, for the interop tests.

Written for these tests from the published LlamaGen code
(FoundationVision/LlamaGen ``tokenizer/tokenizer_image/vq_model.py`` and
``discriminator_patchgan.py``), with its module tree so that its
``state_dict()`` has exactly the keys of a LlamaGen ``VQModel`` checkpoint
(``checkpoint["model"]``) and loads one strictly. It imports nothing from vqtk
and shares no code with it (vqtk rebuilds LlamaGen models from its ``taming``
components), so agreement between the two is evidence that vqtk computes what
LlamaGen computes:

- ResNet block: GroupNorm(32, eps 1e-6) -> x * sigmoid(x) -> 3x3 conv, twice (dropout
  before the second conv); a 1x1 ``nin_shortcut`` when the width changes;
- attention (``AttnBlock``): GroupNorm, 1x1 q/k/v, ``bmm`` softmax(q k^T * C^-0.5), 1x1 ``proj_out``;
- ``Downsample``: zero pad right/bottom by 1, 3x3 stride-2 conv; ``Upsample``: nearest x2, 3x3 conv;
- encoder ``conv_blocks[i]``: ``res[j]`` then ``attn[j]`` (deepest level only), then ``downsample``
  (all but the deepest); ``mid`` = [res, attn, res];
- decoder ``conv_blocks[k]``: level ``L - 1 - k`` (deepest first), ``num_res_blocks + 1`` blocks,
  attention in ``conv_blocks[0]`` only, ``upsample`` on all but the last;
- quantizer: latents and codes l2-normalised, ``d = |z|^2 + |e|^2 - 2 z.e``, ``argmin``; the
  quantized value is the normalised code; a ``codebook_used`` buffer of 65536 floats;
- PatchGAN (``NLayerDiscriminator``): 4x4 convs, LeakyReLU 0.2, BatchNorm2d without conv bias.

``cfg`` dicts hold ``ch``, ``ch_mult``, ``num_res_blocks``, ``z_channels``,
``codebook_size``, ``codebook_embed_dim`` (LlamaGen's ``ModelArgs`` names where it has them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: LlamaGen's VQ-16 (``VQ_16()`` with ``ModelArgs`` defaults and the Encoder/Decoder class defaults)
VQ16 = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256, codebook_size=16384,
            codebook_embed_dim=8)
#: LlamaGen's VQModel registers this many entries in ``quantize.codebook_used``
USAGE_SLOTS = 65536


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class Res(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.dropout = nn.Dropout(0.0)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class Attn(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)       # (b, n, c)
        k = self.k(h).reshape(b, c, hh * ww)                       # (b, c, n)
        v = self.v(h).reshape(b, c, hh * ww)                       # (b, c, n)
        attn = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)   # (b, query, key)
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Resample(nn.Module):
    def __init__(self, c: int, down: bool):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(c, c, 3, 2 if down else 1, 0 if down else 1)

    def forward(self, x):
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(cin: int, cout: int, blocks: int, attention: bool, resample: str | None) -> nn.Module:
    level = nn.Module()
    level.res = nn.ModuleList()
    level.attn = nn.ModuleList()
    for _ in range(blocks):
        level.res.append(Res(cin, cout))
        cin = cout
        if attention:
            level.attn.append(Attn(cout))
    if resample is not None:
        setattr(level, resample, Resample(cout, down=resample == "downsample"))
    return level


def _run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for j, res in enumerate(level.res):
        h = res(h)
        if len(level.attn):
            h = level.attn[j](h)
    for name in ("downsample", "upsample"):
        if hasattr(level, name):
            h = getattr(level, name)(h)
    return h


def _mid(c: int) -> nn.ModuleList:
    return nn.ModuleList([Res(c, c), Attn(c), Res(c, c)])


class Encoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        ch, mult, n = cfg["ch"], list(cfg["ch_mult"]), cfg["num_res_blocks"]
        last = len(mult) - 1
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        widths = [ch] + [ch * m for m in mult]
        self.conv_blocks = nn.ModuleList(
            _level(widths[i], widths[i + 1], n, i == last, "downsample" if i != last else None)
            for i in range(len(mult)))
        self.mid = _mid(widths[-1])
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], cfg["z_channels"], 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = _run_level(level, h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        ch, mult, n = cfg["ch"], list(cfg["ch_mult"]), cfg["num_res_blocks"]
        width = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg["z_channels"], width, 3, 1, 1)
        self.mid = _mid(width)
        self.conv_blocks = nn.ModuleList()
        for level in reversed(range(len(mult))):  # deepest first
            self.conv_blocks.append(_level(width, ch * mult[level], n + 1, level == len(mult) - 1,
                                           "upsample" if level != 0 else None))
            width = ch * mult[level]
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, 3, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = _run_level(level, h)
        return self.conv_out(swish(self.norm_out(h)))


class Quantize(nn.Module):
    def __init__(self, n: int, d: int):
        super().__init__()
        self.embedding = nn.Embedding(n, d)
        self.register_buffer("codebook_used", torch.zeros(USAGE_SLOTS))

    def codes(self) -> torch.Tensor:
        return F.normalize(self.embedding.weight, p=2, dim=-1)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, d, h, w)`` latents to ``(B, h, w)`` nearest-code indices."""
        b, d, hh, ww = z.shape
        flat = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, d), p=2, dim=-1)
        e = self.codes()
        dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()
        return dist.argmin(dim=1).reshape(b, hh, ww)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codes()[indices].permute(0, 3, 1, 2)


class VQModel(nn.Module):
    """LlamaGen's ``VQModel`` (l2-normalised codebook), evaluation only."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = Quantize(cfg["codebook_size"], cfg["codebook_embed_dim"])
        self.quant_conv = nn.Conv2d(cfg["z_channels"], cfg["codebook_embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(cfg["codebook_embed_dim"], cfg["z_channels"], 1)

    @torch.no_grad()
    def encode_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize.indices(self.quant_conv(self.encoder(x)))

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(self.quantize.lookup(indices)))


class PatchGAN(nn.Module):
    """LlamaGen's ``NLayerDiscriminator`` (batch norm): ``main`` = conv, LeakyReLU, then per layer
    conv (no bias), BatchNorm2d, LeakyReLU, then a 4x4 conv to one channel."""

    def __init__(self, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        prev = 1
        for n in range(1, n_layers + 1):
            cur = min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * cur, 4, 2 if n < n_layers else 1, 1, bias=False),
                       nn.BatchNorm2d(ndf * cur), nn.LeakyReLU(0.2, True)]
            prev = cur
        layers.append(nn.Conv2d(ndf * prev, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)


@torch.no_grad()
def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Random weights for every tensor, norms and batch-norm statistics included (not the usage log)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.dim() > 1:
            fan_in = math.prod(p.shape[1:])
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        elif name.endswith("weight"):  # norm scales
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    for name, b in module.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))
        elif name.endswith("running_var"):
            b.copy_(1.0 + 0.1 * torch.rand(b.shape, generator=g))
    return module.eval()


def vq_model(cfg: dict, seed: int = 0) -> VQModel:
    return randomize(VQModel(cfg), seed)


def discriminator(seed: int = 1, **kw) -> PatchGAN:
    return randomize(PatchGAN(**kw), seed)
