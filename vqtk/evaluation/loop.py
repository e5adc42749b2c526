"""The evaluation pass: reconstruct every image of a set and score each one.

:func:`evaluate` returns raw per-image results (:class:`EvaluationResult`);
:mod:`vqtk.evaluation.report` turns them into the JSON report.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import attrs
import torch
from torch.utils.data import Dataset

from vqtk.errors import VqtkError
from vqtk.evaluation.fid import FidInception
from vqtk.evaluation.fid_stats import FidAccumulator, FidStatistics
from vqtk.evaluation.metrics import Unavailable, ssim_per_image
from vqtk.evaluation.perceptual import LPIPSMetric
from vqtk.evaluation.sets import image_loader, pick_indices
from vqtk.measure import code_histogram, psnr_per_image, to_unit_range

__all__ = ["GRID_IMAGES", "EvaluationResult", "evaluate", "pick_indices"]

#: images in the reconstruction grid
GRID_IMAGES = 8


@attrs.define(eq=False)
class EvaluationResult:
    """Raw results of one pass over an evaluation set.

    ``rfid`` holds ``value``, ``reference`` and ``reconstructions`` (their
    :class:`~vqtk.evaluation.fid_stats.FidStatistics`) and ``inception`` (the
    extractor's :meth:`~vqtk.evaluation.fid.FidInception.describe`).
    """

    images: int
    psnr: torch.Tensor
    ssim: torch.Tensor | Unavailable
    lpips: torch.Tensor | Unavailable
    rfid: dict[str, Any] | Unavailable
    counts: torch.Tensor
    grid_real: torch.Tensor
    grid_reconstruction: torch.Tensor
    seconds: float


@torch.no_grad()
def evaluate(
    model: Any,
    dataset: Dataset,
    *,
    batch_size: int = 16,
    max_images: Optional[int] = None,
    lpips: LPIPSMetric | Unavailable | None = None,
    fid: FidInception | Unavailable | None = None,
    fid_reference: Optional[FidStatistics] = None,
    num_workers: int = 0,
    grid_images: int = GRID_IMAGES,
) -> EvaluationResult:
    """Reconstruct every image of ``dataset`` (or ``max_images`` spread over it) and score them.

    Images are the data source's ``(C, H, W)`` tensors in ``[-1, 1]``;
    reconstructions are clamped to ``[-1, 1]``; PSNR and SSIM are measured on
    the ``[0, 1]`` scale, per image. ``lpips`` / ``fid`` may be
    :class:`Unavailable` (then reported as such) or ``None`` (not requested).
    rFID compares the reconstructions' FID statistics with ``fid_reference``
    (e.g. a ``vqtk fid-stats`` file) or, without one, with the evaluated images'.
    """
    device = next(model.parameters()).device
    quantizer = model.quantizer
    picks = pick_indices(len(dataset), max_images)
    if not picks:
        raise VqtkError("data: the evaluation set is empty")
    grid_at = set(pick_indices(len(picks), min(grid_images, len(picks))))
    loader = image_loader(dataset, picks, batch_size=batch_size, num_workers=num_workers)
    if isinstance(lpips, LPIPSMetric):
        lpips.to(device)
    fid_real = fid_fake = None
    if isinstance(fid, FidInception):
        fid.to(device)
        fid_fake = FidAccumulator(fid, device)
        fid_real = FidAccumulator(fid, device) if fid_reference is None else None
    counts = torch.zeros(quantizer.num_codebooks, quantizer.codebook_size, dtype=torch.long, device=device)
    psnrs, ssims, lpipss = [], [], []
    ssim_result: Unavailable | None = None
    grid_real, grid_fake = [], []
    seen = 0
    start = time.perf_counter()
    model.eval()
    for x in loader:
        x = x.to(device, torch.float32)
        out = model(x)
        rec = out.reconstruction.float().clamp(-1, 1)
        counts += code_histogram(out.quantizer.indices, quantizer.codebook_size, quantizer.num_codebooks,
                                         check_range=True)
        psnrs.append(psnr_per_image(x, rec).cpu())
        if ssim_result is None:
            try:
                ssims.append(ssim_per_image(to_unit_range(x), to_unit_range(rec)).cpu())
            except ValueError as exc:
                ssim_result = Unavailable(str(exc))
        if isinstance(lpips, LPIPSMetric):
            lpipss.append(lpips.distance(x, rec).cpu())
        if fid_real is not None:
            fid_real.add(x)
        if fid_fake is not None:
            fid_fake.add(rec)
        for i in range(x.shape[0]):
            if seen + i in grid_at:
                grid_real.append(x[i].cpu())
                grid_fake.append(rec[i].cpu())
        seen += x.shape[0]
    seconds = time.perf_counter() - start

    rfid: dict[str, Any] | Unavailable
    if isinstance(fid, Unavailable):
        rfid = fid
    elif fid_fake is None:
        rfid = Unavailable("not requested")
    elif seen < 2:
        rfid = Unavailable(f"needs at least 2 images, got {seen}")
    else:
        fake = fid_fake.result()
        reference = fid_real.result() if fid_real is not None else fid_reference
        rfid = {"value": reference.fid(fake), "reference": reference, "reconstructions": fake,
                "inception": fid.describe()}
    lpips_result: torch.Tensor | Unavailable
    if isinstance(lpips, LPIPSMetric):
        lpips_result = torch.cat(lpipss)
    else:
        lpips_result = lpips if isinstance(lpips, Unavailable) else Unavailable("not requested")
    return EvaluationResult(
        images=seen,
        psnr=torch.cat(psnrs),
        ssim=ssim_result if ssim_result is not None else torch.cat(ssims),
        lpips=lpips_result,
        rfid=rfid,
        counts=counts.cpu(),
        grid_real=torch.stack(grid_real),
        grid_reconstruction=torch.stack(grid_fake),
        seconds=seconds,
    )
