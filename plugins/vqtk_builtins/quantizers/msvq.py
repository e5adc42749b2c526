"""VAR's multi-scale residual quantizer (``msvq``): one shared codebook, coarse-to-fine scales.

Tian et al. 2024, "Visual Autoregressive Modeling" (arXiv 2404.02905), whose
``VectorQuantizer2`` (FoundationVision/VAR ``models/quant.py``) this computes
again. With the latent ``f`` of ``(H, W) = (s_K, s_K)`` positions, a residual
``r = f`` and a reconstruction ``f_hat = 0``, each scale ``s_k`` in turn:

1. averages ``r`` down to ``s_k x s_k`` (area interpolation; the last scale is
   ``r`` itself) and takes each position's nearest code (squared distance, or
   cosine similarity with ``use_znorm``);
2. upsamples those codes back to ``H x W`` (bicubic), blends them with that
   scale's 3x3 convolution ``phi`` (:mod:`.msvq_phi`);
3. adds the result to ``f_hat`` and subtracts it from ``r``.

Indices are ``(B, L)``, ``L = sum(s_k ** 2)``: scale by scale, each row-major
(:meth:`vqtk.interfaces.TokenLayout.multiscale`); :meth:`lookup` runs steps 2-3
from them. ``quantized`` is ``f_hat`` with straight-through gradients to ``f``.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import each, in_range, non_empty, non_negative, positive
from vqtk.interfaces import Quantizer, QuantizerOutput, RestartableQuantizer, TokenLayout
from vqtk.measure import code_histogram, code_usage
from vqtk_builtins.quantizers.layout import check_latents
from vqtk_builtins.quantizers.msvq_phi import make_phis, phi_count, phi_for_scales

#: VAR's scales for a 16x16 latent (256 px images at f16): ``v_patch_nums``
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def check_msvq(config: Any) -> None:
    """Recipe check: scales strictly increase (the last is the latent grid)."""
    scales = list(config.scales)
    if any(b <= a for a, b in zip(scales, scales[1:])):
        raise ValueError(f"scales must strictly increase from coarse to fine (the last is the latent grid), "
                         f"got {scales}")


class MultiScaleQuantizer(Quantizer, RestartableQuantizer):
    """VAR's multi-scale residual VQ: one codebook shared by every scale, refined coarse to fine.

    See the module docstring for the forward pass. The loss is VAR's, averaged
    over the ``K`` scales: at each scale, with ``f_hat_k`` the reconstruction so
    far, ``beta * mse(sg(f_hat_k), f) + mse(f_hat_k, sg(f))``: the commitment
    term keeps the encoder near its codes, the codebook term trains the codes
    and the ``phi`` convolutions (gradients reach every earlier scale's codes
    through ``f_hat_k``). Metrics add ``commitment``, ``codebook_loss`` and the
    fraction of the codebook each scale used in the batch, ``usage/scale_1x1``,
    ``usage/scale_2x2``, ...: the coarse scales see few latents, so they are
    where collapse shows first. Dead codes are restarted by vqtk's trainer
    (``train.restart_dead_codes``) with recent latents.

    Only latents of ``scales[-1] x scales[-1]`` positions are quantized (256 px
    images at f16 for VAR's scales): any other grid is an error naming both.

    Args:
        dim: channels of the latents and of the codes (VAR's Cvae, 32).
        codebook_size: codes in the one codebook every scale shares (VAR's vocab_size, 4096).
        scales: side of each scale's square grid, coarse to fine; the last is the latent grid
            (VAR's v_patch_nums, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) for a 16x16 latent).
        beta: weight of the commitment term mse(sg(f_hat), f) (VAR's beta, 0.25).
        quant_resi: ratio r of each scale's blend phi(h) = (1 - r) h + r conv3x3(h); 0 = no
            convolution (VAR's quant_resi, 0.5).
        share_quant_resi: how many phi convolutions the scales share: 0 one per scale (or
            num_phi), 1 one for all, n >= 2 n spread over the scales by VAR's nearest-tick rule
            (VAR's share_quant_resi, 4).
        num_phi: with share_quant_resi = 0, how many phi convolutions (0 = one per scale; VAR's
            default_qresi_counts).
        use_znorm: pick the nearest code by cosine similarity (l2-normalised latents and codes);
            the codes added up are the raw ones, as in VAR's using_znorm (False in its release).
        init_std: initial codebook entries drawn from N(0, init_std^2) truncated to [-2, 2] (0: torch's
            nn.Embedding default N(0, 1)); VAR's eini(init_std), whose value its unreleased training set.
    """

    def __init__(
        self,
        *,
        dim: Annotated[int, positive] = 32,
        codebook_size: Annotated[int, positive] = 4096,
        scales: Annotated[tuple[int, ...], non_empty, each(positive)] = VAR_SCALES,
        beta: Annotated[float, non_negative] = 0.25,
        quant_resi: Annotated[float, in_range(0.0, 1.0)] = 0.5,
        share_quant_resi: Annotated[int, non_negative] = 4,
        num_phi: Annotated[int, non_negative] = 0,
        use_znorm: bool = False,
        init_std: Annotated[float, non_negative] = 0.0,
    ):
        super().__init__()
        self.dim, self.codebook_size, self.num_codebooks = dim, codebook_size, 1
        self.scales = tuple(int(s) for s in scales)
        self.beta = beta
        self.use_znorm = use_znorm
        self.embedding = nn.Embedding(codebook_size, dim)
        if init_std > 0:
            nn.init.trunc_normal_(self.embedding.weight, std=init_std)  # within [-2, 2], as VAR's eini
        count = phi_count(share_quant_resi, len(self.scales), num_phi)
        self.phi = make_phis(dim, quant_resi, count)
        self.phi_of_scale = phi_for_scales(count, len(self.scales))

    @property
    def layout(self) -> TokenLayout:
        """``scales``: indices ``(B, L)``, scale by scale (see the module docstring)."""
        return TokenLayout.multiscale(self.scales)

    @property
    def bits_per_position(self) -> float:
        """Bits of the codes per latent position (all scales' codes over the finest grid)."""
        side = self.scales[-1]
        return self.layout.tokens((side, side)) / side**2 * super().bits_per_position

    def _grid(self, z: torch.Tensor) -> tuple[int, int]:
        check_latents(z, self.dim, type(self).__name__)
        grid = (int(z.shape[-2]), int(z.shape[-1]))
        self.layout.check_grid(grid)
        return grid

    @torch.no_grad()
    def _nearest(self, r: torch.Tensor) -> torch.Tensor:
        """Nearest code of each position of ``(B, dim, h, w)`` as ``(B, h, w)`` int64."""
        b, c, h, w = r.shape
        x = r.permute(0, 2, 3, 1).reshape(-1, c)
        codes = self.embedding.weight
        if self.use_znorm:
            idx = (F.normalize(x, dim=-1) @ F.normalize(codes, dim=-1).T).argmax(dim=1)
        else:
            dist = x.square().sum(1, keepdim=True) + codes.square().sum(1)
            idx = dist.addmm_(x, codes.T, alpha=-2).argmin(dim=1)
        return idx.view(b, h, w)

    def _scale_term(self, idx: torch.Tensor, k: int, grid: tuple[int, int]) -> torch.Tensor:
        """Scale ``k``'s codes ``(B, h, w)`` as its ``(B, dim, H, W)`` share of the reconstruction."""
        h = self.embedding(idx).permute(0, 3, 1, 2)
        if tuple(idx.shape[-2:]) != grid:
            h = F.interpolate(h, size=grid, mode="bicubic")
        return self.phi[self.phi_of_scale[k]](h.contiguous())

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, s_K, s_K)`` latents scale by scale; see the class docstring."""
        grid = self._grid(z)
        target = z.detach()
        rest = target.clone()
        f_hat = torch.zeros_like(target)
        commitment = codebook_loss = z.new_zeros(())
        parts, metrics = [], {}
        for k, side in enumerate(self.scales):
            small = rest if (side, side) == grid else F.interpolate(rest, size=(side, side), mode="area")
            idx = self._nearest(small)
            term = self._scale_term(idx, k, grid)
            f_hat = f_hat + term
            rest = rest - term.detach()
            commitment = commitment + F.mse_loss(f_hat.detach(), z)
            codebook_loss = codebook_loss + F.mse_loss(f_hat, target)
            parts.append(idx)
            counts = code_histogram(idx, self.codebook_size, 1)
            metrics[f"usage/scale_{side}x{side}"] = code_usage(counts)[0].float()
        commitment, codebook_loss = commitment / len(self.scales), codebook_loss / len(self.scales)
        metrics.update(commitment=commitment.detach(), codebook_loss=codebook_loss.detach())
        # straight-through: the value is exactly f_hat, the gradient to z the identity
        quantized = f_hat.detach() + (z - z.detach())
        return QuantizerOutput(quantized=quantized, indices=self.layout.join(parts),
                               loss=self.beta * commitment + codebook_loss, metrics=metrics)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` indices back to ``f_hat`` ``(B, dim, s_K, s_K)`` (VAR's ``idxBl_to_fhat``)."""
        grid = (self.scales[-1], self.scales[-1])
        parts = self.layout.split(indices.long())
        f_hat = self.embedding.weight.new_zeros(parts[0].shape[0], self.dim, *grid)
        for k, idx in enumerate(parts):  # the additions of quantize, in its order
            f_hat = f_hat + self._scale_term(idx, k, grid)
        return f_hat

    @torch.no_grad()
    def restart_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Set codes ``code_ids`` to latents ``vectors`` ``(n, dim)`` (the codebook lives in the latent space).

        Recent latents land where the coarse scales look for codes: the 1x1
        scale quantizes a latent's mean, the next ones what little is left of it.
        """
        weight = self.embedding.weight
        weight[code_ids.to(weight.device, torch.long)] = vectors.to(weight.device, weight.dtype)
