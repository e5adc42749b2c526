"""Recipes: TOML files that assemble registered components into a run."""

from vqtk.recipe.dump import dump_toml
from vqtk.recipe.loader import apply_overrides, load_raw, load_recipe, merge, recipe_from_dict
from vqtk.recipe.schema import (
    ComponentRef,
    LossRef,
    ModelSection,
    OptimizerSection,
    Recipe,
    TrainSection,
)

__all__ = [
    "ComponentRef",
    "LossRef",
    "ModelSection",
    "OptimizerSection",
    "Recipe",
    "TrainSection",
    "apply_overrides",
    "dump_toml",
    "load_raw",
    "load_recipe",
    "merge",
    "recipe_from_dict",
]
