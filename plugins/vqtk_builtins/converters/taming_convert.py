"""taming-transformers VQGAN checkpoints to vqtk checkpoints, and back.

The built-in ``taming`` encoder/decoder, ``vq`` quantizer and ``patchgan``
discriminator compute what taming's modules compute, so a converted model
encodes to the same indices and decodes to the same pixels. The quantizer's
*training* loss differs: vqtk's ``vq`` puts ``beta`` on the commitment term,
taming's legacy quantizer put it on the codebook term. The tensor names are
mapped in :mod:`.taming_state`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import attrs
import torch

from vqtk.build import build_discriminator, build_vqgan
from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import Discriminator
from vqtk.io.checkpoint import load_checkpoint
from vqtk.io.files import write_atomic
from vqtk.model import VQGAN
from vqtk.pretrained import recipe_of
from vqtk.recipe import Recipe, dump_toml
from vqtk.registry import Registry
from vqtk_builtins.converters.converted_run import new_run_folder, write_converted_run
from vqtk_builtins.converters.taming_infer import infer_discriminator, infer_spec
from vqtk_builtins.converters.taming_recipe import recipe_dict, recipe_header, spec_from_recipe, validated_recipe
from vqtk_builtins.converters.taming_spec import DEFAULT_RESOLUTION, TamingSpec
from vqtk_builtins.converters.taming_state import (
    TAMING_CODEBOOK,
    VQTK_CODEBOOK,
    TamingCheckpoint,
    load_mapped,
    read_taming_checkpoint,
    taming_to_vqtk_state,
    vqtk_to_taming_state,
)
from vqtk_builtins.converters.taming_yaml import spec_from_yaml, spec_to_yaml

log = logging.getLogger("vqtk")


@attrs.define
class ConvertedModel:
    """A taming checkpoint rebuilt as vqtk modules (weights loaded), with its recipe."""

    model: VQGAN
    discriminator: Optional[Discriminator]
    recipe: Recipe
    resolved: dict
    spec: TamingSpec
    recipe_text: str


def _spec_for(ckpt: TamingCheckpoint, config: Optional[str | Path], resolution: Optional[int]) -> TamingSpec:
    where = str(ckpt.path)
    if config is None:
        return infer_spec(ckpt.state_dict, resolution=resolution or DEFAULT_RESOLUTION, where=where)
    if resolution is not None:
        raise VqtkError("--resolution: the config sets the resolution (model.params.ddconfig.resolution); "
                        "give one or the other")
    spec = spec_from_yaml(config)
    disc_in_weights = infer_discriminator(ckpt.state_dict, where=where)
    if disc_in_weights is None:
        spec = attrs.evolve(spec, discriminator=None)
    elif spec.discriminator is None:
        spec = attrs.evolve(spec, discriminator=disc_in_weights)
    return spec


def rebuild_taming(ckpt: TamingCheckpoint, *, config: Optional[str | Path] = None,
                   resolution: Optional[int] = None, name: Optional[str] = None,
                   registry: Optional[Registry] = None) -> ConvertedModel:
    """Build the vqtk model (and discriminator) for a taming checkpoint and load its weights."""
    spec = _spec_for(ckpt, config, resolution)
    model_sd, disc_sd, ignored = taming_to_vqtk_state(ckpt.state_dict)
    if "quantize.used" in ignored:
        log.warning("%s: the quantizer remaps its indices to a subset of codes (quantize.used); the "
                    "converted model decodes the same pixels but numbers codes by the full codebook",
                    ckpt.path.name)
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        log.warning("%s: ignored %d tensor(s) with no vqtk counterpart: %s", ckpt.path.name, len(ignored), shown)
    raw = recipe_dict(spec, name or f"taming_{ckpt.path.stem}")
    try:
        recipe, resolved = validated_recipe(raw, registry)
    except RecipeError as exc:
        raise VqtkError(f"{ckpt.path}: the architecture does not make a valid vqtk recipe:\n{exc}") from None
    model = build_vqgan(recipe, registry)
    load_mapped(model, model_sd, str(ckpt.path))
    disc = build_discriminator(recipe, registry)
    if disc is not None:
        load_mapped(disc, disc_sd, f"{ckpt.path} (discriminator)")
    text = recipe_header(spec, ckpt.path, ckpt.global_step) + dump_toml(resolved)
    return ConvertedModel(model=model, discriminator=disc, recipe=recipe, resolved=resolved, spec=spec,
                          recipe_text=text)


def convert_taming(source: str | Path, out: str | Path, *, config: Optional[str | Path] = None,
                   resolution: Optional[int] = None,
                   registry: Optional[Registry] = None) -> tuple[Path, ConvertedModel]:
    """Convert a taming VQModel checkpoint into the vqtk run folder ``out``.

    Writes ``out/checkpoints/step_000000/model.safetensors`` (+ ``checkpoints/last``)
    and ``out/recipe.toml``; ``vqtk.load(out)`` then returns the model. Returns
    the step folder and the rebuilt model.
    """
    out = new_run_folder(out)
    ckpt = read_taming_checkpoint(source)
    converted = rebuild_taming(ckpt, config=config, resolution=resolution, registry=registry)
    modules = {"model": converted.model}
    if converted.discriminator is not None:
        modules["discriminator"] = converted.discriminator
    folder = write_converted_run(
        out, modules, recipe_text=converted.recipe_text,
        source=f"taming-transformers {ckpt.path.name}"
               + (f" (global_step {ckpt.global_step})" if ckpt.global_step is not None else ""))
    return folder, converted


def load_taming_model(path: str | Path, registry: Optional[Registry] = None) -> tuple[VQGAN, Recipe]:
    """``(VQGAN, Recipe)`` straight from a taming checkpoint (architecture inferred), without writing files."""
    converted = rebuild_taming(read_taming_checkpoint(path), registry=registry)
    return converted.model, converted.recipe


def export_taming(checkpoint: str | Path, out: str | Path, *, config_out: Optional[str | Path] = None,
                  discriminator: bool = True, registry: Optional[Registry] = None) -> tuple[Path, TamingSpec, int]:
    """Write a vqtk tokenizer checkpoint as a taming ``{"state_dict": ...}`` file (plain tensors).

    With ``config_out``, also a taming YAML config for it. Returns the file,
    the taming description and the number of tensors written.
    """
    ckpt = load_checkpoint(checkpoint)
    if ckpt.metadata.get("stage", "1") != "1":
        log.info("%s: a stage-2 checkpoint; exporting its tokenizer only", ckpt.path)
    recipe = recipe_of(ckpt, registry)
    spec = spec_from_recipe(recipe, discriminator=discriminator)
    disc = ckpt.state_dict("discriminator") if spec.discriminator is not None else None
    sd = vqtk_to_taming_state(ckpt.state_dict("model"), disc)
    if TAMING_CODEBOOK not in sd:
        raise VqtkError(f"{ckpt.path}: no {VQTK_CODEBOOK} tensor; not a vq tokenizer checkpoint")
    out = Path(out)
    write_atomic(out, lambda p: torch.save({"state_dict": sd}, p))
    if config_out is not None:
        text = spec_to_yaml(spec)
        write_atomic(Path(config_out), lambda p: p.write_text(text))
    return out, spec, len(sd)
