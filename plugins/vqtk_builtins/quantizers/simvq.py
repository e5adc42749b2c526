"""SimVQ: a frozen random codebook seen through a learned linear map."""

from __future__ import annotations

from typing import Annotated, Optional

import torch

from vqtk.config import non_negative, positive
from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)


class SimVectorQuantizer(Quantizer):
    """SimVQ: a frozen random codebook through a learned linear map (no collapse), VQ-VAE loss.

    SimVQ (Zhu et al. 2024): codes are ``W @ c`` for frozen Gaussian ``c`` and
    learned ``W``. Learning the whole codebook through one linear map keeps
    every code moving, which avoids collapse. The loss is ``mse(sg(z), e) + beta * mse(z, sg(e))``
    (computed in eval mode too). Gradients reach the input through the rotation
    trick (default) or the straight-through estimator.

    Args:
        dim: channels of the latents (and of the codes).
        codebook_size: number of codes.
        beta: weight of the commitment term mse(z, sg(e)); the codebook term has weight 1.
        rotation_trick: rotation-trick gradients (the library's default) instead of straight-through.
        frozen_codebook_dim: dimension of the frozen random codes; absent = dim.
    """

    def __init__(
        self,
        *,
        dim: Annotated[int, positive] = 256,
        codebook_size: Annotated[int, positive] = 1024,
        beta: Annotated[float, non_negative] = 0.25,
        rotation_trick: bool = True,
        frozen_codebook_dim: Annotated[Optional[int], positive] = None,
    ):
        super().__init__()
        # imported here, not at module level: vector_quantize_pytorch takes 1.4 s to import,
        # and `vqtk list` imports this module to register it
        from vector_quantize_pytorch import SimVQ

        self.dim = dim
        self.codebook_size = codebook_size
        self.num_codebooks = 1
        self.simvq = SimVQ(
            dim=dim,
            codebook_size=codebook_size,
            rotation_trick=rotation_trick,
            input_to_quantize_commit_loss_weight=beta,
            commitment_weight=1.0,
            frozen_codebook_dim=frozen_codebook_dim,
        )

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        q, idx, loss = self.simvq(tokens)
        return QuantizerOutput(
            quantized=from_tokens(q, grid), indices=indices_to_grid(idx, grid), loss=loss.sum()
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``(B, h, w)`` indices, as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, 1, type(self).__name__)
        return from_tokens(self.simvq.indices_to_codes(idx), grid)
