"""Finite scalar quantization: each of a few projected channels rounded to a fixed grid."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from vector_quantize_pytorch import FSQ

from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)


class FiniteScalarQuantizer(Quantizer):
    """FSQ (Mentzer et al. 2023): no codebook to learn, no auxiliary loss.

    Latents are projected to ``len(levels)`` channels (when ``dim`` differs),
    each bounded and rounded to ``levels[i]`` values; the implicit codebook
    holds ``prod(levels)`` codes. Rounding passes straight-through gradients.

    Args:
        levels: number of values per channel, each >= 2 (2 needs ``preserve_symmetry``).
        dim: channels of the latents; ``None`` means ``len(levels)`` (no projection).
        preserve_symmetry: the symmetric rounding of Kakaobrain's FSQ variant
            (arXiv 2411.19842), required for levels of 2.
    """

    def __init__(
        self,
        *,
        levels: Sequence[int],
        dim: Optional[int] = None,
        preserve_symmetry: bool = False,
    ):
        super().__init__()
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
