"""LlamaGen VQ tokenizer checkpoints to vqtk checkpoints, and back.

A LlamaGen state dict is renamed to taming's layout (:mod:`.llamagen_state`),
whose architecture the ``taming`` converter infers and whose tensors it maps
into vqtk's names; the model is vqtk's ``taming`` encoder/decoder and
``factorized`` quantizer with LlamaGen's training (:mod:`.llamagen_recipe`).
Exporting runs the same two steps backwards.
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
from vqtk_builtins.converters.llamagen_recipe import export_problems, recipe_dict, recipe_header
from vqtk_builtins.converters.llamagen_state import (
    LlamaGenCheckpoint,
    llamagen_to_taming,
    read_llamagen_checkpoint,
    taming_to_llamagen,
)
from vqtk_builtins.converters.taming_infer import infer_spec
from vqtk_builtins.converters.taming_recipe import validated_recipe
from vqtk_builtins.converters.taming_spec import DEFAULT_RESOLUTION, TamingSpec
from vqtk_builtins.converters.taming_state import load_mapped, taming_to_vqtk_state, vqtk_to_taming_state

log = logging.getLogger("vqtk")


@attrs.define
class ConvertedLlamaGen:
    """A LlamaGen checkpoint rebuilt as vqtk modules (weights loaded), with its recipe."""

    model: VQGAN
    discriminator: Optional[Discriminator]
    recipe: Recipe
    spec: TamingSpec
    recipe_text: str
    source: LlamaGenCheckpoint


def rebuild_llamagen(ckpt: LlamaGenCheckpoint, *, resolution: Optional[int] = None,
                     registry: Optional[Registry] = None) -> ConvertedLlamaGen:
    """Build the vqtk model (and discriminator) for a LlamaGen checkpoint and load its weights."""
    where = str(ckpt.path)
    taming_sd = llamagen_to_taming(ckpt.model, ckpt.discriminator, where)
    spec = infer_spec(taming_sd, resolution=resolution or DEFAULT_RESOLUTION, where=where)
    model_sd, disc_sd, ignored = taming_to_vqtk_state(taming_sd)
    if ignored:  # llamagen_to_taming names only what maps; anything else here is a bug
        raise RuntimeError(f"unmapped tensors after renaming: {ignored}")
    try:
        recipe, resolved = validated_recipe(recipe_dict(spec, f"llamagen_{ckpt.path.stem}"), registry)
    except RecipeError as exc:
        raise VqtkError(f"{where}: the architecture does not make a valid vqtk recipe:\n{exc}") from None
    model = build_vqgan(recipe, registry)
    load_mapped(model, model_sd, where)
    disc = None
    if disc_sd:
        disc = build_discriminator(recipe, registry)
        load_mapped(disc, disc_sd, f"{where} (discriminator)")
    text = recipe_header(spec, ckpt.path, ckpt.weights, ckpt.steps) + dump_toml(resolved)
    return ConvertedLlamaGen(model=model, discriminator=disc, recipe=recipe, spec=spec, recipe_text=text,
                             source=ckpt)


def convert_llamagen(source: str | Path, out: str | Path, *, weights: str = "auto", discriminator: bool = True,
                     resolution: Optional[int] = None,
                     registry: Optional[Registry] = None) -> tuple[Path, ConvertedLlamaGen]:
    """Convert a LlamaGen checkpoint into the vqtk run folder ``out`` (``checkpoints/`` and ``recipe.toml``)."""
    out = new_run_folder(out)
    ckpt = read_llamagen_checkpoint(source, weights=weights, discriminator=discriminator)
    converted = rebuild_llamagen(ckpt, resolution=resolution, registry=registry)
    modules = {"model": converted.model}
    if converted.discriminator is not None:
        modules["discriminator"] = converted.discriminator
    entry = f"[{ckpt.weights!r}]" if ckpt.weights else ""
    folder = write_converted_run(
        out, modules, recipe_text=converted.recipe_text,
        source=f"LlamaGen {ckpt.path.name}{entry}" + (f" (steps {ckpt.steps})" if ckpt.steps is not None else ""))
    return folder, converted


def load_llamagen_model(path: str | Path, registry: Optional[Registry] = None) -> tuple[VQGAN, Recipe]:
    """``(VQGAN, Recipe)`` straight from a LlamaGen checkpoint, without writing files."""
    converted = rebuild_llamagen(read_llamagen_checkpoint(path, discriminator=False), registry=registry)
    return converted.model, converted.recipe


def _llamagen_state(model: dict, disc: Optional[dict], where: str) -> tuple[dict, dict]:
    return taming_to_llamagen(vqtk_to_taming_state(model, disc), where)


def export_llamagen(checkpoint: str | Path, out: str | Path, *, discriminator: bool = True,
                    registry: Optional[Registry] = None) -> tuple[Path, list[str]]:
    """Write a vqtk tokenizer checkpoint as LlamaGen's ``{"model": ...}`` file of plain tensors.

    Adds ``"discriminator"`` when the checkpoint has one (and ``discriminator``),
    and ``"ema"`` when the run kept a moving average. Returns the file and
    lines describing what was written.
    """
    ckpt = load_checkpoint(checkpoint)
    if ckpt.metadata.get("stage", "1") != "1":
        log.info("%s: a stage-2 checkpoint; exporting its tokenizer only", ckpt.path)
    recipe = recipe_of(ckpt, registry)
    problems, notes = export_problems(recipe, discriminator=discriminator)
    if problems:
        raise VqtkError("\n".join(["this tokenizer does not map to LlamaGen's VQModel:", *problems]))
    where = str(ckpt.path)
    disc = ckpt.state_dict("discriminator") if discriminator and recipe.model.discriminator is not None else {}
    model_sd, disc_sd = _llamagen_state(ckpt.state_dict("model"), disc, where)
    payload = {"model": model_sd}
    if disc_sd:
        payload["discriminator"] = disc_sd
    ema = ckpt.state_dict("ema.module")
    if ema:
        payload["ema"] = _llamagen_state(ema, None, f"{where} (ema)")[0]
    out = Path(out)
    write_atomic(out, lambda p: torch.save(payload, p))
    lines = [f"{key}: {len(sd)} tensors" for key, sd in payload.items()] + [f"note: {n}" for n in notes]
    return out, lines
