"""A taming-transformers VQGAN described the way taming's YAML configs describe it.

:class:`TamingSpec` holds ``model.params`` of a ``taming.models.vqgan.VQModel``
config (``ddconfig``, ``embed_dim``, ``n_embed``, ``lossconfig.params``) plus
the learning rate and batch size. It is read from a taming YAML file
(:mod:`.taming_yaml`, with PyYAML's safe loader), inferred from weights
(:mod:`.taming_infer`) or from a vqtk recipe (:mod:`.taming_recipe`), and written
back as YAML when exporting.
"""

from __future__ import annotations

from typing import Optional

import attrs

from vqtk.errors import VqtkError

VQMODEL_TARGETS = ("taming.models.vqgan.VQModel", "taming.models.vqgan.EMAVQ")
LOSS_TARGET = "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"
#: image side assumed when inferring from weights alone (taming's released VQGANs use 256)
DEFAULT_RESOLUTION = 256


@attrs.define(kw_only=True)
class DDConfig:
    """taming's ``ddconfig``: the encoder/decoder architecture (shared by both)."""

    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    z_channels: int
    resolution: int
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0


@attrs.define(kw_only=True)
class DiscriminatorSpec:
    """taming's ``NLayerDiscriminator`` (``disc_in_channels``, ``disc_ndf``, ``disc_num_layers``, ``use_actnorm``)."""

    in_channels: int = 3
    ndf: int = 64
    n_layers: int = 3
    actnorm: bool = False


@attrs.define(kw_only=True)
class LossSpec:
    """``VQLPIPSWithDiscriminator`` parameters (taming's defaults where it has them)."""

    disc_start: int = 0
    disc_weight: float = 1.0
    disc_factor: float = 1.0
    codebook_weight: float = 1.0
    pixelloss_weight: float = 1.0
    perceptual_weight: float = 1.0
    disc_loss: str = "hinge"


@attrs.define(kw_only=True)
class TamingSpec:
    """Everything vqtk needs to rebuild a taming VQModel (and its discriminator) as a recipe."""

    ddconfig: DDConfig
    embed_dim: int
    n_embed: int
    #: taming's VectorQuantizer beta (fixed at 0.25 in VQModel)
    beta: float = 0.25
    discriminator: Optional[DiscriminatorSpec] = None
    loss: LossSpec = attrs.Factory(LossSpec)
    base_learning_rate: Optional[float] = None
    batch_size: Optional[int] = None
    #: where the architecture came from, for the recipe's header comment
    origin: str = "config"


_TRANSFORMER_REASON = (
    "minGPT's attention projections and layer norms carry biases (transformer.blocks.N.attn.query.bias, "
    "ln1.bias) that vqtk's gpt prior (x-transformers: bias-free projections and norms) has no place for, "
    "and its conditioning prefix differs, so no weight mapping reproduces its predictions; convert the "
    "first-stage VQGAN checkpoint (first_stage_config.params.ckpt_path) to get its tokenizer"
)


def transformer_error(detail: str) -> VqtkError:
    """The error for taming ``Net2NetTransformer`` checkpoints and configs."""
    return VqtkError(f"taming Net2NetTransformer checkpoints do not map to vqtk's gpt prior: "
                     f"{_TRANSFORMER_REASON} ({detail})")
