"""A prior over a tokenizer's codes: the facts the tokenizer provides and the checks that they fit."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import attrs

from vqtk.build.components import build_component, fill_provided
from vqtk.errors import VqtkError
from vqtk.interfaces import SCALES, Prior, SamplingOptions, check_layout_supported
from vqtk.model import VQGAN
from vqtk.recipe.schema import ComponentRef, Recipe
from vqtk.recipe.values import as_lists
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

    The tokenizer provides ``codebook_size``, ``num_codebooks``, ``grid_size`` and, for a
    multi-scale layout, ``scales`` (the recipe need not repeat them; if it does, they must agree).
    """
    if recipe.prior is None:
        raise VqtkError("prior: this recipe has no [prior] table")
    return build_component(recipe.prior, "prior", registry, prior_facts(recipe, tokenizer, resolution))


def check_prior_fits(prior: Prior, tokenizer: VQGAN, grid: tuple[int, int], quantizer_type: str, *,
                     prior_type: Optional[str] = None, large_grid: Optional[Sequence[int]] = None) -> None:
    """The built prior models the tokenizer's codes: token layout, codebook size, grid.

    ``prior_type`` (the recipe's ``prior.type``) names the prior in messages. ``large_grid``
    (``prior_train.large_grid``) is refused for a multi-scale tokenizer, whose codes exist for
    one latent grid only, and when larger than the grid for a prior that does not declare
    :attr:`~vqtk.interfaces.Prior.samples_larger_grids`.
    """
    q = tokenizer.quantizer
    layout = q.layout
    name = repr(prior_type) if prior_type else type(prior).__name__
    check_layout_supported(layout, prior.layouts, name, repr(quantizer_type))
    if prior.layout != layout:
        raise VqtkError(f"prior: {name} was built for {prior.layout.describe()}, but "
                        f"model.quantizer {quantizer_type!r} lays out its codes as {layout.describe()}")
    if prior.codebook_size != q.codebook_size:
        raise VqtkError(
            f"prior.codebook_size: {prior.codebook_size} does not match the tokenizer's {q.codebook_size} codes"
        )
    if tuple(prior.grid_size) != tuple(grid):
        raise VqtkError(f"prior.grid_size: {tuple(prior.grid_size)} does not match the tokenizer's code grid {grid}")
    if large_grid is not None and layout.kind == SCALES:
        raise VqtkError(f"prior_train.large_grid: model.quantizer {quantizer_type!r} codes {layout.describe()}, "
                        f"so its prior samples only the {grid[0]}x{grid[1]} grid; remove large_grid")
    if large_grid is not None and not prior.samples_larger_grids and any(a > b for a, b in zip(large_grid, grid)):
        raise VqtkError(f"prior_train.large_grid: {name} samples grids up to its training grid "
                        f"{grid[0]}x{grid[1]} only, not {large_grid[0]}x{large_grid[1]}; remove large_grid, or use a "
                        "prior that samples larger grids (`vqtk describe prior NAME`)")


def check_recipe_prior(recipe: Recipe, tokenizer: VQGAN, resolution: int,
                       registry: Optional[Registry] = None) -> Prior:
    """Build ``[prior]`` over ``tokenizer`` and check that it fits (:func:`check_prior_fits`).

    What ``vqtk check`` and ``vqtk run`` do before any training, so a prior that cannot
    model the tokenizer's codes is refused before stage 1 spends its hours.
    """
    prior = build_prior(recipe, tokenizer, resolution, registry)
    check_prior_fits(prior, tokenizer, tokenizer.latent_grid(resolution, resolution), recipe.model.quantizer.type,
                     prior_type=recipe.prior.type,
                     large_grid=recipe.prior_train.large_grid if recipe.prior_train else None)
    return prior


def recipe_sampling_options(recipe: Recipe) -> SamplingOptions:
    """The sampling settings of the recipe's ``[prior_train]`` (those its sample grids were drawn with)."""
    cfg = recipe.prior_train
    if cfg is None:
        return SamplingOptions()
    return SamplingOptions(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, cfg_scale=cfg.cfg_scale)


def provided_values(ref: ComponentRef, path: str, provided: dict[str, tuple[Any, str]]) -> dict[str, Any]:
    """The provided arguments as the component received them (for a self-contained stored recipe)."""
    config = fill_provided(ref, path, provided)
    return {f.name: as_lists(getattr(config, f.name)) for f in attrs.fields(type(config))
            if is_provided(f) and getattr(config, f.name) is not None} if attrs.has(type(config)) else {}
