"""A third-party converter for the tests: the "toyvq" format, a safetensors file of a toy tokenizer.

A ``.toyvq`` file holds the model's tensors under ``net/`` and its recipe as
metadata ``toyvq_recipe``. The converter imports it (weights multiplied by
``--scale``), exports back (``--half`` stores float16, ``--tag`` a choice) and
lets ``vqtk.load`` read ``.toyvq`` files directly. Nothing in vqtk names it.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Literal, Optional

import attrs
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vqtk import hookimpl
from vqtk.build import build_vqgan
from vqtk.config import positive
from vqtk.interfaces.converter import ConversionResult, Converter, option
from vqtk.io.checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from vqtk.recipe import recipe_from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUFFIX = ".toyvq"


@attrs.frozen(kw_only=True)
class ToyImportOptions:
    scale: float = option(1.0, metavar="S", validator=positive, help="multiply every weight by S")
    note: Optional[str] = option(help="a note kept in the checkpoint's metadata")


@attrs.frozen(kw_only=True)
class ToyExportOptions:
    half: bool = option(False, help="store float16 tensors")
    tag: Literal["a", "b"] = option("a", help="a tag stored in the file")


def write_toyvq(path: Path, model, recipe_toml: str, **metadata: str) -> Path:
    tensors = {f"net/{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"toyvq_recipe": recipe_toml, **metadata})
    return path


def read_toyvq(path: Path, registry, scale: float = 1.0):
    with safe_open(str(path), framework="pt") as f:
        text = (f.metadata() or {})["toyvq_recipe"]
    recipe = recipe_from_dict(tomllib.loads(text), registry)
    model = build_vqgan(recipe, registry)
    state = {k.removeprefix("net/"): v * scale for k, v in load_file(str(path)).items()}
    load_state_strict(model, state, str(path))
    return model, recipe, text


class ToyConverter(Converter):
    """Toy safetensors tokenizers (.toyvq) <-> vqtk checkpoints (test only)."""

    name = "toyvq"
    import_options = ToyImportOptions
    export_options = ToyExportOptions

    def recognizes(self, path: Path) -> bool:
        return path.suffix == SUFFIX

    def import_checkpoint(self, source, out, options, *, registry):
        """Convert a .toyvq file into a vqtk checkpoint folder."""
        model, _, text = read_toyvq(source, registry, options.scale)
        metadata = {"recipe": text, "stage": "1", "versions": json.dumps({}), "source": options.note or ""}
        folder = save_checkpoint(Path(out) / "checkpoints", 0, {"model": model}, metadata)
        return ConversionResult(path=folder, summary=(f"toyvq: {Path(source).name}", f"-> {folder}"))

    def export_checkpoint(self, checkpoint, out, options, *, registry):
        """Write a vqtk checkpoint as a .toyvq file."""
        ckpt = load_checkpoint(checkpoint)
        tensors = {f"net/{k}": (v.half() if options.half and v.is_floating_point() else v).contiguous()
                   for k, v in ckpt.state_dict("model").items()}
        save_file(tensors, str(out), metadata={"toyvq_recipe": ckpt.recipe_toml, "tag": options.tag})
        return ConversionResult(path=Path(out), summary=(f"-> {out} ({len(tensors)} tensors)",))

    def load(self, path, *, registry):
        model, recipe, _ = read_toyvq(path, registry)
        return model, recipe


class ImportOnly(Converter):
    """Imports nothing useful (test only)."""

    name = "import_only"

    def import_checkpoint(self, source, out, options, *, registry):
        raise AssertionError("not called")


def converter_plugin(*converters: Converter, components=None) -> types.ModuleType:
    """A plugin module registering ``converters`` (and, if given, components through ``components(register)``)."""
    mod = types.ModuleType("toy_converter_plugin")

    def vqtk_register_converters(register):
        for converter in converters:
            register(converter)

    mod.vqtk_register_converters = hookimpl(vqtk_register_converters)
    if components is not None:
        mod.vqtk_register_components = hookimpl(components)
    return mod
