"""Vector quantization with an exponential-moving-average codebook and dead-code replacement."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from vector_quantize_pytorch import VectorQuantize

from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)


class EMAVectorQuantizer(Quantizer):
    """Nearest-code quantization whose codebook follows the latents by EMA (VQ-VAE-2).

    The codebook is a buffer, not a parameter: each training step moves every
    code towards the mean of the latents assigned to it (``decay``), and codes
    whose running usage count falls below ``threshold_ema_dead_code`` are
    replaced by latents from the batch. The loss is the commitment term
    ``beta * mse(z, sg(e))`` in training and zero in eval mode.

    Args:
        dim: channels of the latents.
        codebook_size: number of codes.
        beta: weight of the commitment term.
        decay: EMA decay of the codebook statistics, in (0, 1).
        eps: Laplace smoothing of the code counts.
        threshold_ema_dead_code: usage count below which a code is replaced (0 disables).
        kmeans_init: initialise the codebook by k-means on the first batch.
        kmeans_iters: k-means iterations.
        codebook_dim: dimension of the codes; smaller than ``dim`` adds learned
            linear projections in and out.
        use_cosine_sim: l2-normalised latents and codes.
        sync_codebook: all-reduce EMA, k-means and dead-code statistics across processes.
    """

    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int,
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        threshold_ema_dead_code: float = 2.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        codebook_dim: Optional[int] = None,
        use_cosine_sim: bool = False,
        sync_codebook: bool = False,
    ):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.num_codebooks = 1
        self.vq = VectorQuantize(
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
            rotation_trick=False,
            straight_through=False,
            sync_codebook=sync_codebook,
        )

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents (updating the codebook in training mode)."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        q, idx, loss, parts = self.vq(tokens, return_loss_breakdown=True)
        return QuantizerOutput(
            quantized=from_tokens(q, grid),
            indices=indices_to_grid(idx, grid),
            loss=loss.sum(),  # a fresh scalar, never the library's shared zero buffer
            metrics={"commitment": parts.commitment.detach()},
        )

    @torch.no_grad()
    def restart_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Set codes ``code_ids`` to latents ``vectors`` ``(n, dim)`` (as ``quantize`` receives them).

        Used by vqtk's codebook-health tracker to revive dead codes; their EMA
        statistics are reset to the new code.
        """
        cb = self.vq._codebook
        ids = code_ids.to(cb.embed.device, torch.long)
        x = self.vq.project_in(vectors.to(cb.embed.device, cb.embed.dtype))
        if cb.use_cosine_sim:
            x = F.normalize(x, dim=-1)
        cb.embed.data[0, ids] = x
        cb.cluster_size.data[0, ids] = cb.reset_cluster_size
        cb.embed_avg.data[0, ids] = x * cb.reset_cluster_size

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``(B, h, w)`` indices, as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, 1, type(self).__name__)
        return from_tokens(self.vq.get_output_from_indices(idx), grid)
