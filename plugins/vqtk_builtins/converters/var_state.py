"""VAR's VQVAE checkpoints read safely, and their tensor names mapped to vqtk's and back.

VAR's ``VQVAE`` (FoundationVision/VAR ``models/vqvae.py``; released as
``vae_ch160v4096z32.pth``, a bare ``torch.save`` of its state dict) is taming's
encoder/decoder with the msvq quantizer (:mod:`vqtk_builtins.quantizers.msvq`).
The mapping (``{i}`` a phi convolution, ``C`` an attention block's channels):

==================================================  ==============================================
VAR                                                 vqtk (``model`` tensors)
==================================================  ==============================================
``{encoder,decoder}.*``                             the same names
``...attn.{j}.qkv.*``, ``...mid.attn_1.qkv.*``      ``...q.*``, ``...k.*``, ``...v.*``: rows
(one 1x1 conv, ``3C`` outputs)                      ``[0, C)``, ``[C, 2C)``, ``[2C, 3C)``
``quant_conv.*``, ``post_quant_conv.*`` (3x3)       the same (``model.quant_conv_kernel = 3``)
``quantize.embedding.weight``                       ``quantizer.embedding.weight``
``quantize.quant_resi.qresi_ls.{i}.*``              ``quantizer.phi.{i}.*`` (share_quant_resi >= 2)
``quantize.quant_resi.qresi.*``                     ``quantizer.phi.0.*`` (share_quant_resi = 1)
``quantize.quant_resi.{i}.*``                       ``quantizer.phi.{i}.*`` (share_quant_resi = 0)
``quantize.ema_vocab_hit_SV`` (scales, codes)       none: a training-log buffer (recent code hits
                                                    per scale), dropped; zeros on export, so VAR
                                                    loads the file strictly
==================================================  ==============================================

Any other tensor is refused, by name. Pickles are read with
:mod:`vqtk.io.safe_unpickle`: nothing in them is imported or run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import attrs
import torch

from vqtk.errors import VqtkError
from vqtk.io.safe_unpickle import find_state_dict, pickle_head, read_torch_file
from vqtk_builtins.converters.llamagen_state import refuse_unmapped

SUFFIXES = (".pth", ".pt", ".ckpt")
#: VAR's per-scale code-hit buffer: its first dimension is the number of scales
HITS = "quantize.ema_vocab_hit_SV"
CODEBOOK = "quantize.embedding.weight"
#: a name only VAR's VQVAE (among the tokenizers vqtk converts) has in its pickle
_MARKER = b"quantize.quant_resi."
_QKV = re.compile(r"^((?:encoder|decoder)\..*\.(?:attn\.\d+|attn_1))\.qkv\.(weight|bias)$")
_Q = re.compile(r"^((?:encoder|decoder)\..*\.(?:attn\.\d+|attn_1))\.q\.(weight|bias)$")
#: VAR's three ways of holding the phi convolutions, by share_quant_resi
_PHI = {
    "partial": re.compile(r"^quantize\.quant_resi\.qresi_ls\.(\d+)\.(weight|bias)$"),
    "shared": re.compile(r"^quantize\.quant_resi\.qresi\.(weight|bias)$"),
    "separate": re.compile(r"^quantize\.quant_resi\.(\d+)\.(weight|bias)$"),
}
_VQTK_PHI = re.compile(r"^quantizer\.phi\.(\d+)\.(weight|bias)$")
_SAME = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def looks_like_var(path: Path) -> bool:
    """A ``.pth`` / ``.pt`` / ``.ckpt`` pickle naming VAR's ``quantize.quant_resi`` tensors."""
    return path.suffix.lower() in SUFFIXES and _MARKER in pickle_head(path)


@attrs.define
class VarState:
    """A VAR VQVAE state dict in vqtk's names, with what the names told about the quantizer."""

    model: dict[str, torch.Tensor]
    #: VAR's share_quant_resi as far as the names tell: 0, 1, or the number of shared convolutions
    share_quant_resi: int
    #: phi convolutions found (0: quant_resi was 0, every phi an identity)
    num_phi: int
    #: scales VAR's hit buffer was kept for (None when the file has no such buffer)
    num_scales: Optional[int]


def read_var_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a VAR VQVAE file (a bare state dict, or one under ``"state_dict"``), running nothing."""
    path = Path(path)
    obj, _ = read_torch_file(path)
    return find_state_dict(obj, path)


def var_to_vqtk(sd: dict[str, torch.Tensor], where: str) -> VarState:
    """Rename a VAR ``VQVAE`` state dict into vqtk's ``model`` tensors; refuses what does not map."""
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    phis: dict[int, None] = {}
    kinds: set[str] = set()
    for name, value in sd.items():
        if (m := _QKV.match(name)) is not None:
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"{m.group(1)}.{part}.{m.group(2)}"] = chunk.clone()
        elif name.startswith(_SAME):
            out[name] = value
        elif name == CODEBOOK:
            out["quantizer.embedding.weight"] = value
        elif name == HITS:
            continue
        else:
            for kind, pattern in _PHI.items():
                if (m := pattern.match(name)) is not None:
                    i = 0 if kind == "shared" else int(m.group(1))
                    out[f"quantizer.phi.{i}.{m.group(m.lastindex)}"] = value
                    phis[i] = None
                    kinds.add(kind)
                    break
            else:
                unmapped.append(name)
    refuse_unmapped(unmapped, where, "vqtk")
    if len(kinds) > 1:
        raise VqtkError(f"{where}: phi convolutions stored in more than one of VAR's layouts ({sorted(kinds)})")
    if sorted(phis) != list(range(len(phis))):
        raise VqtkError(f"{where}: quantize.quant_resi holds convolutions {sorted(phis)}, expected 0..n-1")
    kind = next(iter(kinds), "partial")
    share = {"shared": 1, "separate": 0}.get(kind, len(phis))
    hits = sd.get(HITS)
    return VarState(model=out, share_quant_resi=share, num_phi=len(phis),
                    num_scales=int(hits.shape[0]) if hits is not None and hits.dim() == 2 else None)


def vqtk_to_var(model: dict[str, torch.Tensor], *, share_quant_resi: int, num_scales: int) -> dict[str, torch.Tensor]:
    """The inverse of :func:`var_to_vqtk`: VAR's names, fused qkv, the phi layout of ``share_quant_resi``,
    and a zero hit buffer of ``num_scales`` rows (so ``VQVAE.load_state_dict(strict=True)`` takes it)."""
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for name, value in model.items():
        if (m := _Q.match(name)) is not None:
            base, kind = m.group(1), m.group(2)
            parts = [model.get(f"{base}.{p}.{kind}") for p in "qkv"]
            if any(p is None for p in parts):
                raise VqtkError(f"{base}: attention without all of q, k and v ({kind})")
            out[f"{base}.qkv.{kind}"] = torch.cat(parts, dim=0)
        elif re.match(r"^(?:encoder|decoder)\..*\.(?:attn\.\d+|attn_1)\.[kv]\.(weight|bias)$", name):
            continue  # fused with q above
        elif name.startswith(_SAME):
            out[name] = value
        elif name == "quantizer.embedding.weight":
            out[CODEBOOK] = value
        elif (m := _VQTK_PHI.match(name)) is not None:
            i, kind = m.group(1), m.group(2)
            if share_quant_resi == 1:
                out[f"quantize.quant_resi.qresi.{kind}"] = value
            elif share_quant_resi == 0:
                out[f"quantize.quant_resi.{i}.{kind}"] = value
            else:
                out[f"quantize.quant_resi.qresi_ls.{i}.{kind}"] = value
        else:
            unmapped.append(name)
    refuse_unmapped(unmapped, "vqtk checkpoint", "VAR")
    codebook = out.get(CODEBOOK)
    if codebook is None:
        raise VqtkError("vqtk checkpoint: no quantizer.embedding.weight (not an msvq tokenizer)")
    out[HITS] = torch.zeros(num_scales, codebook.shape[0])
    return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}
