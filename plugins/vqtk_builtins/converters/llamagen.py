"""The ``llamagen`` converter: ``vqtk convert llamagen`` / ``to-llamagen``, and ``vqtk.load`` of LlamaGen files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import attrs

from vqtk.config import positive
from vqtk.interfaces.converter import ConversionResult, Converter, option
from vqtk.model import VQGAN
from vqtk.recipe import Recipe
from vqtk.registry import Registry
from vqtk_builtins.converters.llamagen_convert import convert_llamagen, export_llamagen, load_llamagen_model
from vqtk_builtins.converters.llamagen_recipe import describe
from vqtk_builtins.converters.llamagen_state import looks_like_llamagen


@attrs.frozen(kw_only=True)
class LlamaGenImportOptions:
    """Options of ``vqtk convert llamagen``."""

    weights: Literal["auto", "model", "ema"] = option(
        "auto", metavar="WHICH",
        help="which tokenizer weights to import: auto takes checkpoint['ema'] when present, else "
             "checkpoint['model'] (as LlamaGen's reconstruction scripts do)")
    discriminator: bool = option(True, help="leave the checkpoint's discriminator out")
    resolution: Optional[int] = option(
        metavar="N", validator=positive,
        help="image side the weights were trained at (default 256): the recipe's data.resolution, and "
             "the side attn_resolutions refers to (the network computes the same either way)")


@attrs.frozen(kw_only=True)
class LlamaGenExportOptions:
    """Options of ``vqtk convert to-llamagen``."""

    discriminator: bool = option(True, help="leave the discriminator out")


class LlamaGenConverter(Converter):
    """LlamaGen VQ tokenizer (VQ-16, VQ-8) checkpoints <-> vqtk checkpoints (same codes and pixels).

    Pickled checkpoints are read without running code from them (the
    ``args`` namespace of a training checkpoint becomes an inert placeholder).
    """

    name = "llamagen"
    import_options = LlamaGenImportOptions
    export_options = LlamaGenExportOptions

    def recognizes(self, path: Path) -> bool:
        """A ``.pt`` / ``.pth`` / ``.ckpt`` pickle that names LlamaGen's ``encoder.conv_blocks`` tensors."""
        return looks_like_llamagen(path)

    def import_checkpoint(self, source: Path, out: str | Path, options: LlamaGenImportOptions, *,
                          registry: Registry) -> ConversionResult:
        """Convert a LlamaGen VQModel checkpoint ({"model": ...}, as vq_ds16_c2i.pt, or a training checkpoint
        with "ema", "discriminator" and optimizer states) into a vqtk checkpoint folder:
        OUT/checkpoints/step_000000/model.safetensors and OUT/recipe.toml. The architecture is read from
        the weights; the training settings are LlamaGen's vq_train.py defaults.
        """
        folder, converted = convert_llamagen(source, out, weights=options.weights,
                                             discriminator=options.discriminator,
                                             resolution=options.resolution, registry=registry)
        ckpt = converted.source
        taken = f"checkpoint[{ckpt.weights!r}]" if ckpt.weights else "the state dict"
        lines = [f"LlamaGen VQModel: {describe(converted.spec)}", f"imported {taken}"
                 + (" and checkpoint['discriminator']" if converted.discriminator is not None else "")]
        if ckpt.skipped:
            lines.append(f"not converted: {', '.join(ckpt.skipped)} (vqtk starts its own optimizer states)")
        lines.append(f"-> {folder} (recipe: {out}/recipe.toml); load it with vqtk.load({str(out)!r})")
        return ConversionResult(path=folder, summary=tuple(lines))

    def export_checkpoint(self, checkpoint: str | Path, out: str | Path, options: LlamaGenExportOptions, *,
                          registry: Registry) -> ConversionResult:
        """Write a vqtk tokenizer (encoder/decoder 'taming' with attention at the deepest level only,
        quantizer 'factorized' or 'vq' without a projection, discriminator 'patchgan' with batch norm) as a
        LlamaGen checkpoint {"model": ...} of plain tensors, loadable by LlamaGen's VQModel.
        """
        path, lines = export_llamagen(checkpoint, out, discriminator=options.discriminator, registry=registry)
        return ConversionResult(path=path, summary=(f"-> {path}", *lines))

    def load(self, path: Path, *, registry: Registry) -> tuple[VQGAN, Recipe]:
        """The LlamaGen model (its ``ema`` weights when present, else ``model``), nothing written."""
        return load_llamagen_model(path, registry)
