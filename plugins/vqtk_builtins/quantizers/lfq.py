"""Lookup-free quantization: the sign of each projected channel is one bit of the index."""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

import torch

from vqtk.config import non_negative, positive, power_of_two
from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.fsq import MAX_IMPLICIT_CODES
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)


def check_lfq(config: Any) -> None:
    """Recipe check of ``lfq``: a codebook_size or a number of bits, at most MAX_IMPLICIT_CODES codes."""
    if config.dim is None and config.codebook_size is None:
        raise ValueError("set codebook_size (a power of two) or dim (the number of bits)")
    size = config.codebook_size if config.codebook_size is not None else 2 ** min(config.dim, 64)
    if size > MAX_IMPLICIT_CODES:
        what = "codebook_size" if config.codebook_size is not None else f"2 ** dim ({config.dim} bits)"
        raise ValueError(
            f"{what} is more than the {MAX_IMPLICIT_CODES} codes supported; "
            "set codebook_size to project the latents to fewer bits"
        )


class LookupFreeQuantizer(Quantizer):
    """Lookup-free quantization (MAGVIT-2): one sign bit per channel, entropy + commitment losses.

    Latents are projected to ``log2(codebook_size)`` channels when ``dim``
    differs; each channel is quantized to -1 or +1. In training the loss is
    ``entropy_loss_weight * (per-sample entropy - diversity_gamma * codebook
    entropy) + commitment_loss_weight * mse(z, sg(q))``; the soft assignments
    use ``inv_temperature``. Zero in eval. Give ``codebook_size`` (a power of
    two), ``dim`` or both.

    Args:
        dim: channels of the latents; absent = log2(codebook_size) (no projection).
        codebook_size: number of codes, a power of two; absent = 2 ** dim.
        entropy_loss_weight: weight of (per-sample entropy - diversity_gamma * codebook entropy).
        commitment_loss_weight: weight of the commitment term mse(z, sg(q)).
        diversity_gamma: weight of the codebook entropy inside the entropy term.
        inv_temperature: inverse temperature of the soft assignment behind the entropy terms.
    """

    def __init__(
        self,
        *,
        dim: Annotated[Optional[int], positive] = None,
        codebook_size: Annotated[Optional[int], power_of_two] = None,
        entropy_loss_weight: Annotated[float, non_negative] = 0.1,
        commitment_loss_weight: Annotated[float, non_negative] = 0.25,
        diversity_gamma: Annotated[float, non_negative] = 1.0,
        inv_temperature: Annotated[float, positive] = 100.0,
    ):
        super().__init__()
        # imported here, not at module level: vector_quantize_pytorch takes 1.4 s to import,
        # and `vqtk list` imports this module to register it
        from vector_quantize_pytorch import LFQ

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
