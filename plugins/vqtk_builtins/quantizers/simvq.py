"""SimVQ: a frozen random codebook seen through a learned linear map."""

from __future__ import annotations

from typing import Annotated, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import non_negative, positive
from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)
from vqtk_builtins.quantizers.vq import CodeSpace


class NormalizedLinear(nn.Linear):
    """A linear map whose outputs are l2-normalised: SimVQ's code transform for codes on the unit sphere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().forward(x), dim=-1)


class SimVectorQuantizer(CodeSpace, Quantizer):
    """SimVQ: a frozen random codebook through a learned linear map (no collapse), VQ-VAE loss.

    SimVQ (Zhu et al. 2024): codes are ``W @ c`` for frozen Gaussian ``c`` and
    learned ``W``. Learning the whole codebook through one linear map keeps
    every code moving, which avoids collapse. The loss is ``mse(sg(z), e) + beta * mse(z, sg(e))``
    (computed in eval mode too). Gradients reach the input through the rotation
    trick (default) or the straight-through estimator.

    Args:
        dim: channels of the latents (and of the codes, unless codebook_dim).
        codebook_size: number of codes.
        beta: weight of the commitment term mse(z, sg(e)); the codebook term has weight 1.
        rotation_trick: rotation-trick gradients (Fifty et al. 2024, arXiv 2410.06424; the
            library's default) instead of straight-through.
        frozen_codebook_dim: dimension of the frozen random codes; absent = codebook_dim.
        codebook_dim: code dimension; smaller than dim adds learned linear projections in and
            out around the quantizer (factorised codebook, as in ViT-VQGAN); absent = dim.
        use_cosine_sim: l2-normalise latents and codes (the learned map's outputs), so the
            nearest code is the one of highest cosine similarity.
    """

    def __init__(
        self,
        *,
        dim: Annotated[int, positive] = 256,
        codebook_size: Annotated[int, positive] = 1024,
        beta: Annotated[float, non_negative] = 0.25,
        rotation_trick: bool = True,
        frozen_codebook_dim: Annotated[Optional[int], positive] = None,
        codebook_dim: Annotated[Optional[int], positive] = None,
        use_cosine_sim: bool = False,
    ):
        super().__init__()
        # imported here, not at module level: vector_quantize_pytorch takes 1.4 s to import,
        # and `vqtk list` imports this module to register it
        from vector_quantize_pytorch import SimVQ

        self.init_code_space(dim, codebook_size, codebook_dim, use_cosine_sim)
        # the library's own nn.Linear unless cosine (same state-dict key, code_transform.weight)
        transform = (
            NormalizedLinear(frozen_codebook_dim or self.codebook_dim, self.codebook_dim, bias=False)
            if use_cosine_sim else None
        )
        self.simvq = SimVQ(
            dim=self.codebook_dim,
            codebook_size=codebook_size,
            codebook_transform=transform,
            rotation_trick=rotation_trick,
            input_to_quantize_commit_loss_weight=beta,
            commitment_weight=1.0,
            frozen_codebook_dim=frozen_codebook_dim,
        )

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        q, idx, loss = self.simvq(self.to_code_space(tokens))
        return QuantizerOutput(
            quantized=from_tokens(self.project_out(q), grid), indices=indices_to_grid(idx, grid), loss=loss.sum()
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``(B, h, w)`` indices, as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, 1, type(self).__name__)
        return from_tokens(self.project_out(self.simvq.indices_to_codes(idx)), grid)
