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


@attrs.define(kw_only=True)
class TransformerPriorConfig:
    """Fields and checks that the configs of both built-in priors share (subclassed by each)."""

    #: number of codes of the tokenizer (its quantizer's codebook_size); for maskgit, id
    #: codebook_size is the mask token
    codebook_size: int = attrs.field(default=1024, validator=positive)
    #: code grid (rows, columns) it is trained on: image size / downsampling factor
    grid_size: tuple[int, int] = attrs.field(default=(16, 16), validator=each(positive))
    #: transformer width
    dim: int = attrs.field(default=512, validator=positive)
    #: transformer blocks (decoder blocks for gpt, encoder blocks for maskgit)
    depth: int = attrs.field(default=8, validator=positive)
    #: attention heads; dim must be divisible by heads
    heads: int = attrs.field(default=8, validator=positive)
    #: dropout on embeddings, attention and feed-forward layers
    dropout: float = attrs.field(default=0.0, validator=fraction)
    #: class labels for a class-conditional prior; 0 = unconditional
    num_classes: int = attrs.field(default=0, validator=non_negative)
    #: probability of replacing a label by the null class in training (needed for cfg_scale != 1)
    label_dropout: float = attrs.field(default=0.0, validator=fraction)

    def __attrs_post_init__(self) -> None:
        if len(self.grid_size) != 2:
            raise ValueError(f"grid_size must be (rows, columns), got {tuple(self.grid_size)!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.label_dropout > 0 and self.num_classes == 0:
            raise ValueError(
                "label_dropout > 0 needs num_classes > 0: it trains the null class that "
                "classifier-free guidance uses"
            )


def _prior_kwargs(config: TransformerPriorConfig) -> dict[str, Any]:
    """The prior's keyword arguments: every field of ``config`` (the names match), ``grid_size`` a tuple."""
    return {**attrs.asdict(config, recurse=False), "grid_size": tuple(config.grid_size)}


# -- gpt -------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class GPTConfig(TransformerPriorConfig):
    """Autoregressive transformer prior over raster-ordered codes (KV cache, sliding window, guidance)."""

    #: rotary position embeddings (true) or learned absolute ones (false)
    rotary: bool = True


def build_gpt(config: GPTConfig):
    """Build a :class:`~vqtk_builtins.priors.gpt.GPTPrior` from ``[prior]``."""
    from vqtk_builtins.priors.gpt import GPTPrior

    return GPTPrior(**_prior_kwargs(config))


# -- maskgit -----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class MaskGITConfig(TransformerPriorConfig):
    """Bidirectional masked prior with MaskGIT iterative decoding (training-size grids only)."""

    #: decoding steps (sampling options may override)
    steps: int = attrs.field(default=8, validator=positive)
    #: fraction masked as a function of progress r: cos(pi/2 r) or 1 - r
    schedule: Literal["cosine", "linear"] = "cosine"
    #: Gumbel noise scale on token confidences at the first step, annealed to 0
    choice_temperature: float = attrs.field(default=4.5, validator=non_negative)


def build_maskgit(config: MaskGITConfig):
    """Build a :class:`~vqtk_builtins.priors.maskgit.MaskGITPrior` from ``[prior]``."""
    from vqtk_builtins.priors.maskgit import MaskGITPrior

    return MaskGITPrior(**_prior_kwargs(config))


def register_components(register) -> None:
    """Register the built-in priors under kind ``"prior"``."""
    register("prior", "gpt", config=GPTConfig, build=build_gpt,
             doc="autoregressive transformer over raster-ordered codes: KV cache, sliding window, class guidance")
    register("prior", "maskgit", config=MaskGITConfig, build=build_maskgit,
             doc="bidirectional masked transformer, MaskGIT iterative decoding (cosine/linear schedule)")
