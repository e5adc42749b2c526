"""Finite scalar quantization: each of a few projected channels rounded to a fixed grid."""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

import torch

from vqtk.config import at_least, each, non_empty, positive
from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)

#: Largest implicit codebook of FSQ / LFQ: both libraries materialise every
#: code at construction, and code statistics count every code each step.
MAX_IMPLICIT_CODES = 2**20


def check_fsq(config: Any) -> None:
    """Recipe check of ``fsq``: levels of 2 need symmetric rounding; at most MAX_IMPLICIT_CODES codes."""
    if 2 in config.levels and not config.preserve_symmetry:
        raise ValueError("levels of 2 need preserve_symmetry = true (plain FSQ rounding has no 2-value grid)")
    codes = math.prod(config.levels)
    if codes > MAX_IMPLICIT_CODES:
        raise ValueError(f"levels give {codes} codes, more than the {MAX_IMPLICIT_CODES} supported")


class FiniteScalarQuantizer(Quantizer):
    """Finite scalar quantization: prod(levels) implicit codes, no codebook to learn, no loss.

    FSQ (Mentzer et al. 2023): latents are projected to ``len(levels)``
    channels (when ``dim`` differs), each bounded and rounded to ``levels[i]``
    values; the implicit codebook holds ``prod(levels)`` codes. Rounding passes
    straight-through gradients.

    Args:
        levels: values per quantized channel, each >= 2 (2 needs preserve_symmetry);
            codebook_size = prod(levels).
        dim: channels of the latents; absent = len(levels) (no projection).
        preserve_symmetry: the symmetric rounding of Kakaobrain's FSQ variant (arXiv 2411.19842);
            required when a level is 2.
    """

    def __init__(
        self,
        *,
        levels: Annotated[tuple[int, ...], non_empty, each(at_least(2))] = (8, 5, 5, 5),
        dim: Annotated[Optional[int], positive] = None,
        preserve_symmetry: bool = False,
    ):
        super().__init__()
        # imported here, not at module level: vector_quantize_pytorch takes 1.4 s to import,
        # and `vqtk list` imports this module to register it
        from vector_quantize_pytorch import FSQ

        self.levels = tuple(int(n) for n in levels)
        self.dim = dim or len(self.levels)
        self.codebook_size = math.prod(self.levels)
        self.num_codebooks = 1
        self.fsq = FSQ(levels=list(self.levels), dim=self.dim, preserve_symmetry=preserve_symmetry)

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents; the loss is always zero."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        q, idx = self.fsq(tokens)
        return QuantizerOutput(
            quantized=from_tokens(q, grid),
            indices=indices_to_grid(idx, grid),
            loss=z.new_zeros(()),
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``(B, h, w)`` indices, as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, 1, type(self).__name__)
        return from_tokens(self.fsq.indices_to_codes(idx), grid)
