"""What a checkpoint records about the run that wrote it: recipe, versions, who provided each component, token layout."""

from __future__ import annotations

import json
from typing import Optional

import torch

from vqtk.interfaces import TokenLayout
from vqtk.recipe import dump_toml
from vqtk.recipe.schema import ComponentRef, Recipe
from vqtk.registry import Registry
from vqtk.version import __version__


def recipe_components(recipe: Recipe) -> dict[str, ComponentRef]:
    """Every component table of a recipe by its dotted path."""
    m = recipe.model
    refs: dict[str, ComponentRef] = {"model.encoder": m.encoder, "model.quantizer": m.quantizer,
                                     "model.decoder": m.decoder, "data": recipe.data}
    if m.discriminator is not None:
        refs["model.discriminator"] = m.discriminator
    refs.update({f"loss.{name}": ref for name, ref in recipe.loss.items()})
    if recipe.prior is not None:
        refs["prior"] = recipe.prior
    return refs


def component_provenance(recipe: Recipe, registry: Registry) -> dict[str, dict[str, str]]:
    """``{"loss.lecam": {"kind", "type", "plugin", "distribution", "version"}, ...}``."""
    out: dict[str, dict[str, str]] = {}
    for path, ref in recipe_components(recipe).items():
        spec = registry.get(ref.kind, ref.type)
        record = registry.plugins.get(spec.plugin)
        out[path] = {"kind": ref.kind, "type": ref.type, "plugin": spec.plugin,
                     "distribution": spec.distribution or "",
                     "version": (record.version if record is not None else None) or ""}
    return out


def run_metadata(recipe: Recipe, resolved: dict, registry: Registry, *, stage: str) -> dict[str, str]:
    """The string metadata written into every checkpoint of a run."""
    plugins = {p.name: p.version or "" for p in registry.plugins.values() if not p.error}
    versions = {"vqtk": __version__, "torch": torch.__version__, "plugins": plugins}
    return {"recipe": dump_toml(resolved), "versions": json.dumps(versions), "stage": stage,
            "components": json.dumps(component_provenance(recipe, registry))}


def layout_metadata(layout: TokenLayout) -> dict[str, str]:
    """``{"layout": '{"kind": ..., "depth": ..., "scales": ...}'}``: the tokenizer's token layout, for a reader of
    the checkpoint that builds nothing (:func:`read_layout` reads it back)."""
    return {"layout": json.dumps(layout.to_metadata())}


def read_layout(metadata: dict[str, str]) -> Optional[TokenLayout]:
    """The token layout a checkpoint's metadata records, or ``None`` (checkpoints written before layouts)."""
    text = metadata.get("layout")
    return TokenLayout.from_metadata(json.loads(text)) if text else None
