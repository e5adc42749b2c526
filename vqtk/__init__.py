"""vqtk: a plugin-based toolkit for VQGAN image tokenizers and generators."""

from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import (
    Converter,
    DataSource,
    Decoder,
    Discriminator,
    DiscriminatorLogits,
    Encoder,
    Loss,
    LossInputs,
    LossTerm,
    Prior,
    PriorOutput,
    Quantizer,
    QuantizerOutput,
    SamplingOptions,
    StepAware,
)
from vqtk.model import VQGAN, VQGANOutput
from vqtk.pretrained import load
from vqtk.registry import Registry, default_registry, hookimpl
from vqtk.version import __version__

__all__ = [
    "VQGAN",
    "Converter",
    "DataSource",
    "Decoder",
    "Discriminator",
    "DiscriminatorLogits",
    "Encoder",
    "Loss",
    "LossInputs",
    "LossTerm",
    "Prior",
    "PriorOutput",
    "Quantizer",
    "QuantizerOutput",
    "RecipeError",
    "Registry",
    "SamplingOptions",
    "StepAware",
    "VQGANOutput",
    "VqtkError",
    "__version__",
    "default_registry",
    "hookimpl",
    "load",
]
