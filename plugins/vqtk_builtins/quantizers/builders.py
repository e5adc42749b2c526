"""Configs and build functions of the built-in quantizers (all backed by vector-quantize-pytorch).

The modules import vector_quantize_pytorch at their top, so they are imported
inside the build functions here, keeping ``vqtk list`` fast.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import attrs

from vqtk.config import each, non_empty, non_negative, positive

#: Largest implicit codebook of FSQ / LFQ: both libraries materialise every
#: code at construction, and code statistics count every code each step.
MAX_IMPLICIT_CODES = 2**20


def at_least(low: int):
    """Validator: number >= ``low`` (``None`` passes)."""

    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if value is not None and not value >= low:
            raise ValueError(f"must be >= {low}, got {value!r}")

    return check


def open_unit_interval(_inst: Any, _attr: Any, value: Any) -> None:
    """Validator: number strictly between 0 and 1."""
    if value is not None and not 0 < value < 1:
        raise ValueError(f"must be strictly between 0 and 1, got {value!r}")


def _check_codebook_dim(codebook_dim: Optional[int], dim: int) -> None:
    if codebook_dim is not None and isinstance(dim, int) and codebook_dim > dim:
        raise ValueError(
            f"codebook_dim ({codebook_dim}) must be <= dim ({dim}): "
            "the codebook is a low-dimensional factorisation of the latent"
        )


def _sync(requested: bool, where: str, learnable_with_data_init: bool = False) -> bool:
    from vqtk_builtins.quantizers.ddp import resolve_sync_codebook

    return resolve_sync_codebook(requested, where, learnable_with_data_init)


# -- fields shared by the codebook quantizers ------------------------------------------------


@attrs.define(kw_only=True)
class _CodebookFields:
    """Latent width, codebook size and commitment weight of a codebook quantizer."""

    #: channels of the latents
    dim: int = attrs.field(default=256, validator=positive)
    #: number of codes (per layer, for residual)
    codebook_size: int = attrs.field(default=1024, validator=positive)
    #: weight of the commitment term mse(z, sg(e)); the codebook term has weight 1
    beta: float = attrs.field(default=0.25, validator=non_negative)


@attrs.define(kw_only=True)
class _DataInitFields(_CodebookFields):
    """Codes set from the data (k-means at the start, dead codes later), optionally factorised."""

    #: code dimension; smaller than dim adds learned projections (factorised codebook)
    codebook_dim: Optional[int] = attrs.field(default=None, validator=positive)
    #: initialise the codebook by k-means on the first batch
    kmeans_init: bool = False
    kmeans_iters: int = attrs.field(default=10, validator=positive)
    #: replace codes whose running usage count falls below this by recent encoder outputs
    #: (0: never); at 0 the factorized quick start's codebook collapsed to one code within 50 steps
    threshold_ema_dead_code: float = attrs.field(default=2.0, validator=non_negative)
    #: all-reduce EMA / k-means / dead-code statistics across processes. Off under DDP, each
    #: process rewrites its own gradient-trained codebook (vq, factorized) with kmeans_init or
    #: dead codes, and DDP's buffer broadcast keeps rank 0's EMA codebook (ema_vq, residual).
    #: Takes effect only if torch.distributed is initialised before the quantizer is built
    sync_codebook: bool = False

    def __attrs_post_init__(self) -> None:
        _check_codebook_dim(self.codebook_dim, self.dim)


@attrs.define(kw_only=True)
class _GradientCodebookFields(_DataInitFields):
    """A gradient-trained codebook (vq, factorized)."""

    #: decay of the running usage counts used for dead-code replacement
    dead_code_decay: float = attrs.field(default=0.8, validator=open_unit_interval)
    #: rotation-trick gradients (arXiv 2410.06424) instead of straight-through
    rotation_trick: bool = False


@attrs.define(kw_only=True)
class _EMACodebookFields(_DataInitFields):
    """An EMA-updated codebook (ema_vq, residual)."""

    #: EMA decay of the codebook statistics
    decay: float = attrs.field(default=0.99, validator=open_unit_interval)
    #: Laplace smoothing of the code counts
    eps: float = attrs.field(default=1e-5, validator=positive)


# -- vq ----------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class VQConfig(_GradientCodebookFields):
    """VQ with a gradient-trained codebook; loss mse(sg(z), e) + beta * mse(z, sg(e)) (taming semantics).

    The commitment weight ``beta`` is on the encoder-side term, as in the
    VQ-VAE paper (taming's legacy quantizer put it on the codebook term).
    """

    #: l2-normalise latents and codes (nearest code by cosine similarity)
    use_cosine_sim: bool = False
    #: replace codes whose running usage count falls below this (0, the default here: never)
    threshold_ema_dead_code: float = attrs.field(default=0.0, validator=non_negative)


def _gradient_codebook_kwargs(config: _GradientCodebookFields, name: str) -> dict:
    """The :class:`~vqtk_builtins.quantizers.vq.VectorQuantizer` arguments that vq and factorized share."""
    return dict(
        dim=config.dim,
        codebook_size=config.codebook_size,
        beta=config.beta,
        codebook_dim=config.codebook_dim,
        kmeans_init=config.kmeans_init,
        kmeans_iters=config.kmeans_iters,
        threshold_ema_dead_code=config.threshold_ema_dead_code,
        dead_code_decay=config.dead_code_decay,
        rotation_trick=config.rotation_trick,
        sync_codebook=_sync(
            config.sync_codebook,
            f"quantizer {name}",
            learnable_with_data_init=config.kmeans_init or config.threshold_ema_dead_code > 0,
        ),
    )


def build_vq(config: VQConfig):
    """Build a :class:`~vqtk_builtins.quantizers.vq.VectorQuantizer` from ``[model.quantizer]``."""
    from vqtk_builtins.quantizers.vq import VectorQuantizer

    return VectorQuantizer(use_cosine_sim=config.use_cosine_sim, **_gradient_codebook_kwargs(config, "vq"))


# -- factorized ----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class FactorizedConfig(_GradientCodebookFields):
    """LlamaGen-style quantizer: l2-normalised codes in a low-dimensional factorised codebook."""

    #: number of codes (a larger default than the other quantizers')
    codebook_size: int = attrs.field(default=16384, validator=positive)
    #: dimension of the l2-normalised codes
    codebook_dim: int = attrs.field(default=8, validator=positive)
    #: weight of the codebook-entropy (diversity) loss; 0 disables it
    entropy_loss_weight: float = attrs.field(default=0.0, validator=non_negative)
    #: inverse temperature of the soft assignment behind the entropy loss
    entropy_temperature: float = attrs.field(default=100.0, validator=positive)


def build_factorized(config: FactorizedConfig):
    """Build a cosine-similarity, factorised :class:`~vqtk_builtins.quantizers.vq.VectorQuantizer`."""
    from vqtk_builtins.quantizers.vq import VectorQuantizer

    return VectorQuantizer(
        use_cosine_sim=True,
        entropy_loss_weight=config.entropy_loss_weight,
        entropy_temperature=config.entropy_temperature,
        **_gradient_codebook_kwargs(config, "factorized"),
    )


# -- ema_vq --------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class EMAVQConfig(_EMACodebookFields):
    """Vector quantizer with an EMA-updated codebook and dead-code replacement (VQ-VAE-2)."""

    use_cosine_sim: bool = False


def build_ema_vq(config: EMAVQConfig):
    """Build an :class:`~vqtk_builtins.quantizers.ema_vq.EMAVectorQuantizer`."""
    from vqtk_builtins.quantizers.ema_vq import EMAVectorQuantizer

    return EMAVectorQuantizer(
        dim=config.dim,
        codebook_size=config.codebook_size,
        beta=config.beta,
        decay=config.decay,
        eps=config.eps,
        threshold_ema_dead_code=config.threshold_ema_dead_code,
        kmeans_init=config.kmeans_init,
        kmeans_iters=config.kmeans_iters,
        codebook_dim=config.codebook_dim,
        use_cosine_sim=config.use_cosine_sim,
        sync_codebook=_sync(config.sync_codebook, "quantizer ema_vq"),
    )


# -- residual ------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class ResidualConfig(_EMACodebookFields):
    """Residual VQ: num_quantizers EMA codebooks on successive residuals; indices (B, h, w, Q)."""

    #: number of residual layers Q (indices per position)
    num_quantizers: int = attrs.field(default=4, validator=positive)


def build_residual(config: ResidualConfig):
    """Build a :class:`~vqtk_builtins.quantizers.residual.ResidualVectorQuantizer`."""
    from vqtk_builtins.quantizers.residual import ResidualVectorQuantizer

    return ResidualVectorQuantizer(
        dim=config.dim,
        num_quantizers=config.num_quantizers,
        codebook_size=config.codebook_size,
        beta=config.beta,
        decay=config.decay,
        eps=config.eps,
        threshold_ema_dead_code=config.threshold_ema_dead_code,
        kmeans_init=config.kmeans_init,
        kmeans_iters=config.kmeans_iters,
        codebook_dim=config.codebook_dim,
        sync_codebook=_sync(config.sync_codebook, "quantizer residual"),
    )


# -- fsq -----------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class FSQConfig:
    """Finite scalar quantization: prod(levels) implicit codes, no codebook to learn, no loss."""

    #: values per quantized channel, each >= 2; codebook_size = prod(levels)
    levels: tuple[int, ...] = attrs.field(
        default=(8, 5, 5, 5), validator=[non_empty, each(at_least(2))]
    )
    #: channels of the latents; absent = len(levels) (no projection)
    dim: Optional[int] = attrs.field(default=None, validator=positive)
    #: symmetric rounding (arXiv 2411.19842); required when a level is 2
    preserve_symmetry: bool = False

    def __attrs_post_init__(self) -> None:
        levels = [n for n in self.levels if isinstance(n, int)]
        if 2 in levels and not self.preserve_symmetry:
            raise ValueError(
                "levels of 2 need preserve_symmetry = true (plain FSQ rounding has no 2-value grid)"
            )
        if all(n >= 2 for n in levels) and math.prod(levels) > MAX_IMPLICIT_CODES:
            raise ValueError(
                f"levels give {math.prod(levels)} codes, more than the {MAX_IMPLICIT_CODES} supported"
            )


def build_fsq(config: FSQConfig):
    """Build a :class:`~vqtk_builtins.quantizers.fsq.FiniteScalarQuantizer`."""
    from vqtk_builtins.quantizers.fsq import FiniteScalarQuantizer

    return FiniteScalarQuantizer(
        levels=config.levels, dim=config.dim, preserve_symmetry=config.preserve_symmetry
    )


# -- lfq -----------------------------------------------------------------------------------


def _power_of_two(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None and (value < 2 or value & (value - 1)):
        hint = f" (e.g. {2 ** max(1, math.ceil(math.log2(value)))})" if value > 0 else ""
        raise ValueError(f"must be a power of two >= 2, got {value!r}{hint}")


@attrs.define(kw_only=True)
class LFQConfig:
    """Lookup-free quantization (MAGVIT-2): one sign bit per channel, entropy + commitment losses.

    Give ``codebook_size`` (a power of two), ``dim`` or both: absent
    ``codebook_size`` means ``2 ** dim``, absent ``dim`` means ``log2(codebook_size)``.
    """

    #: channels of the latents; absent = log2(codebook_size) (no projection)
    dim: Optional[int] = attrs.field(default=None, validator=positive)
    #: number of codes, a power of two; absent = 2 ** dim
    codebook_size: Optional[int] = attrs.field(default=None, validator=_power_of_two)
    #: weight of (per-sample entropy - diversity_gamma * codebook entropy)
    entropy_loss_weight: float = attrs.field(default=0.1, validator=non_negative)
    #: weight of the commitment term mse(z, sg(q))
    commitment_loss_weight: float = attrs.field(default=0.25, validator=non_negative)
    diversity_gamma: float = attrs.field(default=1.0, validator=non_negative)
    #: inverse temperature of the soft assignment behind the entropy terms
    inv_temperature: float = attrs.field(default=100.0, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.dim is None and self.codebook_size is None:
            raise ValueError("set codebook_size (a power of two) or dim (the number of bits)")
        size = self.codebook_size if self.codebook_size is not None else 2 ** min(self.dim, 64)
        if isinstance(size, int) and size > MAX_IMPLICIT_CODES:
            what = "codebook_size" if self.codebook_size is not None else f"2 ** dim ({self.dim} bits)"
            raise ValueError(
                f"{what} is more than the {MAX_IMPLICIT_CODES} codes supported; "
                "set codebook_size to project the latents to fewer bits"
            )


def build_lfq(config: LFQConfig):
    """Build a :class:`~vqtk_builtins.quantizers.lfq.LookupFreeQuantizer`."""
    from vqtk_builtins.quantizers.lfq import LookupFreeQuantizer

    return LookupFreeQuantizer(
        dim=config.dim,
        codebook_size=config.codebook_size,
        entropy_loss_weight=config.entropy_loss_weight,
        commitment_loss_weight=config.commitment_loss_weight,
        diversity_gamma=config.diversity_gamma,
        inv_temperature=config.inv_temperature,
    )


# -- simvq ---------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class SimVQConfig(_CodebookFields):
    """SimVQ: a frozen random codebook through a learned linear map (no collapse), VQ-VAE loss."""

    #: rotation-trick gradients (the library's default) instead of straight-through
    rotation_trick: bool = True
    #: dimension of the frozen random codes; absent = dim
    frozen_codebook_dim: Optional[int] = attrs.field(default=None, validator=positive)


def build_simvq(config: SimVQConfig):
    """Build a :class:`~vqtk_builtins.quantizers.simvq.SimVectorQuantizer`."""
    from vqtk_builtins.quantizers.simvq import SimVectorQuantizer

    return SimVectorQuantizer(
        dim=config.dim,
        codebook_size=config.codebook_size,
        beta=config.beta,
        rotation_trick=config.rotation_trick,
        frozen_codebook_dim=config.frozen_codebook_dim,
    )


def _line(config: type) -> str:
    return (config.__doc__ or "").strip().splitlines()[0]


def register_components(register) -> None:
    """Register every built-in quantizer under kind ``"quantizer"`` (docs: each config's first line)."""
    register("quantizer", "vq", config=VQConfig, build=build_vq, doc=_line(VQConfig))
    register("quantizer", "ema_vq", config=EMAVQConfig, build=build_ema_vq, doc=_line(EMAVQConfig))
    register(
        "quantizer", "factorized", config=FactorizedConfig, build=build_factorized, doc=_line(FactorizedConfig)
    )
    register("quantizer", "residual", config=ResidualConfig, build=build_residual, doc=_line(ResidualConfig))
    register("quantizer", "fsq", config=FSQConfig, build=build_fsq, doc=_line(FSQConfig))
    register("quantizer", "lfq", config=LFQConfig, build=build_lfq, doc=_line(LFQConfig))
    register("quantizer", "simvq", config=SimVQConfig, build=build_simvq, doc=_line(SimVQConfig))
