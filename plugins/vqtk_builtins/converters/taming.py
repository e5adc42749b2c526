"""The ``taming`` converter: ``vqtk convert taming`` / ``to-taming``, and ``vqtk.load`` of taming files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import attrs

from vqtk.config import positive
from vqtk.interfaces.converter import ConversionResult, Converter, option
from vqtk.model import VQGAN
from vqtk.recipe import Recipe
from vqtk.registry import Registry
from vqtk_builtins.converters.taming_convert import convert_taming, export_taming, load_taming_model
from vqtk_builtins.converters.taming_recipe import describe
from vqtk_builtins.converters.taming_state import looks_like_taming


@attrs.frozen(kw_only=True)
class TamingImportOptions:
    """Options of ``vqtk convert taming``."""

    config: Optional[str] = option(
        metavar="YAML", help="taming's YAML config for it (e.g. configs/model.yaml); needs PyYAML")
    resolution: Optional[int] = option(
        metavar="N", validator=positive,
        help="image side the weights were trained at, which places attn_resolutions when inferring without "
             "--config (default 256; the network computes the same either way)")


@attrs.frozen(kw_only=True)
class TamingExportOptions:
    """Options of ``vqtk convert to-taming``."""

    config_out: Optional[str] = option(metavar="YAML", help="also write taming's YAML config for the model here")
    discriminator: bool = option(True, help="leave the discriminator out")


class TamingConverter(Converter):
    """taming-transformers VQGAN (VQModel) checkpoints <-> vqtk checkpoints (same codes and pixels).

    Pickled checkpoints are read without running code from them: objects other
    than tensors and plain containers (OmegaConf configs, Lightning callbacks)
    are replaced by inert placeholders.
    """

    name = "taming"
    import_options = TamingImportOptions
    export_options = TamingExportOptions

    def recognizes(self, path: Path) -> bool:
        """A ``.ckpt`` / ``.pt`` / ``.pth`` pickle that names taming's VQModel tensors."""
        return looks_like_taming(path)

    def import_checkpoint(self, source: Path, out: str | Path, options: TamingImportOptions, *,
                          registry: Registry) -> ConversionResult:
        """Convert a taming-transformers VQModel checkpoint (Lightning .ckpt or a state-dict .pt) into a vqtk
        checkpoint folder: OUT/checkpoints/step_000000/model.safetensors and OUT/recipe.toml. Without
        --config the architecture is inferred from the weights.
        """
        folder, converted = convert_taming(source, out, config=options.config, resolution=options.resolution,
                                           registry=registry)
        return ConversionResult(path=folder, summary=(
            f"taming VQModel: {describe(converted.spec)}",
            f"-> {folder} (recipe: {out}/recipe.toml); load it with vqtk.load({str(out)!r})",
        ))

    def export_checkpoint(self, checkpoint: str | Path, out: str | Path, options: TamingExportOptions, *,
                          registry: Registry) -> ConversionResult:
        """Write a vqtk tokenizer (encoder/decoder 'taming', quantizer 'vq', discriminator 'patchgan') as a
        taming-transformers checkpoint {"state_dict": ...} of plain tensors, loadable by taming's
        VQModel(ckpt_path=...).
        """
        path, spec, count = export_taming(checkpoint, out, config_out=options.config_out,
                                          discriminator=options.discriminator, registry=registry)
        extra = f" and config {options.config_out}" if options.config_out else ""
        return ConversionResult(path=path, summary=(f"taming VQModel: {describe(spec)}",
                                                    f"-> {path} ({count} tensors){extra}"))

    def load(self, path: Path, *, registry: Registry) -> tuple[VQGAN, Recipe]:
        """The taming model with its architecture inferred from the weights (nothing written)."""
        return load_taming_model(path, registry)
