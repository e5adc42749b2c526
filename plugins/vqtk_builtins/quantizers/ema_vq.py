"""Vector quantization with exponential-moving-average codebooks: one (``ema_vq``) or residual layers (``residual``)."""

from __future__ import annotations

import functools
from typing import Annotated, Optional

import torch
import torch.nn.functional as F

from vqtk.config import non_negative, open_unit_interval, positive
from vqtk.interfaces import Quantizer, QuantizerOutput, RestartableQuantizer
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)


class EMAVectorQuantizer(Quantizer, RestartableQuantizer):
    """Vector quantizer with an EMA-updated codebook and dead-code replacement (VQ-VAE-2).

    The codebook is a buffer, not a parameter: each training step moves every
    code towards the mean of the latents assigned to it (``decay``), and codes
    whose running usage count falls below ``threshold_ema_dead_code`` are
    replaced by latents from the batch. The loss is the commitment term
    ``beta * mse(z, sg(e))`` in training and zero in eval mode.

    With ``num_quantizers`` ``Q > 1`` it is residual VQ (SoundStream, RQ-VAE;
    registered as ``residual``, :data:`ResidualVectorQuantizer`): ``Q`` such
    codebooks applied in turn to what the previous ones left. Indices are then
    ``(B, h, w, Q)``, the quantized latent is the sum of the ``Q`` chosen codes,
    and the loss is the sum over layers of ``beta * mse(r, sg(e))``, each
    layer's term logged as ``loss_q{i}``. Each layer passes straight-through
    gradients to its residual, so the input receives the sum of the ``Q``
    layers' gradients: ``Q`` times the output's (vector-quantize-pytorch's
    ``ResidualVQ``); with ``rotation_trick``, the sum of each layer's rotated
    gradient.

    Args:
        dim: channels of the latents.
        codebook_size: number of codes (per layer, for residual).
        num_quantizers: number of residual layers Q (indices per position); 1 is plain
            EMA VQ with indices (B, h, w).
        beta: weight of the commitment term mse(z, sg(e)) (of each layer's).
        decay: EMA decay of the codebook statistics.
        eps: Laplace smoothing of the code counts.
        threshold_ema_dead_code: replace codes whose running usage count falls below this by
            recent encoder outputs (0: never).
        kmeans_init: initialise the codebook by k-means on the first batch.
        kmeans_iters: k-means iterations for kmeans_init.
        codebook_dim: code dimension; smaller than dim adds learned linear projections
            in and out (factorised codebook); absent = dim.
        use_cosine_sim: l2-normalise latents and codes (nearest code by cosine similarity).
        rotation_trick: rotation-trick gradients instead of straight-through (Fifty et al. 2024,
            arXiv 2410.06424): the input's gradient is the output's, rotated by the rotation
            taking z's direction to its code's and scaled by ||e|| / ||z||; for residual
            layers, each layer's gradient to its residual.
        sync_codebook: all-reduce EMA, k-means and dead-code statistics across processes. Off
            under DDP, DDP's buffer broadcast keeps rank 0's codebook. Takes effect only if
            torch.distributed is initialised before the quantizer is built.
    """

    def __init__(
        self,
        *,
        dim: Annotated[int, positive] = 256,
        codebook_size: Annotated[int, positive] = 1024,
        num_quantizers: Annotated[int, positive] = 1,
        beta: Annotated[float, non_negative] = 0.25,
        decay: Annotated[float, open_unit_interval] = 0.99,
        eps: Annotated[float, positive] = 1e-5,
        threshold_ema_dead_code: Annotated[float, non_negative] = 2.0,
        kmeans_init: bool = False,
        kmeans_iters: Annotated[int, positive] = 10,
        codebook_dim: Annotated[Optional[int], positive] = None,
        use_cosine_sim: bool = False,
        rotation_trick: bool = False,
        sync_codebook: bool = False,
    ):
        super().__init__()
        # imported here, not at module level: vector_quantize_pytorch takes 1.4 s to import,
        # and `vqtk list` imports this module to register it
        from vector_quantize_pytorch import ResidualVQ, VectorQuantize

        from vqtk_builtins.quantizers.ddp import resolve_sync_codebook

        self.dim = dim
        self.codebook_size = codebook_size
        self.num_codebooks = num_quantizers
        codebook = dict(
            dim=dim,
            codebook_size=codebook_size,
            codebook_dim=codebook_dim,
            decay=decay,
            eps=eps,
            threshold_ema_dead_code=threshold_ema_dead_code,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            use_cosine_sim=use_cosine_sim,
            commitment_weight=beta,
            ema_update=True,
            learnable_codebook=False,
            rotation_trick=rotation_trick,
            straight_through=False,
            sync_codebook=resolve_sync_codebook(sync_codebook, f"quantizer {type(self).__name__}"),
        )
        # one codebook is `vq`, residual layers `rvq`: the state-dict keys of checkpoints
        if num_quantizers == 1:
            self.vq = VectorQuantize(**codebook)
        else:
            self.rvq = ResidualVQ(num_quantizers=num_quantizers, **codebook)

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents (updating the codebooks in training mode)."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        if self.num_codebooks == 1:
            q, idx, loss, parts = self.vq(tokens, return_loss_breakdown=True)
            loss = loss.sum()  # a fresh scalar, never the library's shared zero buffer
            metrics = {"commitment": parts.commitment.detach()}
        else:
            q, idx, losses = self.rvq(tokens)
            losses = losses.reshape(-1)
            loss = losses.sum()
            metrics = {f"loss_q{i}": losses[i].detach() for i in range(self.num_codebooks)}
        return QuantizerOutput(
            quantized=from_tokens(q, grid), indices=indices_to_grid(idx, grid), loss=loss, metrics=metrics
        )

    def supports_restarts(self) -> bool:
        """Dead-code restarts with one codebook only.

        Not for residual layers, whose codes live in the space of the
        residuals rather than of the latents ``quantize`` receives.
        """
        return self.num_codebooks == 1

    @torch.no_grad()
    def restart_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Set codes ``code_ids`` to latents ``vectors`` ``(n, dim)`` (as ``quantize`` receives them).

        Their EMA statistics are reset to the new code. One codebook only (see
        :meth:`supports_restarts`).
        """
        if not self.supports_restarts():
            raise ValueError(f"{type(self).__name__} with {self.num_codebooks} residual layers cannot restart codes")
        cb = self.vq._codebook
        ids = code_ids.to(cb.embed.device, torch.long)
        x = self.vq.project_in(vectors.to(cb.embed.device, cb.embed.dtype))
        if cb.use_cosine_sim:
            x = F.normalize(x, dim=-1)
        cb.embed.data[0, ids] = x
        cb.cluster_size.data[0, ids] = cb.reset_cluster_size
        cb.embed_avg.data[0, ids] = x * cb.reset_cluster_size

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``(B, h, w)`` indices (summed codes for ``(B, h, w, Q)``), as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, self.num_codebooks, type(self).__name__)
        library = self.vq if self.num_codebooks == 1 else self.rvq
        return from_tokens(library.get_output_from_indices(idx), grid)


#: ``residual``: an EMAVectorQuantizer with 4 residual layers
ResidualVectorQuantizer = functools.partial(EMAVectorQuantizer, num_quantizers=4)
