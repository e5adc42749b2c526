"""Moving latents and indices between vqtk's grid layout and the libraries' token layout.

vqtk passes latents as ``(B, D, h, w)`` and indices as ``(B, h, w)`` or
``(B, h, w, Q)``; vector-quantize-pytorch's classes are used channel-last on
token sequences ``(B, h*w, D)`` with indices ``(B, h*w)`` or ``(B, h*w, Q)``.
"""

from __future__ import annotations

import torch

from vqtk.errors import VqtkError


def check_latents(z: torch.Tensor, dim: int, where: str) -> None:
    """Raise :class:`VqtkError` naming ``where`` unless ``z`` is ``(B, dim, h, w)``."""
    if z.dim() != 4 or z.shape[1] != dim:
        raise VqtkError(f"{where}: expected latents (batch, {dim}, h, w), got shape {tuple(z.shape)}")


def to_tokens(z: torch.Tensor, dim: int, where: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(B, dim, h, w)`` latents as ``(B, h*w, dim)`` tokens, plus the grid size ``(h, w)``.

    Raises :class:`VqtkError` naming ``where`` when the latents do not have ``dim`` channels.
    """
    check_latents(z, dim, where)
    b, d, h, w = z.shape
    return z.permute(0, 2, 3, 1).reshape(b, h * w, d), (h, w)


def from_tokens(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, h*w, D)`` tokens back to ``(B, D, h, w)`` latents, contiguous in the default layout.

    The permuted view would be channels_last in memory; a decoder fed it runs its convolutions
    and GroupNorms channels_last by accident, whose backward on CPU is several times slower.
    """
    b, _, d = x.shape
    h, w = grid
    return x.reshape(b, h, w, d).permute(0, 3, 1, 2).contiguous()


def indices_to_grid(indices: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, h*w)`` or ``(B, h*w, Q)`` indices as ``int64`` ``(B, h, w)`` or ``(B, h, w, Q)``."""
    h, w = grid
    return indices.reshape(indices.shape[0], h, w, *indices.shape[2:]).long()


def indices_to_tokens(
    indices: torch.Tensor, num_codebooks: int, where: str
) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(B, h, w)`` (or ``(B, h, w, Q)``) indices as ``(B, h*w)`` (or ``(B, h*w, Q)``), plus ``(h, w)``."""
    want = 3 if num_codebooks == 1 else 4
    if indices.dim() != want or (num_codebooks > 1 and indices.shape[-1] != num_codebooks):
        shape = "(batch, h, w)" if num_codebooks == 1 else f"(batch, h, w, {num_codebooks})"
        raise VqtkError(f"{where}: expected indices {shape}, got shape {tuple(indices.shape)}")
    b, h, w = indices.shape[:3]
    return indices.reshape(b, h * w, *indices.shape[3:]).long(), (h, w)
