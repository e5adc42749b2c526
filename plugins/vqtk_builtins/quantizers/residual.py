"""Residual vector quantization: each of ``Q`` codebooks quantizes what the previous ones left."""

from __future__ import annotations

from typing import Optional

import torch
from vector_quantize_pytorch import ResidualVQ

from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)


class ResidualVectorQuantizer(Quantizer):
    """``num_quantizers`` EMA codebooks applied in turn to the residual (SoundStream, RQ-VAE).

    Indices are ``(B, h, w, Q)``; the quantized latent is the sum of the ``Q``
    chosen codes. The loss is the sum over layers of ``beta * mse(r, sg(e))``
    (training only); each layer's term is logged as ``loss_q{i}``.

    Args:
        dim: channels of the latents.
        num_quantizers: number of residual layers ``Q``.
        codebook_size: codes per layer.
        beta: weight of each layer's commitment term.
        decay: EMA decay of the codebook statistics.
        eps: Laplace smoothing of the code counts.
        threshold_ema_dead_code: usage count below which a code is replaced (0 disables).
        kmeans_init: initialise each codebook by k-means on the first batch.
        kmeans_iters: k-means iterations.
        codebook_dim: dimension of the codes (learned projections when smaller than ``dim``).
        sync_codebook: all-reduce codebook statistics across processes.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        threshold_ema_dead_code: float = 2.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        codebook_dim: Optional[int] = None,
        sync_codebook: bool = False,
    ):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.num_codebooks = num_quantizers
        self.rvq = ResidualVQ(
            dim=dim,
            num_quantizers=num_quantizers,
            codebook_size=codebook_size,
            codebook_dim=codebook_dim,
            decay=decay,
            eps=eps,
            threshold_ema_dead_code=threshold_ema_dead_code,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            commitment_weight=beta,
            rotation_trick=False,
            sync_codebook=sync_codebook,
        )

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents into ``(B, h, w, Q)`` indices."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        q, idx, losses = self.rvq(tokens)
        losses = losses.reshape(-1)
        metrics = {f"loss_q{i}": losses[i].detach() for i in range(self.num_codebooks)}
        return QuantizerOutput(
            quantized=from_tokens(q, grid),
            indices=indices_to_grid(idx, grid),
            loss=losses.sum(),
            metrics=metrics,
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Summed codes for ``(B, h, w, Q)`` indices, as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, self.num_codebooks, type(self).__name__)
        return from_tokens(self.rvq.get_output_from_indices(idx), grid)
