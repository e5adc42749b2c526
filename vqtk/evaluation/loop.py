"""The evaluation pass: reconstruct every image of a set and score each one.

:func:`evaluate` returns raw per-image results (:class:`EvaluationResult`);
:mod:`vqtk.evaluation.report` turns them into the JSON report.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import attrs
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from vqtk.errors import VqtkError
from vqtk.evaluation import fid as fid_mod
from vqtk.evaluation.metrics import Unavailable, ssim_per_image
from vqtk.evaluation.perceptual import LPIPSMetric
from vqtk.measure import code_histogram, psnr_per_image, split_batch, to_unit_range

#: images in the reconstruction grid
GRID_IMAGES = 8


@attrs.define(eq=False)
class EvaluationResult:
    """Raw results of one pass over an evaluation set."""

    images: int
    psnr: torch.Tensor
    ssim: torch.Tensor | Unavailable
    lpips: torch.Tensor | Unavailable
    rfid: dict[str, Any] | Unavailable
    counts: torch.Tensor
    grid_real: torch.Tensor
    grid_reconstruction: torch.Tensor
    seconds: float


def pick_indices(total: int, max_images: Optional[int]) -> list[int]:
    """All of ``range(total)``, or ``max_images`` of them spread evenly over the set (deterministic)."""
    if max_images is None or max_images >= total:
        return list(range(total))
    if max_images == 1:
        return [0]
    return torch.linspace(0, total - 1, max_images).round().long().tolist()


def _collate(items: list) -> torch.Tensor:
    """The images of a list of data items (tensors, ``(image, label)`` tuples or lists); labels dropped."""
    return torch.stack([split_batch(item)[0] for item in items])


@torch.no_grad()
def evaluate(
    model: Any,
    dataset: Dataset,
    *,
    batch_size: int = 16,
    max_images: Optional[int] = None,
    lpips: LPIPSMetric | Unavailable | None = None,
    inception: "fid_mod.InceptionFeatures | Unavailable | None" = None,
    num_workers: int = 0,
    grid_images: int = GRID_IMAGES,
) -> EvaluationResult:
    """Reconstruct every image of ``dataset`` (or ``max_images`` spread over it) and score them.

    Images are the data source's ``(C, H, W)`` tensors in ``[-1, 1]``;
    reconstructions are clamped to ``[-1, 1]``; PSNR and SSIM are measured on
    the ``[0, 1]`` scale, per image. ``lpips`` / ``inception`` may be
    :class:`Unavailable` (then reported as such) or ``None`` (not requested).
    """
    device = next(model.parameters()).device
    quantizer = model.quantizer
    picks = pick_indices(len(dataset), max_images)
    if not picks:
        raise VqtkError("data: the evaluation set is empty")
    grid_at = set(pick_indices(len(picks), min(grid_images, len(picks))))
    loader = DataLoader(Subset(dataset, picks), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate)
    if isinstance(lpips, LPIPSMetric):
        lpips.to(device)
    stats_real = stats_fake = None
    if isinstance(inception, fid_mod.InceptionFeatures):
        inception.to(device)
        stats_real = fid_mod.FeatureStatistics(fid_mod.FEATURE_DIM, device)
        stats_fake = fid_mod.FeatureStatistics(fid_mod.FEATURE_DIM, device)
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
        if stats_real is not None:
            stats_real.add(inception(x))
            stats_fake.add(inception(rec))
        for i in range(x.shape[0]):
            if seen + i in grid_at:
                grid_real.append(x[i].cpu())
                grid_fake.append(rec[i].cpu())
        seen += x.shape[0]
    seconds = time.perf_counter() - start

    rfid: dict[str, Any] | Unavailable
    if isinstance(inception, Unavailable):
        rfid = inception
    elif stats_real is None:
        rfid = Unavailable("not requested")
    elif seen < 2:
        rfid = Unavailable(f"needs at least 2 images, got {seen}")
    else:
        mu1, cov1 = stats_real.mean_cov()
        mu2, cov2 = stats_fake.mean_cov()
        rfid = {"value": fid_mod.frechet_distance(mu1, cov1, mu2, cov2)}
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
