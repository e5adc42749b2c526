"""Turning a validated recipe into components, with shape checks before any training.

``components`` builds what a recipe table names, ``prior`` a prior over a
tokenizer's codes, ``probe`` runs one image through every part.
"""

from vqtk.build.components import (
    LossEntry,
    build_component,
    build_data,
    build_discriminator,
    build_losses,
    build_vqgan,
    fill_provided,
    too_large,
)
from vqtk.build.prior import (
    build_prior,
    check_prior_fits,
    check_recipe_prior,
    prior_facts,
    provided_values,
    recipe_sampling_options,
)
from vqtk.build.probe import call_part, check_data_fits, component_origins, count_parameters, probe_shapes

__all__ = [
    "LossEntry",
    "build_component",
    "build_data",
    "build_discriminator",
    "build_losses",
    "build_prior",
    "build_vqgan",
    "call_part",
    "check_data_fits",
    "check_prior_fits",
    "check_recipe_prior",
    "recipe_sampling_options",
    "component_origins",
    "count_parameters",
    "fill_provided",
    "prior_facts",
    "probe_shapes",
    "provided_values",
    "too_large",
]
