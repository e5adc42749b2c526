"""Lookup-free quantization: the sign of each projected channel is one bit of the index."""

from __future__ import annotations

import math
from typing import Optional

import torch
from vector_quantize_pytorch import LFQ

from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)


class LookupFreeQuantizer(Quantizer):
    """LFQ (MAGVIT-2): ``log2(codebook_size)`` channels, each quantized to -1 or +1.

    Latents are projected to ``log2(codebook_size)`` channels when ``dim``
    differs. In training the loss is ``entropy_loss_weight * (per-sample
    entropy - diversity_gamma * codebook entropy) + commitment_loss_weight *
    mse(z, sg(q))``; the soft assignments use ``inv_temperature``. Zero in eval.

    Args:
        dim: channels of the latents; ``None`` means ``log2(codebook_size)``.
        codebook_size: a power of two; ``None`` means ``2 ** dim``.
        entropy_loss_weight: weight of the entropy term.
        commitment_loss_weight: weight of the commitment term.
        diversity_gamma: weight of the codebook entropy inside the entropy term.
        inv_temperature: inverse temperature of the soft code assignment.
    """

    def __init__(
        self,
        *,
        dim: Optional[int] = None,
        codebook_size: Optional[int] = None,
        entropy_loss_weight: float = 0.1,
        commitment_loss_weight: float = 0.25,
        diversity_gamma: float = 1.0,
        inv_temperature: float = 100.0,
    ):
        super().__init__()
        if dim is None and codebook_size is None:
            raise ValueError("LookupFreeQuantizer: give dim or codebook_size")
        self.codebook_size = codebook_size or 2**dim
        self.dim = dim or int(math.log2(self.codebook_size))
        self.num_codebooks = 1
        self.inv_temperature = inv_temperature
        self.lfq = LFQ(
            dim=self.dim,
            codebook_size=self.codebook_size,
            entropy_loss_weight=entropy_loss_weight,
            commitment_loss_weight=commitment_loss_weight,
            diversity_gamma=diversity_gamma,
        )

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents to ``codebook_size`` binary codes."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        (q, idx, loss), parts = self.lfq(
            tokens, inv_temperature=self.inv_temperature, return_loss_breakdown=True
        )
        metrics = {
            "per_sample_entropy": parts.per_sample_entropy.detach(),
            "codebook_entropy": parts.batch_entropy.detach(),
            "commitment": parts.commitment.detach(),
        }
        return QuantizerOutput(
            quantized=from_tokens(q, grid),
            indices=indices_to_grid(idx, grid),
            loss=loss.sum(),
            metrics=metrics,
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``(B, h, w)`` indices, as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, 1, type(self).__name__)
        return from_tokens(self.lfq.indices_to_codes(idx), grid)
