"""The measurements every layer shares: PSNR, code statistics, and taking images out of a batch.

The bottom layer: depends on torch only, so interfaces, training, evaluation
and the CLI all measure with these same functions (one PSNR, one code
histogram, one way to unpack a data item).

- :func:`split_batch`: ``(images, labels or None)`` of a data item or a
  collated batch (a tensor, a tuple or a list).
- :func:`psnr_per_image` / :func:`psnr`: images in ``[-1, 1]``, measured on the
  ``[0, 1]`` scale.
- :func:`code_histogram` and the statistics of a histogram
  (:func:`used_codes`, :func:`code_usage`, :func:`entropy_bits`,
  :func:`perplexity`), for indices ``(B, h, w)`` or ``(B, h, w, Q)``; none of
  them synchronises with the host unless asked to check the index range.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

#: MSE floor of :func:`psnr_per_image`: identical images score 100 dB, not infinity.
MSE_FLOOR = 1e-10


# -- batches -------------------------------------------------------------------


def split_batch(batch: Any) -> tuple[torch.Tensor, Any]:
    """``(images, labels)`` of a data item or batch; ``labels`` is ``None`` for unlabelled data.

    Takes what data sources return and what a ``DataLoader`` collates from it: an
    image tensor, or an ``(image, label)`` tuple or ``[image, label]`` list (a
    1-element tuple or list holds the image alone).

    Raises:
        TypeError: anything else.
    """
    if torch.is_tensor(batch):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2) and torch.is_tensor(batch[0]):
        return batch[0], (batch[1] if len(batch) == 2 else None)
    shape = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else \
        f"a {type(batch).__name__}"
    raise TypeError(f"expected an image tensor or an (image, label) pair from the data, got {shape}")


# -- images --------------------------------------------------------------------


def check_image_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``real`` and ``fake`` are two ``(B, C, H, W)`` batches of one shape."""
    if real.shape != fake.shape or real.dim() != 4:
        raise ValueError(
            f"expected two (B, C, H, W) batches of one shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` (model space) as float32 on ``[0, 1]``, clamped (detached)."""
    return ((images.detach().float() + 1) / 2).clamp(0, 1)


def psnr_per_image(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image pair ``(B,)``; images in ``[-1, 1]``, measured on ``[0, 1]``.

    Both batches are clamped to ``[-1, 1]`` (a reconstruction may overshoot)
    and mapped to ``[0, 1]``; ``PSNR = 10 log10(1 / MSE)`` with the MSE over all
    pixels and channels, floored at :data:`MSE_FLOOR` so identical images give
    100 dB and a set average stays finite.
    """
    check_image_pair(real, fake)
    mse = (to_unit_range(real) - to_unit_range(fake)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))


def psnr(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of :func:`psnr_per_image` (a scalar tensor, in dB)."""
    return psnr_per_image(real, fake).mean()


# -- codes ---------------------------------------------------------------------


def codes_by_codebook(indices: torch.Tensor, num_codebooks: Optional[int] = None) -> torch.Tensor:
    """Indices as ``(N, Q)`` int64, one column per codebook (shape rules of :func:`code_ids`).

    The one place that knows how index tensors hold codebooks:
    :meth:`vqtk.interfaces.TokenLayout.per_codebook` is its transpose.
    """
    idx = indices.detach().long()
    if num_codebooks is None:
        return idx.reshape(-1, idx.shape[-1] if idx.dim() >= 4 else 1)
    if num_codebooks == 1 and idx.dim() in (2, 3):  # (B, h, w) grids or (B, L) scale sequences
        return idx.reshape(-1, 1)
    if idx.dim() != 4 or idx.shape[-1] != num_codebooks:
        want = f"(B, h, w, {num_codebooks})" if num_codebooks > 1 else "(B, h, w) or (B, L)"
        raise ValueError(f"expected indices {want}, got shape {tuple(indices.shape)}")
    return idx.reshape(-1, num_codebooks)


def _offset(flat: torch.Tensor, codebook_size: int) -> torch.Tensor:
    offsets = torch.arange(flat.shape[1], device=flat.device) * codebook_size
    return (flat + offsets).reshape(-1)


def code_ids(indices: torch.Tensor, codebook_size: int, num_codebooks: Optional[int] = None) -> torch.Tensor:
    """Every position's code as one flat id ``(N * Q,)`` int64: code ``c`` of codebook ``q`` is ``q * K + c``.

    With ``num_codebooks`` given, ``indices`` must be ``(B, h, w)`` or a
    multi-scale ``(B, L)`` (one codebook), or ``(B, h, w, Q)``, and anything
    else raises ``ValueError``.
    Without it, the number of codebooks is the trailing size of 4-d indices
    and 1 otherwise (any shape then counts as one codebook's codes). Never
    synchronises with the host.
    """
    return _offset(codes_by_codebook(indices, num_codebooks), codebook_size)


def code_histogram(
    indices: torch.Tensor,
    codebook_size: int,
    num_codebooks: Optional[int] = None,
    *,
    check_range: bool = False,
) -> torch.Tensor:
    """Counts ``(Q, codebook_size)`` (int64, on the indices' device): row ``q`` counts codebook ``q``'s codes.

    ``indices`` and ``num_codebooks`` as in :func:`code_ids`. Histograms of
    batches add up to the histogram of their union. ``check_range`` raises
    ``ValueError`` for an index outside ``[0, codebook_size)`` (one host sync);
    without it the function never synchronises.
    """
    flat = codes_by_codebook(indices, num_codebooks)
    if check_range and flat.numel():
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= codebook_size:
            raise ValueError(f"indices out of range for a codebook of {codebook_size} codes (min {lo}, max {hi})")
    q = flat.shape[1]
    counts = torch.bincount(_offset(flat, codebook_size), minlength=q * codebook_size)
    return counts.reshape(q, codebook_size)


def used_codes(counts: torch.Tensor) -> torch.Tensor:
    """Codes used at least once in each row of a histogram ``(Q, K)`` -> ``(Q,)`` int64."""
    return (counts > 0).sum(dim=-1)


def code_usage(counts: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fraction of each row's ``K`` codes used at least once ``(Q,)``, in ``dtype``."""
    return used_codes(counts).to(dtype) / counts.shape[-1]


def entropy_bits(counts: torch.Tensor, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Shannon entropy in bits of each row of a histogram ``(Q, K)`` -> ``(Q,)`` in ``dtype``.

    ``H = -sum p log2 p`` with ``p = counts / counts.sum()``; unused codes add 0;
    an empty row has entropy 0. At most ``log2 K``.
    """
    c = counts.to(dtype)
    p = c / c.sum(dim=-1, keepdim=True).clamp_min(1)
    return -torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p)).sum(dim=-1)


def perplexity(counts: torch.Tensor, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``2 ** entropy_bits`` of each row ``(Q,)``: how many equally frequent codes give that entropy (1 to K)."""
    return torch.exp2(entropy_bits(counts, dtype=dtype))
