"""Configs and build functions of the built-in priors (both backed by x-transformers).

The modules import x_transformers at their top, so they are imported inside the
build functions here, keeping ``vqtk list`` fast.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from vqtk.config import each, non_negative, positive


def fraction(_inst: Any, _attr: Any, value: Any) -> None:
    """Validator: a probability in ``[0, 1)``."""
    if value is not None and not 0 <= value < 1:
        raise ValueError(f"must be >= 0 and < 1, got {value!r}")


def _check_common(config: Any) -> None:
    if len(config.grid_size) != 2:
        raise ValueError(f"grid_size must be (rows, columns), got {tuple(config.grid_size)!r}")
    if config.dim % config.heads:
        raise ValueError(f"dim ({config.dim}) must be divisible by heads ({config.heads})")
    if config.label_dropout > 0 and config.num_classes == 0:
        raise ValueError(
            "label_dropout > 0 needs num_classes > 0: it trains the null class that "
            "classifier-free guidance uses"
        )


# -- gpt -------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class GPTConfig:
    """Autoregressive transformer prior over raster-ordered codes (KV cache, sliding window, guidance)."""

    #: number of codes of the tokenizer (its quantizer's codebook_size)
    codebook_size: int = attrs.field(default=1024, validator=positive)
    #: code grid (rows, columns) it is trained on: image size / downsampling factor
    grid_size: tuple[int, int] = attrs.field(default=(16, 16), validator=each(positive))
    #: transformer width
    dim: int = attrs.field(default=512, validator=positive)
    #: decoder blocks
    depth: int = attrs.field(default=8, validator=positive)
    #: attention heads; dim must be divisible by heads
    heads: int = attrs.field(default=8, validator=positive)
    #: dropout on embeddings, attention and feed-forward layers
    dropout: float = attrs.field(default=0.0, validator=fraction)
    #: rotary position embeddings (true) or learned absolute ones (false)
    rotary: bool = True
    #: class labels for a class-conditional prior; 0 = unconditional
    num_classes: int = attrs.field(default=0, validator=non_negative)
    #: probability of replacing a label by the null class in training (needed for cfg_scale != 1)
    label_dropout: float = attrs.field(default=0.0, validator=fraction)

    def __attrs_post_init__(self) -> None:
        _check_common(self)


def build_gpt(config: GPTConfig):
    """Build a :class:`~vqtk_builtins.priors.gpt.GPTPrior` from ``[prior]``."""
    from vqtk_builtins.priors.gpt import GPTPrior

    return GPTPrior(
        codebook_size=config.codebook_size,
        grid_size=tuple(config.grid_size),
        dim=config.dim,
        depth=config.depth,
        heads=config.heads,
        dropout=config.dropout,
        rotary=config.rotary,
        num_classes=config.num_classes,
        label_dropout=config.label_dropout,
    )


# -- maskgit -----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class MaskGITConfig:
    """Bidirectional masked prior with MaskGIT iterative decoding (training-size grids only)."""

    #: number of codes of the tokenizer; id codebook_size is the mask token
    codebook_size: int = attrs.field(default=1024, validator=positive)
    #: code grid (rows, columns) it is trained on
    grid_size: tuple[int, int] = attrs.field(default=(16, 16), validator=each(positive))
    dim: int = attrs.field(default=512, validator=positive)
    depth: int = attrs.field(default=8, validator=positive)
    #: attention heads; dim must be divisible by heads
    heads: int = attrs.field(default=8, validator=positive)
    dropout: float = attrs.field(default=0.0, validator=fraction)
    #: decoding steps (sampling options may override)
    steps: int = attrs.field(default=8, validator=positive)
    #: class labels for a class-conditional prior; 0 = unconditional
    num_classes: int = attrs.field(default=0, validator=non_negative)
    #: probability of replacing a label by the null class in training (needed for cfg_scale != 1)
    label_dropout: float = attrs.field(default=0.0, validator=fraction)
    #: fraction masked as a function of progress r: cos(pi/2 r) or 1 - r
    schedule: Literal["cosine", "linear"] = "cosine"
    #: Gumbel noise scale on token confidences at the first step, annealed to 0
    choice_temperature: float = attrs.field(default=4.5, validator=non_negative)

    def __attrs_post_init__(self) -> None:
        _check_common(self)


def build_maskgit(config: MaskGITConfig):
    """Build a :class:`~vqtk_builtins.priors.maskgit.MaskGITPrior` from ``[prior]``."""
    from vqtk_builtins.priors.maskgit import MaskGITPrior

    return MaskGITPrior(
        codebook_size=config.codebook_size,
        grid_size=tuple(config.grid_size),
        dim=config.dim,
        depth=config.depth,
        heads=config.heads,
        dropout=config.dropout,
        steps=config.steps,
        num_classes=config.num_classes,
        label_dropout=config.label_dropout,
        schedule=config.schedule,
        choice_temperature=config.choice_temperature,
    )


def register_components(register) -> None:
    """Register the built-in priors under kind ``"prior"``."""
    register("prior", "gpt", config=GPTConfig, build=build_gpt,
             doc="autoregressive transformer over raster-ordered codes: KV cache, sliding window, class guidance")
    register("prior", "maskgit", config=MaskGITConfig, build=build_maskgit,
             doc="bidirectional masked transformer, MaskGIT iterative decoding (cosine/linear schedule)")
