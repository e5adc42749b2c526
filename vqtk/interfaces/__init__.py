"""The contracts every vqtk component implements.

The core holds no concrete component: these base classes say what an encoder,
quantizer, decoder, discriminator, loss, prior or data source must provide, and
the typed records they return. Built-in and third-party plugins subclass them.
"""

from vqtk.interfaces.capabilities import PerceptualDistance, RestartableQuantizer
from vqtk.interfaces.converter import ConversionResult, Converter
from vqtk.interfaces.data import DataSource, FolderDataSource, ShardDataSource, StreamingDataset
from vqtk.interfaces.decoder import Decoder
from vqtk.interfaces.discriminator import Discriminator, Logits, logit_maps
from vqtk.interfaces.encoder import Encoder
from vqtk.interfaces.layout import DEPTH, GRID, LAYOUT_KINDS, SCALES, TokenLayout, check_layout_supported
from vqtk.interfaces.lifecycle import StepAware, step_aware_parts
from vqtk.interfaces.loss import DiscriminatorLogits, Loss, LossInputs, LossTerm
from vqtk.interfaces.prior import Prior, PriorOutput, SamplingOptions
from vqtk.interfaces.quantizer import Quantizer, QuantizerOutput, codebook_stats

#: The component kinds a plugin can register, and the base class each must subclass.
KINDS: dict[str, type] = {
    "encoder": Encoder,
    "quantizer": Quantizer,
    "decoder": Decoder,
    "discriminator": Discriminator,
    "loss": Loss,
    "prior": Prior,
    "data": DataSource,
}

__all__ = [
    "DEPTH",
    "GRID",
    "KINDS",
    "LAYOUT_KINDS",
    "SCALES",
    "TokenLayout",
    "check_layout_supported",
    "ConversionResult",
    "Converter",
    "DataSource",
    "Decoder",
    "Discriminator",
    "DiscriminatorLogits",
    "Encoder",
    "FolderDataSource",
    "Loss",
    "LossInputs",
    "Logits",
    "LossTerm",
    "PerceptualDistance",
    "Prior",
    "PriorOutput",
    "Quantizer",
    "QuantizerOutput",
    "RestartableQuantizer",
    "SamplingOptions",
    "ShardDataSource",
    "StepAware",
    "StreamingDataset",
    "codebook_stats",
    "logit_maps",
    "step_aware_parts",
]
