"""An independent, minimal forward pass of taming-transformers' VQGAN, for the interop tests.

Written from the published architecture (Esser et al., "Taming Transformers",
and the layout of its released checkpoints), working directly on a taming-layout
state dict with functional ops. It imports nothing from vqtk and shares no code
with it, so agreement between the two is evidence that vqtk computes what
taming computes:

- ResNet block: GroupNorm(32 groups, eps 1e-6) -> swish -> 3x3 conv, twice;
  a 1x1 ``nin_shortcut`` on the skip path when the width changes;
- attention: GroupNorm, 1x1 q/k/v, softmax(q k^T / sqrt(C)) v, 1x1 ``proj_out``, residual;
- downsampling: pad (left 0, right 1, top 0, bottom 1), 3x3 conv with stride 2;
- upsampling: nearest x2, then a 3x3 conv;
- quantizer: index = argmin_k ||z - e_k||^2, computed as |z|^2 + |e|^2 - 2 z.e;
- NLayerDiscriminator: 4x4 convs (stride 2, then 1), LeakyReLU 0.2, batch norm
  (eval: running statistics, eps 1e-5) or ActNorm ``scale * (x + loc)``.

``cfg`` dicts hold ``ch``, ``ch_mult``, ``num_res_blocks``, ``attn_levels``
(level indices with attention), ``z_channels``, ``embed_dim``, ``n_embed``,
``in_channels``, ``out_ch``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# -- building a random taming-layout state dict ---------------------------------------------


def _conv_params(sd, name, cout, cin, k, g, bias=True):
    sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) / math.sqrt(cin * k * k)
    if bias:
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.1


def _norm_params(sd, name, c, g):
    sd[f"{name}.weight"] = 1.0 + 0.1 * torch.randn(c, generator=g)
    sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)


def _resblock_params(sd, name, cin, cout, g):
    _norm_params(sd, f"{name}.norm1", cin, g)
    _conv_params(sd, f"{name}.conv1", cout, cin, 3, g)
    _norm_params(sd, f"{name}.norm2", cout, g)
    _conv_params(sd, f"{name}.conv2", cout, cout, 3, g)
    if cin != cout:
        _conv_params(sd, f"{name}.nin_shortcut", cout, cin, 1, g)


def _attn_params(sd, name, c, g):
    _norm_params(sd, f"{name}.norm", c, g)
    for part in ("q", "k", "v", "proj_out"):
        _conv_params(sd, f"{name}.{part}", c, c, 1, g)


def make_vqgan_state(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under every key a taming ``VQModel`` has (encoder, decoder, quantizer)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    ch, mult, nrb = cfg["ch"], list(cfg["ch_mult"]), cfg["num_res_blocks"]
    levels = len(mult)
    # encoder
    _conv_params(sd, "encoder.conv_in", ch, cfg["in_channels"], 3, g)
    width = ch
    for i in range(levels):
        out = ch * mult[i]
        for j in range(nrb):
            _resblock_params(sd, f"encoder.down.{i}.block.{j}", width, out, g)
            width = out
            if i in cfg["attn_levels"]:
                _attn_params(sd, f"encoder.down.{i}.attn.{j}", width, g)
        if i != levels - 1:
            _conv_params(sd, f"encoder.down.{i}.downsample.conv", width, width, 3, g)
    _resblock_params(sd, "encoder.mid.block_1", width, width, g)
    _attn_params(sd, "encoder.mid.attn_1", width, g)
    _resblock_params(sd, "encoder.mid.block_2", width, width, g)
    _norm_params(sd, "encoder.norm_out", width, g)
    _conv_params(sd, "encoder.conv_out", cfg["z_channels"], width, 3, g)
    # quantizer and the 1x1 convs around it
    _conv_params(sd, "quant_conv", cfg["embed_dim"], cfg["z_channels"], 1, g)
    sd["quantize.embedding.weight"] = torch.randn(cfg["n_embed"], cfg["embed_dim"], generator=g)
    _conv_params(sd, "post_quant_conv", cfg["z_channels"], cfg["embed_dim"], 1, g)
    # decoder
    width = ch * mult[-1]
    _conv_params(sd, "decoder.conv_in", width, cfg["z_channels"], 3, g)
    _resblock_params(sd, "decoder.mid.block_1", width, width, g)
    _attn_params(sd, "decoder.mid.attn_1", width, g)
    _resblock_params(sd, "decoder.mid.block_2", width, width, g)
    for i in reversed(range(levels)):
        out = ch * mult[i]
        for j in range(nrb + 1):
            _resblock_params(sd, f"decoder.up.{i}.block.{j}", width, out, g)
            width = out
            if i in cfg["attn_levels"]:
                _attn_params(sd, f"decoder.up.{i}.attn.{j}", width, g)
        if i != 0:
            _conv_params(sd, f"decoder.up.{i}.upsample.conv", width, width, 3, g)
    _norm_params(sd, "decoder.norm_out", width, g)
    _conv_params(sd, "decoder.conv_out", cfg["out_ch"], width, 3, g)
    return sd


def make_discriminator_state(*, ndf: int, n_layers: int, in_channels: int = 3, actnorm: bool = False,
                             seed: int = 1) -> dict[str, torch.Tensor]:
    """Random ``loss.discriminator.main.*`` weights of taming's NLayerDiscriminator."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    p = "loss.discriminator.main"
    _conv_params(sd, f"{p}.0", ndf, in_channels, 4, g)
    prev, idx = 1, 2
    for n in range(1, n_layers + 1):
        m = min(2**n, 8)
        _conv_params(sd, f"{p}.{idx}", ndf * m, ndf * prev, 4, g, bias=actnorm)
        c = ndf * m
        if actnorm:
            sd[f"{p}.{idx + 1}.loc"] = 0.1 * torch.randn(1, c, 1, 1, generator=g)
            sd[f"{p}.{idx + 1}.scale"] = 1.0 + 0.1 * torch.randn(1, c, 1, 1, generator=g)
            sd[f"{p}.{idx + 1}.initialized"] = torch.tensor(1, dtype=torch.uint8)
        else:
            _norm_params(sd, f"{p}.{idx + 1}", c, g)
            sd[f"{p}.{idx + 1}.running_mean"] = 0.1 * torch.randn(c, generator=g)
            sd[f"{p}.{idx + 1}.running_var"] = 1.0 + 0.1 * torch.rand(c, generator=g)
            sd[f"{p}.{idx + 1}.num_batches_tracked"] = torch.tensor(7)
        prev, idx = m, idx + 3
    _conv_params(sd, f"{p}.{idx}", 1, ndf * prev, 4, g)
    return sd


# -- forward pass ------------------------------------------------------------------------------


def _conv(sd, name, x, stride=1, padding=None):
    w = sd[f"{name}.weight"]
    pad = w.shape[-1] // 2 if padding is None else padding
    return F.conv2d(x, w, sd.get(f"{name}.bias"), stride=stride, padding=pad)


def _gn(sd, name, x):
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def _swish(x):
    return x * torch.sigmoid(x)


def _resblock(sd, name, x):
    h = _conv(sd, f"{name}.conv1", _swish(_gn(sd, f"{name}.norm1", x)))
    h = _conv(sd, f"{name}.conv2", _swish(_gn(sd, f"{name}.norm2", h)))
    if f"{name}.nin_shortcut.weight" in sd:
        x = _conv(sd, f"{name}.nin_shortcut", x)
    return x + h


def _attn(sd, name, x):
    h = _gn(sd, f"{name}.norm", x)
    q, k, v = (_conv(sd, f"{name}.{p}", h) for p in ("q", "k", "v"))
    b, c, hh, ww = q.shape
    q = q.reshape(b, c, hh * ww).permute(0, 2, 1)  # (b, n, c)
    k = k.reshape(b, c, hh * ww)  # (b, c, n)
    weights = torch.softmax(torch.bmm(q, k) / math.sqrt(c), dim=2)  # (b, n_query, n_key)
    v = v.reshape(b, c, hh * ww)
    out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return x + _conv(sd, f"{name}.proj_out", out)


def _downsample(sd, name, x):
    return _conv(sd, f"{name}.conv", F.pad(x, (0, 1, 0, 1)), stride=2, padding=0)


def _upsample(sd, name, x):
    return _conv(sd, f"{name}.conv", F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(sd, prefix, h):
    h = _resblock(sd, f"{prefix}.mid.block_1", h)
    h = _attn(sd, f"{prefix}.mid.attn_1", h)
    return _resblock(sd, f"{prefix}.mid.block_2", h)


@torch.no_grad()
def encoder_latents(sd: dict, x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Images to the latents the quantizer sees (encoder, then ``quant_conv``)."""
    levels = len(cfg["ch_mult"])
    h = _conv(sd, "encoder.conv_in", x)
    for i in range(levels):
        for j in range(cfg["num_res_blocks"]):
            h = _resblock(sd, f"encoder.down.{i}.block.{j}", h)
            if i in cfg["attn_levels"]:
                h = _attn(sd, f"encoder.down.{i}.attn.{j}", h)
        if i != levels - 1:
            h = _downsample(sd, f"encoder.down.{i}.downsample", h)
    h = _mid(sd, "encoder", h)
    h = _conv(sd, "encoder.conv_out", _swish(_gn(sd, "encoder.norm_out", h)))
    return _conv(sd, "quant_conv", h)


@torch.no_grad()
def nearest_codes(sd: dict, z: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` latents to ``(B, h, w)`` indices of the nearest codes (squared L2)."""
    e = sd["quantize.embedding.weight"]
    b, d, hh, ww = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1)[None] - 2 * flat @ e.t()
    return dist.argmin(dim=1).reshape(b, hh, ww)


@torch.no_grad()
def encode_to_indices(sd: dict, x: torch.Tensor, cfg: dict) -> torch.Tensor:
    return nearest_codes(sd, encoder_latents(sd, x, cfg))


@torch.no_grad()
def decode_indices(sd: dict, indices: torch.Tensor, cfg: dict) -> torch.Tensor:
    """``(B, h, w)`` code indices to images (``post_quant_conv``, then the decoder)."""
    z = sd["quantize.embedding.weight"][indices].permute(0, 3, 1, 2)
    h = _conv(sd, "post_quant_conv", z)
    h = _conv(sd, "decoder.conv_in", h)
    h = _mid(sd, "decoder", h)
    levels = len(cfg["ch_mult"])
    for i in reversed(range(levels)):
        for j in range(cfg["num_res_blocks"] + 1):
            h = _resblock(sd, f"decoder.up.{i}.block.{j}", h)
            if i in cfg["attn_levels"]:
                h = _attn(sd, f"decoder.up.{i}.attn.{j}", h)
        if i != 0:
            h = _upsample(sd, f"decoder.up.{i}.upsample", h)
    return _conv(sd, "decoder.conv_out", _swish(_gn(sd, "decoder.norm_out", h)))


@torch.no_grad()
def discriminate(sd: dict, x: torch.Tensor, *, n_layers: int, actnorm: bool) -> torch.Tensor:
    """Patch logits of taming's NLayerDiscriminator (batch norm in eval mode)."""
    p = "loss.discriminator.main"
    h = F.leaky_relu(_conv(sd, f"{p}.0", x, stride=2, padding=1), 0.2)
    idx = 2
    for n in range(1, n_layers + 1):
        h = _conv(sd, f"{p}.{idx}", h, stride=2 if n < n_layers else 1, padding=1)
        nm = f"{p}.{idx + 1}"
        if actnorm:
            h = sd[f"{nm}.scale"] * (h + sd[f"{nm}.loc"])
        else:
            mean, var = sd[f"{nm}.running_mean"], sd[f"{nm}.running_var"]
            h = (h - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + 1e-5)
            h = h * sd[f"{nm}.weight"][None, :, None, None] + sd[f"{nm}.bias"][None, :, None, None]
        h = F.leaky_relu(h, 0.2)
        idx += 3
    return _conv(sd, f"{p}.{idx}", h, stride=1, padding=1)
