"""LlamaGen checkpoints read safely, and their tensor names mapped to taming's layout and back.

LlamaGen's ``VQModel`` (``tokenizer/tokenizer_image/vq_model.py``) computes what
taming's does; only the names of its encoder and decoder differ. Renamed to
taming's layout, a LlamaGen state dict is one that the ``taming`` converter's
machinery (architecture inference, the mapping into vqtk's checkpoint names)
handles as it is. The renaming, ``L`` the number of levels:

=================================================  ================================================
LlamaGen (``checkpoint["model"]``)                 taming layout (vqtk: ``model.`` + the same name)
=================================================  ================================================
``encoder.conv_blocks.{i}.res.{j}.*``              ``encoder.down.{i}.block.{j}.*``
``encoder.conv_blocks.{i}.attn.{j}.*``             ``encoder.down.{i}.attn.{j}.*``
``encoder.conv_blocks.{i}.downsample.*``           ``encoder.down.{i}.downsample.*``
``decoder.conv_blocks.{k}.res.{j}.*`` (deepest     ``decoder.up.{L-1-k}.block.{j}.*``
first) and ``.attn.{j}.*``, ``.upsample.*``        ``decoder.up.{L-1-k}.attn.{j}.*``, ``.upsample.*``
``{encoder,decoder}.mid.0`` / ``.1`` / ``.2``      ``mid.block_1`` / ``mid.attn_1`` / ``mid.block_2``
``conv_in``, ``norm_out``, ``conv_out``,           the same
``quant_conv``, ``post_quant_conv``,
``quantize.embedding.weight``
``quantize.codebook_used`` (65536 recent codes)    none: a training-log buffer, dropped (written as
                                                   zeros on export, so LlamaGen loads strictly)
``checkpoint["discriminator"]``: ``main.*``        ``loss.discriminator.main.*`` (``patchgan``)
=================================================  ================================================

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

#: the buffer LlamaGen's VectorQuantizer(show_usage=True) keeps: the last 65536 code indices
USAGE_LOG = "quantize.codebook_used"
USAGE_SLOTS = 65536
#: prefix of the discriminator's tensors in taming's layout
DISC_PREFIX = "loss.discriminator."
#: the entries LlamaGen's reconstruction scripts take weights from, in their order of preference
WEIGHT_KEYS = ("ema", "model", "state_dict")
SUFFIXES = (".pt", ".pth", ".ckpt")
#: a name only a LlamaGen VQModel's pickle holds
_MARKER = b"encoder.conv_blocks.0.res.0."

# (LlamaGen prefix, taming prefix); {i} a level, {k} a decoder level counted from the deepest
# (k = L - 1 - i), {j} a block; the rest of the name is kept.
_RULES = [
    ("encoder.conv_blocks.{i}.res.{j}.", "encoder.down.{i}.block.{j}."),
    ("encoder.conv_blocks.{i}.attn.{j}.", "encoder.down.{i}.attn.{j}."),
    ("encoder.conv_blocks.{i}.downsample.", "encoder.down.{i}.downsample."),
    ("decoder.conv_blocks.{k}.res.{j}.", "decoder.up.{i}.block.{j}."),
    ("decoder.conv_blocks.{k}.attn.{j}.", "decoder.up.{i}.attn.{j}."),
    ("decoder.conv_blocks.{k}.upsample.", "decoder.up.{i}.upsample."),
    *((f"{part}.mid.{n}.", f"{part}.mid.{name}.") for part in ("encoder", "decoder")
      for n, name in enumerate(("block_1", "attn_1", "block_2"))),
    *((f"{part}.{name}.", f"{part}.{name}.") for part in ("encoder", "decoder")
      for name in ("conv_in", "norm_out", "conv_out")),
    ("quant_conv.", "quant_conv."),
    ("post_quant_conv.", "post_quant_conv."),
    ("quantize.embedding.weight", "quantize.embedding.weight"),
]


def _pattern(template: str) -> re.Pattern:
    """A template as a regex: ``{i}``, ``{k}``, ``{j}`` match numbers; one not ending in ``.`` is a whole name."""
    body = (re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
            .replace("{i}", r"(?P<i>\d+)").replace("{k}", r"(?P<k>\d+)").replace("{j}", r"(?P<j>\d+)"))
    return re.compile("^" + body + ("" if template.endswith(".") else "$"))


_COMPILED = [((_pattern(a), a), (_pattern(b), b)) for a, b in _RULES]


def _levels(names, part_pattern: str) -> int:
    found = {int(m.group(1)) for n in names if (m := re.match(part_pattern, n))}
    return max(found) + 1 if found else 0


def _renamed(name: str, *, to_taming: bool, levels: int) -> Optional[str]:
    """``name`` by the first matching rule of :data:`_RULES`, or ``None`` when none maps it."""
    for (llamagen, ltemplate), (taming, ttemplate) in _COMPILED:
        source, target = (llamagen, ttemplate) if to_taming else (taming, ltemplate)
        m = source.match(name)
        if m is None:
            continue
        fields = m.groupdict()
        if "{k}" in ltemplate:  # a decoder level: LlamaGen counts from the deepest, taming from the first
            level = int(fields["k" if to_taming else "i"])
            if level >= levels:
                return None
            fields["i" if to_taming else "k"] = str(levels - 1 - level)
        return target.format(**fields) + name[m.end():]
    return None


def _rename(sd: dict[str, torch.Tensor], *, to_taming: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename by :data:`_RULES` in either direction; returns ``(renamed, names that match no rule)``."""
    # LlamaGen's decoder mirrors its encoder (VQ_8, VQ_16): its levels are counted on the encoder, so
    # a stray decoder.conv_blocks.N cannot shift the others; vqtk's own decoder counts for itself
    levels = _levels(sd, r"^encoder\.conv_blocks\.(\d+)\." if to_taming else r"^decoder\.up\.(\d+)\.")
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for name, value in sd.items():
        new = _renamed(name, to_taming=to_taming, levels=levels)
        if new is None:
            unmapped.append(name)
        else:
            out[new] = value
    return out, unmapped


def refuse_unmapped(unmapped: list[str], where: str, what: str) -> None:
    """Raise :class:`VqtkError` naming the tensors (up to 8) that have no counterpart."""
    if unmapped:
        shown = ", ".join(unmapped[:8]) + (f" and {len(unmapped) - 8} more" if len(unmapped) > 8 else "")
        raise VqtkError(f"{where}: {len(unmapped)} tensor(s) have no {what} counterpart: {shown}")


def llamagen_to_taming(model: dict[str, torch.Tensor], disc: Optional[dict[str, torch.Tensor]], where: str
                       ) -> dict[str, torch.Tensor]:
    """A LlamaGen ``VQModel`` state dict (and discriminator) in taming's layout; refuses what does not map."""
    model = {k: v for k, v in model.items() if k != USAGE_LOG}
    renamed, unmapped = _rename(model, to_taming=True)
    refuse_unmapped(unmapped, where, "vqtk")
    if disc is not None:
        odd = [f"discriminator: {k}" for k in disc if not k.startswith("main.")]
        refuse_unmapped(odd, where + " (not LlamaGen's PatchGAN; --no-discriminator leaves it out)", "vqtk")
        renamed.update({DISC_PREFIX + k: v for k, v in disc.items()})
    return renamed


def taming_to_llamagen(sd: dict[str, torch.Tensor], where: str) -> tuple[dict, dict]:
    """The inverse of :func:`llamagen_to_taming`: ``(model, discriminator)`` in LlamaGen's names.

    ``model`` gains LlamaGen's ``quantize.codebook_used`` (zeros), so it loads
    strictly into a ``VQModel`` built with ``codebook_show_usage = True`` (the default).
    """
    disc = {k[len(DISC_PREFIX):]: v for k, v in sd.items() if k.startswith(DISC_PREFIX)}
    model, unmapped = _rename({k: v for k, v in sd.items() if not k.startswith(DISC_PREFIX)}, to_taming=False)
    refuse_unmapped(unmapped, where, "LlamaGen")
    model[USAGE_LOG] = torch.zeros(USAGE_SLOTS)
    return model, disc


# -- reading ------------------------------------------------------------------------------------


def looks_like_llamagen(path: Path) -> bool:
    """A ``.pt`` / ``.pth`` / ``.ckpt`` pickle naming LlamaGen's ``encoder.conv_blocks`` tensors."""
    return path.suffix.lower() in SUFFIXES and _MARKER in pickle_head(path)


@attrs.define
class LlamaGenCheckpoint:
    """The tensors of a LlamaGen checkpoint: the tokenizer weights taken, the discriminator, the rest."""

    path: Path
    model: dict[str, torch.Tensor]
    #: the entry the weights came from ("ema", "model", "state_dict"), or None for a bare state dict
    weights: Optional[str]
    discriminator: Optional[dict[str, torch.Tensor]] = None
    #: top-level entries not converted (optimizer states, the weight set not chosen, args...)
    skipped: list[str] = attrs.Factory(list)
    steps: Optional[int] = None


def read_llamagen_checkpoint(path: str | Path, *, weights: str = "auto",
                             discriminator: bool = True) -> LlamaGenCheckpoint:
    """Read a LlamaGen ``{"model": ..., ...}`` checkpoint (or a bare state dict) without unpickling code.

    ``weights``: ``"auto"`` takes ``ema``, else ``model``, else ``state_dict`` (what LlamaGen's
    reconstruction scripts load); ``"model"`` / ``"ema"`` insist on that entry.
    """
    path = Path(path)
    obj, _ = read_torch_file(path)
    entries = obj if isinstance(obj, dict) else {}
    if weights == "auto":
        key = next((k for k in WEIGHT_KEYS if isinstance(entries.get(k), dict)), "model")
    elif isinstance(entries.get(weights), dict):
        key = weights
    else:
        raise VqtkError(f"--weights: {path} has no {weights!r} entry (it holds: "
                        f"{', '.join(map(str, entries)) or type(obj).__name__})")
    sd = find_state_dict(obj, path, key)
    bare = not isinstance(entries.get(key), dict)  # a state dict saved at the top level
    disc = None
    if discriminator and isinstance(entries.get("discriminator"), dict):
        disc = find_state_dict(obj, path, "discriminator")
    used = set() if bare else {key} | ({"discriminator"} if disc is not None else set())
    skipped = [] if bare else [str(k) for k in entries if k not in used]
    steps = entries.get("steps")
    return LlamaGenCheckpoint(path=path, model=sd, weights=None if bare else key, discriminator=disc,
                              skipped=skipped, steps=steps if isinstance(steps, int) else None)
