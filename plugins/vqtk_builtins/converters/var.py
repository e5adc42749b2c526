"""The ``var`` converter: ``vqtk convert var`` / ``to-var``, and ``vqtk.load`` of VAR VQVAE files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import attrs

from vqtk.config import in_range, positive
from vqtk.interfaces.converter import ConversionResult, Converter, NoOptions, option
from vqtk.model import VQGAN
from vqtk.recipe import Recipe
from vqtk.registry import Registry
from vqtk_builtins.converters.var_convert import VAR_QUANT_RESI, convert_var, export_var, rebuild_var
from vqtk_builtins.converters.var_state import looks_like_var


@attrs.frozen(kw_only=True)
class VarImportOptions:
    """Options of ``vqtk convert var``: what VAR's weights cannot tell."""

    scales: Optional[str] = option(
        metavar="S1,S2,...",
        help="side of each scale, coarse to fine, the last being the latent grid (default VAR's "
             "1,2,3,4,5,6,8,10,13,16, VQVAE's v_patch_nums)")
    resolution: Optional[int] = option(
        metavar="N", validator=positive,
        help="image side (default: the last scale times the downsampling factor, 256 for VAR's release)")
    quant_resi: float = option(
        VAR_QUANT_RESI, metavar="R", validator=in_range(0.0, 1.0),
        help="phi's blend ratio, VQVAE's quant_resi (default 0.5, the release's)")
    znorm: bool = option(False, help="pick codes by cosine similarity (VQVAE's using_znorm; the release: False)")


class VarConverter(Converter):
    """VAR's multi-scale VQVAE checkpoints (vae_ch160v4096z32.pth) <-> vqtk checkpoints (same codes and pixels).

    Pickled checkpoints are read without running code from them.
    """

    name = "var"
    import_options = VarImportOptions
    export_options = NoOptions

    def recognizes(self, path: Path) -> bool:
        """A ``.pth`` / ``.pt`` / ``.ckpt`` pickle that names VAR's ``quantize.quant_resi`` tensors."""
        return looks_like_var(path)

    def import_checkpoint(self, source: Path, out: str | Path, options: VarImportOptions, *,
                          registry: Registry) -> ConversionResult:
        """Convert a VAR VQVAE state dict (vae_ch160v4096z32.pth) into a vqtk checkpoint folder:
        OUT/checkpoints/step_000000/model.safetensors and OUT/recipe.toml. The architecture is read from the
        weights; scales, quant_resi and using_znorm are VAR's released values unless given.
        """
        folder, converted = convert_var(source, out, registry=registry, scales=options.scales,
                                        resolution=options.resolution, quant_resi=options.quant_resi,
                                        znorm=options.znorm)
        lines = [converted.summary,
                 f"-> {folder} (recipe: {out}/recipe.toml); load it with vqtk.load({str(out)!r})"]
        return ConversionResult(path=folder, summary=tuple(lines))

    def export_checkpoint(self, checkpoint: str | Path, out: str | Path, options: NoOptions, *,
                          registry: Registry) -> ConversionResult:
        """Write a vqtk tokenizer (encoder/decoder 'taming' with attention at the deepest level, quantizer 'msvq')
        as VAR's VQVAE state dict of plain tensors, loadable by VQVAE.load_state_dict(strict=True).
        """
        path, notes = export_var(checkpoint, out, registry=registry)
        return ConversionResult(path=path, summary=(f"-> {path}", *notes))

    def load(self, path: Path, *, registry: Registry) -> tuple[VQGAN, Recipe]:
        """The VAR model with its released settings, nothing written."""
        converted = rebuild_var(path, registry=registry)
        return converted.model, converted.recipe
