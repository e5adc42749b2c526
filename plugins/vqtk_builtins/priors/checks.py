"""Checks of what callers hand a prior: index grids, labels, sampling options, grid sizes."""

from __future__ import annotations

import math
from typing import Optional

import torch

from vqtk.errors import VqtkError
from vqtk.interfaces import SamplingOptions


class PriorInputError(VqtkError, ValueError):
    """Bad input to a prior (a user-fixable :class:`VqtkError` that is also a ``ValueError``)."""


def check_indices(
    indices: torch.Tensor, *, name: str, codebook_size: int, grid_size: tuple[int, int]
) -> None:
    """Indices must be an int64-like ``(B, h, w)`` grid of the trained size with values in range.

    Multi-index codes ``(B, h, w, Q)`` (residual VQ) are refused: these priors
    model one index per position.
    """
    if indices.ndim == 4:
        raise PriorInputError(
            f"{name} prior models one index per position; quantizer gives Q = {indices.shape[-1]} "
            f"indices per position (indices of shape {tuple(indices.shape)}): the `rq` prior models "
            "these (layout 'depth')"
        )
    if indices.ndim != 3:
        raise PriorInputError(
            f"{name} prior: indices must be (B, h, w), got shape {tuple(indices.shape)}"
        )
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise PriorInputError(f"{name} prior: indices must be integers, got {indices.dtype}")
    if tuple(indices.shape[1:]) != tuple(grid_size):
        raise PriorInputError(
            f"{name} prior: trained on a {grid_size[0]}x{grid_size[1]} grid, got indices of "
            f"shape {tuple(indices.shape)}"
        )
    if indices.numel():
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= codebook_size:
            raise PriorInputError(
                f"{name} prior: indices must lie in [0, {codebook_size}), got values in [{low}, {high}]"
            )


def check_labels(
    labels: Optional[torch.Tensor], *, name: str, batch_size: int, num_classes: int
) -> Optional[torch.Tensor]:
    """Labels ``(B,)`` in ``[0, num_classes)`` for conditional priors, ``None`` for unconditional ones."""
    if num_classes == 0:
        if labels is not None:
            raise PriorInputError(
                f"{name} prior is unconditional (num_classes = 0) but labels were given"
            )
        return None
    if labels is None:
        raise PriorInputError(f"{name} prior is class-conditional (num_classes = {num_classes}): give labels")
    labels = torch.as_tensor(labels)
    if labels.shape != (batch_size,):
        raise PriorInputError(
            f"{name} prior: labels must have shape ({batch_size},), got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise PriorInputError(f"{name} prior: labels must be integers, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise PriorInputError(
            f"{name} prior: labels must lie in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.long()


def check_options(
    options: SamplingOptions,
    *,
    name: str,
    num_classes: int,
    label_dropout: float,
    iterative: bool,
) -> None:
    """Sampling options must be in range and supported by the prior.

    ``cfg_scale != 1`` needs a null class, which exists only when the prior was
    trained with ``label_dropout > 0``.
    """
    t = options.temperature
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0):
        raise PriorInputError(f"{name} prior: temperature must be >= 0 (0 = greedy), got {t!r}")
    if options.top_k is not None and not (isinstance(options.top_k, int) and options.top_k >= 1):
        raise PriorInputError(f"{name} prior: top_k must be an integer >= 1, got {options.top_k!r}")
    if options.top_p is not None and not (0 < options.top_p <= 1):
        raise PriorInputError(f"{name} prior: top_p must be in (0, 1], got {options.top_p!r}")
    scale = options.cfg_scale
    if not (math.isfinite(scale) and scale >= 0):
        raise PriorInputError(f"{name} prior: cfg_scale must be >= 0, got {scale!r}")
    if scale != 1.0 and not (num_classes > 0 and label_dropout > 0):
        why = "it is unconditional" if num_classes == 0 else f"it was built with label_dropout = {label_dropout}"
        raise PriorInputError(
            f"{name} prior: cfg_scale = {scale} needs classifier-free guidance, which needs a null class "
            f"learned with label_dropout > 0 and num_classes > 0; {why}"
        )
    if options.steps is not None:
        if not iterative:
            raise PriorInputError(
                f"{name} prior: SamplingOptions.steps is for iterative (MaskGIT-style) priors; leave it None"
            )
        if not (isinstance(options.steps, int) and options.steps >= 1):
            raise PriorInputError(f"{name} prior: steps must be an integer >= 1, got {options.steps!r}")


def check_grid(grid_size, *, name: str) -> tuple[int, int]:
    """A requested grid size ``(h, w)`` of positive integers."""
    try:
        h, w = (int(v) for v in grid_size)
    except (TypeError, ValueError):
        raise PriorInputError(f"{name} prior: grid_size must be (rows, columns), got {grid_size!r}") from None
    if h < 1 or w < 1:
        raise PriorInputError(f"{name} prior: grid_size must be positive, got {grid_size!r}")
    return h, w


def check_batch_size(batch_size: int, *, name: str) -> None:
    """A positive integer batch size."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise PriorInputError(f"{name} prior: batch_size must be an integer >= 1, got {batch_size!r}")
