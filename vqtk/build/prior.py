"""A prior over a tokenizer's codes: the facts the tokenizer provides and the checks that they fit."""

from __future__ import annotations

from typing import Any, Optional

import attrs

from vqtk.build.components import build_component, fill_provided
from vqtk.errors import VqtkError
from vqtk.interfaces import SCALES, Prior, check_layout_supported
from vqtk.model import VQGAN
from vqtk.recipe.schema import ComponentRef, Recipe
from vqtk.registry import Registry
from vqtk.registry.signature import is_provided


def prior_facts(recipe: Recipe, tokenizer: VQGAN, resolution: int) -> dict[str, tuple[Any, str]]:
    """What the tokenizer tells a prior: ``codebook_size``, ``num_codebooks``, ``grid_size``, ``scales``."""
    q = tokenizer.quantizer
    layout = q.layout
    source = f"model.quantizer ({recipe.model.quantizer.type!r})"
    provided = {
        "codebook_size": (q.codebook_size, f"the tokenizer's {source} codebook_size"),
        "num_codebooks": (q.num_codebooks, f"the tokenizer's {source} num_codebooks"),
        "grid_size": (tokenizer.latent_grid(resolution, resolution),
                      f"the tokenizer's code grid for data.resolution {resolution}"),
    }
    if layout.kind == SCALES:
        provided["scales"] = ([list(s) for s in layout.scales], f"the tokenizer's {source} scales")
    return provided


def build_prior(recipe: Recipe, tokenizer: VQGAN, resolution: int, registry: Optional[Registry] = None) -> Prior:
    """``[prior]`` over ``tokenizer``'s codes of ``resolution``-pixel images.

    The tokenizer provides ``codebook_size``, ``num_codebooks`` and ``grid_size``
    (the recipe need not repeat them; if it does, they must agree).
    """
    if recipe.prior is None:
        raise VqtkError("prior: this recipe has no [prior] table")
    return build_component(recipe.prior, "prior", registry, prior_facts(recipe, tokenizer, resolution))


def check_prior_fits(prior: Prior, tokenizer: VQGAN, grid: tuple[int, int], quantizer_type: str) -> None:
    """The built prior models the tokenizer's codes: token layout, codebook size, grid."""
    q = tokenizer.quantizer
    check_layout_supported(q.layout, prior.layouts, type(prior).__name__, repr(quantizer_type))
    if prior.codebook_size != q.codebook_size:
        raise VqtkError(
            f"prior.codebook_size: {prior.codebook_size} does not match the tokenizer's {q.codebook_size} codes"
        )
    if tuple(prior.grid_size) != tuple(grid):
        raise VqtkError(f"prior.grid_size: {tuple(prior.grid_size)} does not match the tokenizer's code grid {grid}")


def provided_values(ref: ComponentRef, path: str, provided: dict[str, tuple[Any, str]]) -> dict[str, Any]:
    """The provided arguments as the component received them (for a self-contained stored recipe)."""
    config = fill_provided(ref, path, provided)
    return {f.name: _plain(getattr(config, f.name)) for f in attrs.fields(type(config))
            if is_provided(f) and getattr(config, f.name) is not None} if attrs.has(type(config)) else {}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
