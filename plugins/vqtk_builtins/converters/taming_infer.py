"""Inferring a taming VQGAN's architecture from its state dict alone.

What the weights tell (taming's ``encoder.*`` / ``decoder.*`` naming):

- ``ch`` and ``in_channels``: ``encoder.conv_in.weight`` ``(ch, in_channels, 3, 3)``;
- ``ch_mult``: the output width of each level's first block
  (``encoder.down.{i}.block.0.conv1.weight``) divided by ``ch``;
- ``num_res_blocks``: the blocks of ``encoder.down.0``;
- which levels have attention (``encoder.down.{i}.attn.*``). taming names them
  by image side (``attn_resolutions``), which the weights cannot tell: level
  ``i`` has side ``resolution / 2**i`` for an assumed ``resolution`` (256 unless
  told). The network computes the same at any assumed resolution;
- ``z_channels``: ``encoder.conv_out.weight``; ``embed_dim`` and ``n_embed``:
  ``quantize.embedding.weight`` ``(n_embed, embed_dim)``; ``out_ch``:
  ``decoder.conv_out.weight``;
- the discriminator (``loss.discriminator.main.{N}``): ``ndf`` and
  ``in_channels`` from ``main.0``, ``n_layers`` from the number of 4x4
  convolutions, batch norm vs ActNorm from ``running_mean`` vs ``loc`` keys.

The loss weights are not in the weights: they take taming's defaults.
"""

from __future__ import annotations

import re
from typing import Optional

import torch

from vqtk.errors import VqtkError
from vqtk_builtins.converters.taming_spec import DDConfig, DiscriminatorSpec, LossSpec, TamingSpec

_LEVEL = re.compile(r"^encoder\.down\.(\d+)\.")
_BLOCK = re.compile(r"^encoder\.down\.0\.block\.(\d+)\.")
_DISC_CONV = re.compile(r"^loss\.discriminator\.main\.(\d+)\.weight$")


def _need(sd: dict[str, torch.Tensor], key: str, dims: int, where: str) -> torch.Tensor:
    t = sd.get(key)
    if t is None:
        raise VqtkError(f"{where}: no {key} in the state dict (not a taming VQGAN?)")
    if t.dim() != dims:
        raise VqtkError(f"{where}: {key} has shape {tuple(t.shape)}, expected {dims} dimensions")
    return t


def infer_ddconfig(sd: dict[str, torch.Tensor], *, resolution: int, where: str) -> DDConfig:
    """The encoder/decoder architecture, with attention sides relative to ``resolution``."""
    conv_in = _need(sd, "encoder.conv_in.weight", 4, where)
    ch, in_channels = int(conv_in.shape[0]), int(conv_in.shape[1])
    levels = sorted({int(m.group(1)) for k in sd if (m := _LEVEL.match(k))})
    if not levels or levels != list(range(len(levels))):
        raise VqtkError(f"{where}: encoder.down.* levels are {levels}, expected 0..n-1")
    ch_mult = []
    for i in levels:
        width = int(_need(sd, f"encoder.down.{i}.block.0.conv1.weight", 4, where).shape[0])
        if width % ch:
            raise VqtkError(f"{where}: level {i} has {width} channels, not a multiple of ch = {ch}")
        ch_mult.append(width // ch)
    num_res_blocks = len({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    factor = 2 ** (len(levels) - 1)
    if resolution <= 0 or resolution % factor:
        raise VqtkError(
            f"--resolution: {resolution} is not a positive multiple of the downsampling factor {factor}"
        )
    attn_levels = [i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in sd]
    z = _need(sd, "encoder.conv_out.weight", 4, where)
    z_channels = int(z.shape[0])
    quant_conv = _need(sd, "quant_conv.weight", 4, where)
    if int(quant_conv.shape[1]) != z_channels:
        raise VqtkError(
            f"{where}: encoder.conv_out gives {z_channels} channels but quant_conv takes "
            f"{int(quant_conv.shape[1])} (taming's double_z = true? a VQGAN has double_z = false)"
        )
    out_ch = int(_need(sd, "decoder.conv_out.weight", 4, where).shape[0])
    return DDConfig(
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=num_res_blocks,
        attn_resolutions=tuple(resolution // 2**i for i in attn_levels),
        z_channels=z_channels,
        resolution=resolution,
        in_channels=in_channels,
        out_ch=out_ch,
    )


def infer_discriminator(sd: dict[str, torch.Tensor], *, where: str) -> Optional[DiscriminatorSpec]:
    """taming's NLayerDiscriminator settings, or ``None`` when the checkpoint has no ``loss.discriminator.*``."""
    convs = sorted(int(m.group(1)) for k, v in sd.items() if (m := _DISC_CONV.match(k)) and v.dim() == 4)
    if not convs:
        return None
    # layout: conv 0, then one (conv, norm, LeakyReLU) triple per layer, then the output conv
    n_layers = len(convs) - 2
    expected = [0] + [2 + 3 * n for n in range(n_layers)] + [2 + 3 * n_layers]
    if n_layers < 1 or convs != expected:
        raise VqtkError(
            f"{where}: loss.discriminator convolutions at main.{convs} do not follow taming's "
            f"NLayerDiscriminator layout (main.{expected})"
        )
    first = sd["loss.discriminator.main.0.weight"]
    norm_keys = {k.rsplit(".", 1)[1] for k in sd if k.startswith("loss.discriminator.main.3.")}
    if "running_mean" in norm_keys:
        actnorm = False
    elif "loc" in norm_keys:
        actnorm = True
    else:
        raise VqtkError(
            f"{where}: loss.discriminator.main.3 has {sorted(norm_keys)}; expected batch norm "
            "(running_mean) or ActNorm (loc, scale)"
        )
    return DiscriminatorSpec(in_channels=int(first.shape[1]), ndf=int(first.shape[0]), n_layers=n_layers,
                             actnorm=actnorm)


def infer_spec(sd: dict[str, torch.Tensor], *, resolution: int, where: str) -> TamingSpec:
    """A :class:`TamingSpec` from a taming VQModel state dict (losses at taming's defaults)."""
    codebook = _need(sd, "quantize.embedding.weight", 2, where)
    return TamingSpec(
        ddconfig=infer_ddconfig(sd, resolution=resolution, where=where),
        embed_dim=int(codebook.shape[1]),
        n_embed=int(codebook.shape[0]),
        discriminator=infer_discriminator(sd, where=where),
        loss=LossSpec(),
        origin=f"inferred from the weights (image side assumed {resolution}; attn_resolutions are relative to it)",
    )
