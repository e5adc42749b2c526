"""An independent re-implementation of VAR's VQVAE (FoundationVision/VAR models/vqvae.py), for the converter tests.

Written for the tests from VAR's description and state-dict layout, sharing no
code with vqtk: plain PyTorch, attention through one fused ``qkv`` 1x1 conv and
``bmm``/``softmax``, the quantizer as VAR's ``VectorQuantizer2`` with its
``quant_resi`` modules under VAR's three names. Tensor names equal VAR's, so a
``state_dict()`` of :class:`VQVAE` is what ``vae_ch160v4096z32.pth`` holds.

    model = VQVAE(cfg)                       # cfg: see CFG in test_var_convert.py
    idx = model.img_to_idx(images)           # list of (B, s_k * s_k) per scale
    pixels = model.decode(model.idx_to_fhat(idx))   # not clamped
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class Res(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _gn(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv2(_swish(self.norm2(self.conv1(_swish(self.norm1(x))))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class Attn(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm, self.qkv, self.proj_out = _gn(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, hh * ww).unbind(1)
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) / c**0.5, dim=-1)  # (b, query, key)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Down(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _stage(blocks, attns):
    m = nn.Module()
    m.block, m.attn = nn.ModuleList(blocks), nn.ModuleList(attns)
    return m


def _run(stage, h):
    """A level: each block, followed by its attention where the level has some, then the resampling."""
    for j, block in enumerate(stage.block):
        h = block(h)
        if len(stage.attn):
            h = stage.attn[j](h)
    for resample in ("downsample", "upsample"):
        if hasattr(stage, resample):
            h = getattr(stage, resample)(h)
    return h


def _middle(c):
    m = nn.Module()
    m.block_1, m.attn_1, m.block_2 = Res(c, c), Attn(c), Res(c, c)
    return m


class Encoder(nn.Module):
    def __init__(self, ch, ch_mult, nres, z):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        widths = [ch] + [ch * m for m in ch_mult]
        self.down = nn.ModuleList()
        last = len(ch_mult) - 1
        for i in range(len(ch_mult)):
            blocks = [Res(widths[i] if j == 0 else widths[i + 1], widths[i + 1]) for j in range(nres)]
            attns = [Attn(widths[i + 1]) for _ in range(nres)] if i == last else []
            stage = _stage(blocks, attns)
            if i != last:
                stage.downsample = Down(widths[i + 1])
            self.down.append(stage)
        self.mid = _middle(widths[-1])
        self.norm_out, self.conv_out = _gn(widths[-1]), nn.Conv2d(widths[-1], z, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for stage in self.down:
            h = _run(stage, h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch, ch_mult, nres, z):
        super().__init__()
        n = len(ch_mult)
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z, c, 3, padding=1)
        self.mid = _middle(c)
        stages = {}
        for i in reversed(range(n)):
            out = ch * ch_mult[i]
            blocks = [Res(c if j == 0 else out, out) for j in range(nres + 1)]
            attns = [Attn(out) for _ in range(nres + 1)] if i == n - 1 else []
            stage = _stage(blocks, attns)
            if i != 0:
                stage.upsample = Up(out)
            stages[i] = stage
            c = out
        self.up = nn.ModuleList(stages[i] for i in range(n))
        self.norm_out, self.conv_out = _gn(c), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for stage in reversed(self.up):
            h = _run(stage, h)
        return self.conv_out(_swish(self.norm_out(h)))


class Blend(nn.Conv2d):
    """VAR's Phi: (1 - r) x + r conv3x3(x)."""

    def __init__(self, c, r):
        super().__init__(c, c, 3, padding=1)
        self.r = r

    def forward(self, x):
        return x * (1 - self.r) + F.conv2d(x, self.weight, self.bias, padding=1) * self.r


def _ticks(n: int) -> np.ndarray:
    edge = 1 / (3 * n) if n == 4 else 1 / (2 * n)
    return np.linspace(edge, 1 - edge, n)


class Quantize(nn.Module):
    """VectorQuantizer2 with share_quant_resi 0 (one Blend per scale), 1 (one for all) or n (n shared)."""

    def __init__(self, vocab, c, scales, quant_resi=0.5, share=4, znorm=False):
        super().__init__()
        self.scales, self.znorm = list(scales), znorm
        self.embedding = nn.Embedding(vocab, c)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(scales), vocab))
        n = len(scales) if share == 0 else share
        holder = nn.Module()
        if share == 1:
            holder.qresi = Blend(c, quant_resi)
            self.quant_resi, self._blends = holder, [holder.qresi]
        elif share == 0:
            self.quant_resi = nn.ModuleList(Blend(c, quant_resi) for _ in range(n))
            self._blends = list(self.quant_resi)
        else:
            holder.qresi_ls = nn.ModuleList(Blend(c, quant_resi) for _ in range(n))
            self.quant_resi, self._blends = holder, list(holder.qresi_ls)
        self._ticks = _ticks(len(self._blends))

    def blend(self, si: int) -> Blend:
        if len(self._blends) == 1:
            return self._blends[0]
        t = si / (len(self.scales) - 1)
        return self._blends[int(np.abs(self._ticks - t).argmin())]

    def _code(self, z):  # (N, C) -> (N,)
        e = self.embedding.weight
        if self.znorm:
            return (F.normalize(z, dim=1) @ F.normalize(e, dim=1).T).argmax(1)
        d = (z * z).sum(1, keepdim=True) - 2 * z @ e.T + (e * e).sum(1)[None]
        return d.argmin(1)

    def _up(self, idx, s, size):
        h = self.embedding(idx).reshape(idx.shape[0], s, s, -1).permute(0, 3, 1, 2)
        return h if s == size else F.interpolate(h, size=(size, size), mode="bicubic")

    @torch.no_grad()
    def f_to_idx(self, f):
        b, c, size, _ = f.shape
        rest, out = f.clone(), []
        for si, s in enumerate(self.scales):
            small = rest if s == size else F.adaptive_avg_pool2d(rest, s)
            idx = self._code(small.permute(0, 2, 3, 1).reshape(-1, c)).reshape(b, s * s)
            rest = rest - self.blend(si)(self._up(idx, s, size))
            out.append(idx)
        return out

    @torch.no_grad()
    def idx_to_fhat(self, idx_list):
        size = self.scales[-1]
        f_hat = 0
        for si, (idx, s) in enumerate(zip(idx_list, self.scales)):
            f_hat = f_hat + self.blend(si)(self._up(idx, s, size))
        return f_hat


class VQVAE(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        ch, mult, nres, z = cfg["ch"], tuple(cfg["ch_mult"]), cfg.get("num_res_blocks", 2), cfg["z_channels"]
        self.encoder, self.decoder = Encoder(ch, mult, nres, z), Decoder(ch, mult, nres, z)
        self.quantize = Quantize(cfg["vocab_size"], z, cfg["scales"], cfg.get("quant_resi", 0.5),
                                 cfg.get("share_quant_resi", 4), cfg.get("znorm", False))
        k = cfg.get("quant_conv_ks", 3)
        self.quant_conv = nn.Conv2d(z, z, k, padding=k // 2)
        self.post_quant_conv = nn.Conv2d(z, z, k, padding=k // 2)

    @torch.no_grad()
    def img_to_idx(self, x):
        return self.quantize.f_to_idx(self.quant_conv(self.encoder(x)))

    def idx_to_fhat(self, idx_list):
        return self.quantize.idx_to_fhat(idx_list)

    @torch.no_grad()
    def decode(self, f_hat):
        return self.decoder(self.post_quant_conv(f_hat))


def vqvae(cfg: dict, seed: int = 0) -> VQVAE:
    """A VQVAE with random weights (biases and norms too, so that a misplaced tensor shows)."""
    torch.manual_seed(seed)
    model = VQVAE(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embedding.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "norm" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        model.quantize.ema_vocab_hit_SV.copy_(torch.rand(model.quantize.ema_vocab_hit_SV.shape, generator=g))
    return model.eval()
