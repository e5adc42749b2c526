"""taming-transformers checkpoints read safely, and their tensors renamed to vqtk's and back.

Key mapping (taming ``VQModel`` state dict <-> vqtk checkpoint tensors):

========================================  ===============================================
taming                                    vqtk
========================================  ===============================================
``encoder.*`` ``decoder.*``               ``model.encoder.*`` ``model.decoder.*`` (same names)
``quant_conv.*`` ``post_quant_conv.*``    ``model.quant_conv.*`` ``model.post_quant_conv.*``
``quantize.embedding.weight`` (n, d)      the ``vq`` quantizer's declared codebook
                                          (:attr:`VectorQuantizer.CODEBOOK_STATE`), (1, n, d)
``loss.discriminator.main.*``             ``discriminator.main.*`` (``patchgan``)
``loss.perceptual_loss.*``                not kept (LPIPS is frozen; vqtk builds its own)
========================================  ===============================================

Pickled checkpoints are read with :mod:`vqtk.io.safe_unpickle`: nothing in them
is imported or run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import attrs
import torch

from vqtk.errors import VqtkError
from vqtk.io.checkpoint import load_state_strict
from vqtk.io.safe_unpickle import find_state_dict, pickle_head, read_torch_file
from vqtk_builtins.converters.taming_spec import transformer_error
from vqtk_builtins.quantizers.vq import VectorQuantizer

#: file suffixes of taming (pickled torch) checkpoints
TAMING_SUFFIXES = (".ckpt", ".pt", ".pth")
TAMING_CODEBOOK = "quantize.embedding.weight"
#: where the ``vq`` quantizer keeps taming's codebook, and its statistics that have no taming counterpart
VQTK_CODEBOOK = "quantizer." + VectorQuantizer.CODEBOOK_STATE
_QUANTIZER_STATISTICS = "quantizer." + VectorQuantizer.STATISTICS_STATE_PREFIX
_SAME_NAME = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_DISC = "loss.discriminator."
_PERCEPTUAL = "loss.perceptual_loss."
#: names only a taming VQModel (or a Net2NetTransformer holding one) has in its pickle
_MARKERS = (b"encoder.down.0.block.0.", b"first_stage_model.")
#: VAR's VQVAE shares taming's encoder names; its multi-scale quantizer's Phi convs tell it apart
_NOT_TAMING = (b"quantize.quant_resi.",)
#: how much of a pickle to search for them: names come before tensor data
_SNIFF_BYTES = 16 << 20


def looks_like_taming(path: Path) -> bool:
    """Whether ``path`` is a pickled torch file naming taming's tensors (reads at most 16 MiB, runs nothing)."""
    if path.suffix.lower() not in TAMING_SUFFIXES:
        return False
    head = pickle_head(path, _SNIFF_BYTES)
    return any(marker in head for marker in _MARKERS) and not any(marker in head for marker in _NOT_TAMING)


@attrs.define
class TamingCheckpoint:
    """A taming checkpoint's tensors and its training step (when it says)."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    global_step: Optional[int] = None
    foreign: list[str] = attrs.Factory(list)


def read_taming_checkpoint(path: str | Path) -> TamingCheckpoint:
    """Read a taming ``.ckpt`` (Lightning) or a plain state-dict ``.pt`` without unpickling code.

    Raises :class:`VqtkError` for unreadable files, Net2NetTransformer and
    GumbelVQ checkpoints.
    """
    path = Path(path)
    obj, foreign = read_torch_file(path)
    sd = find_state_dict(obj, path)
    step = obj.get("global_step") if isinstance(obj, dict) else None
    prefixes = ("transformer.", "first_stage_model.", "cond_stage_model.")
    if any(k.startswith(prefixes) for k in sd):
        n = sum(k.startswith("transformer.") for k in sd)
        raise transformer_error(f"{path.name} holds {n} transformer.* tensors")
    if any(k.startswith(("quantize.embed.", "quantize.proj.")) for k in sd):
        raise VqtkError(f"{path}: a taming GumbelQuantize model (quantize.proj, quantize.embed); "
                        "vqtk has no Gumbel-softmax quantizer to map it to")
    return TamingCheckpoint(path=path, state_dict=sd, global_step=step if isinstance(step, int) else None,
                            foreign=foreign)


def taming_to_vqtk_state(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, list[str]]:
    """Split a taming state dict into vqtk's ``model`` and ``discriminator`` tensors.

    Returns ``(model, discriminator, ignored)``; ``ignored`` lists the keys
    that have no vqtk counterpart (LPIPS weights are dropped without listing).
    """
    model: dict[str, torch.Tensor] = {}
    disc: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in sd.items():
        if key.startswith(_SAME_NAME):
            model[key] = value
        elif key == TAMING_CODEBOOK:
            model[VQTK_CODEBOOK] = value.unsqueeze(0)
        elif key.startswith(_DISC):
            disc[key[len(_DISC):]] = value
        elif not key.startswith(_PERCEPTUAL):
            ignored.append(key)
    return model, disc, ignored


def vqtk_to_taming_state(model: dict[str, torch.Tensor], disc: Optional[dict[str, torch.Tensor]] = None
                         ) -> dict[str, torch.Tensor]:
    """The inverse of :func:`taming_to_vqtk_state` (the codebook's usage statistics are dropped)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.items():
        if key == VQTK_CODEBOOK:
            out[TAMING_CODEBOOK] = value[0]
        elif key.startswith(_SAME_NAME):
            out[key] = value
        elif not key.startswith(_QUANTIZER_STATISTICS):
            raise VqtkError(f"{key}: no taming counterpart for this tensor")
    for key, value in (disc or {}).items():
        out[_DISC + key] = value
    return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}


def load_mapped(module: torch.nn.Module, mapped: dict[str, torch.Tensor], where: str) -> None:
    """Load taming tensors; only the quantizer's usage statistics may keep their fresh values."""
    own = module.state_dict()
    if any(k.startswith("quantizer.") for k in own) and VQTK_CODEBOOK not in own:
        raise RuntimeError(f"the vq quantizer declares its codebook as {VectorQuantizer.CODEBOOK_STATE!r}, "
                           f"but its state dict has no such tensor ({sorted(k for k in own if 'quantizer.' in k)})")
    fill = {k: v for k, v in own.items()
            if k not in mapped and k.startswith(_QUANTIZER_STATISTICS) and k != VQTK_CODEBOOK}
    load_state_strict(module, {**fill, **mapped}, where)
