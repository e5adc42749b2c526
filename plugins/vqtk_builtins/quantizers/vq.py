"""Vector quantization with a codebook learned by gradient (VQ-VAE / taming semantics).

Also the LlamaGen-style factorised quantizer (:data:`FactorizedQuantizer`,
registered as ``factorized``): the same module with other defaults, a
low-dimensional (``codebook_dim``) codebook of l2-normalised codes; and the
helpers the other codebook quantizers share (the ``codebook_dim`` check and
projections, the l2-norm bridge).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import non_negative, open_unit_interval, positive
from vqtk.interfaces import Quantizer, QuantizerOutput, RestartableQuantizer
from vqtk_builtins.quantizers.entropy import entropy_penalty
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)

#: ``entropy_penalty`` choices: the library's codebook-entropy loss, or LlamaGen's per-sample minus codebook entropy
EntropyPenalty = Literal["codebook_diversity", "llamagen"]


def check_codebook_dim(config: Any) -> None:
    """Recipe check of the codebook quantizers: a factorised codebook is no wider than the latent."""
    if config.codebook_dim is not None and config.codebook_dim > config.dim:
        raise ValueError(
            f"codebook_dim ({config.codebook_dim}) must be <= dim ({config.dim}): "
            "the codebook is a low-dimensional factorisation of the latent"
        )


def check_vq(config: Any) -> None:
    """Recipe check of ``vq`` / ``factorized``: check_codebook_dim; entropy weights only with LlamaGen's form."""
    check_codebook_dim(config)
    if config.entropy_penalty == "codebook_diversity" and (
        config.sample_entropy_weight != 1.0 or config.codebook_entropy_weight != 1.0
    ):
        raise ValueError(
            "sample_entropy_weight and codebook_entropy_weight apply to entropy_penalty = \"llamagen\"; "
            "the \"codebook_diversity\" penalty has fixed weights"
        )


class CodeSpace:
    """Mixin of the single-codebook quantizers (``vq``, ``simvq``, ``ibq``): the space their codes live in.

    Latents are projected to ``codebook_dim`` channels by a learned linear map
    (``project_in``; ``project_out`` maps codes back), identities when
    ``codebook_dim`` is ``dim``, and l2-normalised when ``use_cosine_sim``.
    """

    def init_code_space(
        self, dim: int, codebook_size: int, codebook_dim: Optional[int], use_cosine_sim: bool
    ) -> None:
        """Set ``dim``, ``codebook_size``, ``num_codebooks`` (1), ``codebook_dim``, ``use_cosine_sim``, projections."""
        self.dim, self.codebook_size, self.num_codebooks = dim, codebook_size, 1
        self.codebook_dim = codebook_dim or dim
        self.use_cosine_sim = use_cosine_sim
        if self.codebook_dim == dim:
            self.project_in, self.project_out = nn.Identity(), nn.Identity()
        else:
            self.project_in, self.project_out = nn.Linear(dim, self.codebook_dim), nn.Linear(self.codebook_dim, dim)

    def to_code_space(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(..., dim)`` latents as ``(..., codebook_dim)`` vectors (projected, l2-normalised if cosine)."""
        x = self.project_in(tokens)
        return F.normalize(x, dim=-1) if self.use_cosine_sim else x


class L2Norm(nn.Module):
    """Normalises the last dimension to unit length (the codebook "bridge" for cosine codes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class VectorQuantizer(CodeSpace, Quantizer, RestartableQuantizer):
    """VQ with a gradient-trained codebook; loss mse(sg(z), e) + beta * mse(z, sg(e)) (taming semantics).

    Nearest-code quantization; the codebook is a parameter trained by the
    optimizer. With ``z`` the (projected, optionally l2-normalised) latent and
    ``e`` its nearest code, the loss is ``mse(sg(z), e) + beta * mse(z, sg(e))``:
    the codebook term moves codes towards the latents, the commitment term
    (weighted by ``beta``) keeps the encoder near its codes. This is VQ-VAE's
    loss, not taming's legacy one, which swapped the weight onto the codebook
    term. ``quantized`` carries straight-through gradients to the input (or the
    rotation trick's, with ``rotation_trick``). In training, ``entropy_loss_weight``
    adds an entropy penalty on the soft assignment of latents to codes
    (``entropy_penalty``: the library's codebook diversity, or LlamaGen's).

    Args:
        dim: channels of the latents.
        codebook_size: number of codes.
        beta: weight of the commitment term mse(z, sg(e)); the codebook term has weight 1.
        codebook_dim: code dimension; smaller than dim adds learned linear projections
            in and out (factorised codebook, as in ViT-VQGAN and LlamaGen); absent = dim.
        use_cosine_sim: l2-normalise latents and codes (nearest code by cosine similarity), as
            ViT-VQGAN (Yu et al. 2021) and LlamaGen do.
        kmeans_init: initialise the codebook by k-means on the first batch.
        kmeans_iters: k-means iterations for kmeans_init.
        threshold_ema_dead_code: replace codes whose running usage count falls below this by
            recent encoder outputs (0: never); at 0 the factorized quick start's codebook
            collapsed to one code within 50 steps.
        dead_code_decay: decay of the running usage counts used for dead-code replacement.
        rotation_trick: rotation-trick gradients instead of straight-through (Fifty et al. 2024,
            arXiv 2410.06424): the input's gradient is the output's, rotated by the rotation
            taking z's direction to its code's and scaled by ||e|| / ||z||.
        entropy_loss_weight: weight of the entropy penalty (entropy_penalty) on the soft
            assignment of latents to codes, in training; 0 disables it. LlamaGen's
            entropy_loss_ratio.
        entropy_temperature: inverse temperature of the soft assignment behind the entropy
            penalty: softmax(entropy_temperature * affinity). LlamaGen's temperature 0.01 is 100.
        entropy_penalty: "codebook_diversity" (vector-quantize-pytorch's): minus the entropy of
            the batch-averaged softmax(-||z - e|| * entropy_temperature). "llamagen"
            (LlamaGen's compute_entropy_loss, after MAGVIT): sample_entropy_weight * mean
            per-latent entropy - codebook_entropy_weight * entropy of the batch average, of
            softmax(-||z - e||^2 * entropy_temperature).
        sample_entropy_weight: weight of the mean per-latent entropy (minimised) in the "llamagen"
            penalty.
        codebook_entropy_weight: weight of the codebook (batch-averaged) entropy (maximised) in
            the "llamagen" penalty.
        sync_codebook: all-reduce k-means and dead-code statistics across processes. Off under
            DDP, each process rewrites its own codebook with kmeans_init or dead codes, and the
            codebooks drift apart. Takes effect only if torch.distributed is initialised before
            the quantizer is built.
    """

    #: State-dict names for checkpoint converters (the built-in ``taming`` converter maps
    #: taming-transformers' ``quantize.embedding.weight`` here): the codebook tensor, shaped
    #: ``(1, codebook_size, codebook_dim)``, and the prefix of the codebook library's usage
    #: statistics (k-means and dead-code bookkeeping), which the forward pass does not read.
    CODEBOOK_STATE: ClassVar[str] = "vq._codebook.embed"
    STATISTICS_STATE_PREFIX: ClassVar[str] = "vq._codebook."

    def __init__(
        self,
        *,
        dim: Annotated[int, positive] = 256,
        codebook_size: Annotated[int, positive] = 1024,
        beta: Annotated[float, non_negative] = 0.25,
        codebook_dim: Annotated[Optional[int], positive] = None,
        use_cosine_sim: bool = False,
        kmeans_init: bool = False,
        kmeans_iters: Annotated[int, positive] = 10,
        threshold_ema_dead_code: Annotated[float, non_negative] = 0.0,
        dead_code_decay: Annotated[float, open_unit_interval] = 0.8,
        rotation_trick: bool = False,
        entropy_loss_weight: Annotated[float, non_negative] = 0.0,
        entropy_temperature: Annotated[float, positive] = 100.0,
        entropy_penalty: EntropyPenalty = "codebook_diversity",
        sample_entropy_weight: Annotated[float, non_negative] = 1.0,
        codebook_entropy_weight: Annotated[float, non_negative] = 1.0,
        sync_codebook: bool = False,
    ):
        super().__init__()
        # imported here, not at module level: vector_quantize_pytorch takes 1.4 s to import,
        # and `vqtk list` imports this module to register it
        from vector_quantize_pytorch import VectorQuantize

        from vqtk_builtins.quantizers.ddp import resolve_sync_codebook

        self.beta = beta
        self.entropy_loss_weight = entropy_loss_weight
        self.entropy_temperature = entropy_temperature
        self.entropy_penalty = entropy_penalty
        self.sample_entropy_weight = sample_entropy_weight
        self.codebook_entropy_weight = codebook_entropy_weight
        self.init_code_space(dim, codebook_size, codebook_dim, use_cosine_sim)
        # The library refuses cosine similarity with a learnable codebook, so
        # cosine codes are a learnable raw codebook seen through an l2-norm
        # bridge, with latents l2-normalised here: Euclidean distance between
        # unit vectors ranks codes as cosine similarity does.
        self.bridge = L2Norm() if use_cosine_sim else None
        self.vq = VectorQuantize(
            dim=self.codebook_dim,
            codebook_size=codebook_size,
            learnable_codebook=True,
            ema_update=False,
            vq_bridge=self.bridge,
            commitment_weight=0.0,  # the loss is computed here, with beta on the commitment term
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code,
            decay=dead_code_decay,
            rotation_trick=rotation_trick,
            straight_through=False,
            # the library computes only its own penalty; LlamaGen's is computed here
            codebook_diversity_loss_weight=entropy_loss_weight if entropy_penalty == "codebook_diversity" else 0.0,
            codebook_diversity_temperature=entropy_temperature,
            sync_codebook=resolve_sync_codebook(
                sync_codebook,
                f"quantizer {type(self).__name__}",
                learnable_with_data_init=kmeans_init or threshold_ema_dead_code > 0,
            ),
        )

    def codes(self) -> torch.Tensor:
        """The codebook ``(codebook_size, codebook_dim)`` as quantization sees it (normalised if cosine)."""
        codebook = self.vq.codebook
        return self.bridge(codebook) if self.bridge is not None else codebook

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents; see the class docstring for the loss."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        x = self.to_code_space(tokens)
        # One token per "sequence": the library's diversity loss averages the
        # soft assignment over its batch axis, which must span every latent.
        flat = x.reshape(-1, 1, self.codebook_dim)
        q, idx, _, parts = self.vq(flat, return_loss_breakdown=True)
        q, idx = q.reshape(x.shape), idx.reshape(x.shape[:-1])
        e = self.codes()[idx]  # differentiable with respect to the codebook
        codebook_loss = F.mse_loss(e, x.detach())
        commitment = F.mse_loss(x, e.detach())
        loss = codebook_loss + self.beta * commitment
        metrics = {"codebook_loss": codebook_loss.detach(), "commitment": commitment.detach()}
        if self.entropy_loss_weight > 0 and self.training:
            if self.entropy_penalty == "llamagen":
                penalty, sample_h, codebook_h = self._llamagen_entropy(flat.reshape(-1, self.codebook_dim))
                metrics.update(sample_entropy=sample_h.detach(), codebook_entropy=codebook_h.detach())
            else:
                penalty = parts.codebook_diversity
            loss = loss + self.entropy_loss_weight * penalty
            metrics["entropy_loss"] = penalty.detach()
        quantized = from_tokens(self.project_out(q), grid)
        return QuantizerOutput(
            quantized=quantized, indices=indices_to_grid(idx, grid), loss=loss, metrics=metrics
        )

    def _llamagen_entropy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LlamaGen's entropy penalty of ``(n, codebook_dim)`` latents on affinities ``-||x - e||^2``."""
        codes = self.codes()
        # expanded as LlamaGen does (no sqrt: finite gradients where a latent sits on a code)
        squared = x.square().sum(-1, keepdim=True) + codes.square().sum(-1) - 2 * x @ codes.T
        return entropy_penalty(
            -squared, self.entropy_temperature, self.sample_entropy_weight, self.codebook_entropy_weight
        )

    @torch.no_grad()
    def restart_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Set codes ``code_ids`` to latents ``vectors`` ``(n, dim)`` (as ``quantize`` receives them).

        Used by vqtk's codebook-health tracker to revive dead codes; their EMA usage
        counts are reset so the library's own dead-code check leaves them alone.
        """
        cb = self.vq._codebook
        ids = code_ids.to(cb.embed.device, torch.long)
        x = self.to_code_space(vectors.to(cb.embed.device, cb.embed.dtype))
        cb.embed.data[0, ids] = x
        cb.cluster_size.data[0, ids] = cb.reset_cluster_size
        cb.embed_avg.data[0, ids] = x * cb.reset_cluster_size

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``(B, h, w)`` indices, as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, 1, type(self).__name__)
        return from_tokens(self.project_out(self.codes()[idx]), grid)


#: ``factorized``: a VectorQuantizer with LlamaGen's cosine codes in an 8-d codebook, dead-code replacement on
FactorizedQuantizer = functools.partial(
    VectorQuantizer, codebook_size=16384, codebook_dim=8, use_cosine_sim=True, threshold_ema_dead_code=2.0
)
