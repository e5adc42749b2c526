"""Vector quantization with a codebook learned by gradient (VQ-VAE / taming semantics).

Also the LlamaGen-style factorised quantizer (:data:`FactorizedQuantizer`,
registered as ``factorized``): the same module with other defaults, a
low-dimensional (``codebook_dim``) codebook of l2-normalised codes.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import non_negative, open_unit_interval, positive
from vqtk.interfaces import Quantizer, QuantizerOutput, RestartableQuantizer
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)


def check_codebook_dim(config: Any) -> None:
    """Recipe check of the codebook quantizers: a factorised codebook is no wider than the latent."""
    if config.codebook_dim is not None and config.codebook_dim > config.dim:
        raise ValueError(
            f"codebook_dim ({config.codebook_dim}) must be <= dim ({config.dim}): "
            "the codebook is a low-dimensional factorisation of the latent"
        )


class L2Norm(nn.Module):
    """Normalises the last dimension to unit length (the codebook "bridge" for cosine codes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class VectorQuantizer(Quantizer, RestartableQuantizer):
    """VQ with a gradient-trained codebook; loss mse(sg(z), e) + beta * mse(z, sg(e)) (taming semantics).

    Nearest-code quantization; the codebook is a parameter trained by the
    optimizer. With ``z`` the (projected, optionally l2-normalised) latent and
    ``e`` its nearest code, the loss is ``mse(sg(z), e) + beta * mse(z, sg(e))``:
    the codebook term moves codes towards the latents, the commitment term
    (weighted by ``beta``) keeps the encoder near its codes. This is VQ-VAE's
    loss, not taming's legacy one, which swapped the weight onto the codebook
    term. ``quantized`` carries straight-through gradients to the input (or the
    rotation trick's, with ``rotation_trick``).

    Args:
        dim: channels of the latents.
        codebook_size: number of codes.
        beta: weight of the commitment term mse(z, sg(e)); the codebook term has weight 1.
        codebook_dim: code dimension; smaller than dim adds learned linear projections
            in and out (factorised codebook, as in ViT-VQGAN and LlamaGen); absent = dim.
        use_cosine_sim: l2-normalise latents and codes (nearest code by cosine similarity).
        kmeans_init: initialise the codebook by k-means on the first batch.
        kmeans_iters: k-means iterations for kmeans_init.
        threshold_ema_dead_code: replace codes whose running usage count falls below this by
            recent encoder outputs (0: never); at 0 the factorized quick start's codebook
            collapsed to one code within 50 steps.
        dead_code_decay: decay of the running usage counts used for dead-code replacement.
        rotation_trick: rotation-trick gradients (arXiv 2410.06424) instead of straight-through.
        entropy_loss_weight: weight of the codebook-entropy (diversity) loss, the negative
            entropy of the batch-averaged soft assignment; 0 disables it.
        entropy_temperature: inverse temperature of the soft assignment behind the entropy loss.
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
        sync_codebook: bool = False,
    ):
        super().__init__()
        # imported here, not at module level: vector_quantize_pytorch takes 1.4 s to import,
        # and `vqtk list` imports this module to register it
        from vector_quantize_pytorch import VectorQuantize

        from vqtk_builtins.quantizers.ddp import resolve_sync_codebook

        self.dim = dim
        self.codebook_size = codebook_size
        self.num_codebooks = 1
        self.beta = beta
        self.codebook_dim = codebook_dim or dim
        self.use_cosine_sim = use_cosine_sim
        self.entropy_loss_weight = entropy_loss_weight
        factorised = self.codebook_dim != dim
        self.project_in = nn.Linear(dim, self.codebook_dim) if factorised else nn.Identity()
        self.project_out = nn.Linear(self.codebook_dim, dim) if factorised else nn.Identity()
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
            codebook_diversity_loss_weight=entropy_loss_weight,
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

    def _project(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.project_in(tokens)
        return F.normalize(x, dim=-1) if self.use_cosine_sim else x

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents; see the class docstring for the loss."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        x = self._project(tokens)
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
            loss = loss + self.entropy_loss_weight * parts.codebook_diversity
            metrics["entropy_loss"] = parts.codebook_diversity.detach()
        quantized = from_tokens(self.project_out(q), grid)
        return QuantizerOutput(
            quantized=quantized, indices=indices_to_grid(idx, grid), loss=loss, metrics=metrics
        )

    @torch.no_grad()
    def restart_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Set codes ``code_ids`` to latents ``vectors`` ``(n, dim)`` (as ``quantize`` receives them).

        Used by vqtk's codebook-health tracker to revive dead codes; their EMA usage
        counts are reset so the library's own dead-code check leaves them alone.
        """
        cb = self.vq._codebook
        ids = code_ids.to(cb.embed.device, torch.long)
        x = self._project(vectors.to(cb.embed.device, cb.embed.dtype))
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
