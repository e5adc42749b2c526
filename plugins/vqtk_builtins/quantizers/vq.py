"""Vector quantization with a codebook learned by gradient (VQ-VAE / taming semantics).

Also the LlamaGen-style factorised quantizer: the same module with a
low-dimensional (``codebook_dim``) codebook and l2-normalised codes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)


class L2Norm(nn.Module):
    """Normalises the last dimension to unit length (the codebook "bridge" for cosine codes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class VectorQuantizer(Quantizer):
    """Nearest-code quantization; the codebook is a parameter trained by the optimizer.

    With ``z`` the (projected, optionally l2-normalised) latent and ``e`` its
    nearest code, the loss is ``mse(sg(z), e) + beta * mse(z, sg(e))``: the
    codebook term moves codes towards the latents, the commitment term (weighted
    by ``beta``) keeps the encoder near its codes. This is VQ-VAE's loss, not
    taming's legacy one, which swapped the weight onto the codebook term.
    ``quantized`` carries straight-through gradients to the input (or the
    rotation trick's, with ``rotation_trick``).

    Args:
        dim: channels of the latents.
        codebook_size: number of codes.
        beta: weight of the commitment term.
        codebook_dim: dimension of the codes; when smaller than ``dim``, latents
            are projected in (and the codes back out) by learned linear maps
            (factorised codebook, as in ViT-VQGAN and LlamaGen).
        use_cosine_sim: l2-normalise projected latents and codes, so the nearest
            code is the one of highest cosine similarity.
        kmeans_init: initialise the codebook by k-means on the first batch.
        kmeans_iters: k-means iterations for ``kmeans_init``.
        threshold_ema_dead_code: replace codes whose running usage count drops
            below this with latents from the batch (0 disables).
        dead_code_decay: decay of the running usage counts behind ``threshold_ema_dead_code``.
        rotation_trick: route gradients with the rotation trick instead of the
            straight-through estimator.
        entropy_loss_weight: weight of the library's codebook-diversity loss
            (negative entropy of the batch-averaged soft assignment; 0 disables).
        entropy_temperature: inverse temperature of that soft assignment.
        sync_codebook: all-reduce k-means and dead-code statistics across processes.
    """

    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int,
        beta: float = 0.25,
        codebook_dim: Optional[int] = None,
        use_cosine_sim: bool = False,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 0.0,
        dead_code_decay: float = 0.8,
        rotation_trick: bool = False,
        entropy_loss_weight: float = 0.0,
        entropy_temperature: float = 100.0,
        sync_codebook: bool = False,
    ):
        super().__init__()
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
            sync_codebook=sync_codebook,
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
