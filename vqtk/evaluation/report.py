"""The JSON report of ``vqtk eval`` (schema ``vqtk-eval-report-1``, documented in ``docs/eval_report.md``).

The report's keys are written here (the ``checkpoint`` object, read from the
checkpoint file, comes from :func:`vqtk.evaluation.run.checkpoint_info`): the
``metrics`` table from an :class:`~vqtk.evaluation.loop.EvaluationResult`, the
``model``, ``data`` and ``settings`` sections, the whole record
(:func:`build_report`) and the file (:func:`write_json`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from vqtk.evaluation import fid as fid_mod
from vqtk.evaluation.loop import EvaluationResult
from vqtk.evaluation.metrics import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, Unavailable, codebook_statistics
from vqtk.evaluation.perceptual import LPIPSMetric
from vqtk.interfaces import DataSource
from vqtk.version import __version__

FORMAT = "vqtk-eval-report-1"


def _summary(values: torch.Tensor, **extra: Any) -> dict[str, Any]:
    v = values.double()
    return {
        "available": True,
        "value": float(v.mean()),
        "std": float(v.std(unbiased=False)) if v.numel() > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        **extra,
    }


def rfid_entry(rfid: dict[str, Any], *, resolution: Optional[int] = None) -> dict[str, Any]:
    """The report's ``rfid`` entry: value, images, implementation and protocol, weights, reference."""
    inception = rfid["inception"]
    fake, reference = rfid["reconstructions"], rfid["reference"]
    entry: dict[str, Any] = {
        "available": True,
        "value": rfid["value"],
        "unit": "1",
        "images": fake.count,
        "computed": "Fréchet distance between the Inception pool3 statistics (mean, unbiased covariance, "
                    "float64) of the reconstructions and of the reference",
        "implementation": inception["implementation"],
        "feature_layer": inception["feature_layer"],
        "protocol": inception["protocol"],
        "quantize": inception["quantize"],
        "resize": inception["resize"],
        "weights": {"path": inception["weights"], "sha256": inception["weights_sha256"]},
        "reference": reference.reference_entry(),
        "note": fid_mod.COMPARABLE,
    }
    warnings = []
    smallest = min(fake.count, reference.count)
    if smallest < fid_mod.FEATURE_DIM:
        warnings.append(f"{smallest} images < {fid_mod.FEATURE_DIM} feature dimensions: the covariances are "
                        f"rank-deficient and FID is biased upwards; compare only at equal image counts")
    made_at = reference.meta.get("resolution") if reference.path is not None else None
    if made_at is not None and resolution is not None and made_at != resolution:
        warnings.append(f"the reference statistics are of {made_at} px images, the evaluated images are "
                        f"{resolution} px")
    if warnings:
        entry["warning"] = "; ".join(warnings)
    return entry


def metrics_section(result: EvaluationResult, *, lpips: LPIPSMetric | Unavailable | None = None,
                    resolution: Optional[int] = None) -> dict[str, Any]:
    """The report's ``metrics`` table (see docs/eval_report.md)."""
    metrics: dict[str, Any] = {
        "psnr": _summary(result.psnr, unit="dB", computed="per image on [0, 1]: 10*log10(1/MSE), then averaged"),
    }
    if isinstance(result.ssim, Unavailable):
        metrics["ssim"] = result.ssim.as_dict()
    else:
        metrics["ssim"] = _summary(
            result.ssim, unit="1",
            computed=f"per image on [0, 1]: Gaussian window {SSIM_WINDOW} taps sigma {SSIM_SIGMA}, "
                     f"K1 {SSIM_K1} K2 {SSIM_K2}, valid positions, averaged over channels (vqtk, torch)",
        )
    if isinstance(result.lpips, Unavailable):
        metrics["lpips"] = result.lpips.as_dict()
    else:
        extra: dict[str, Any] = {"unit": "1", "computed": "per image, then averaged"}
        if isinstance(lpips, LPIPSMetric):
            extra.update(implementation=lpips.implementation, config=lpips.config)
        metrics["lpips"] = _summary(result.lpips, **extra)
    if isinstance(result.rfid, Unavailable):
        metrics["rfid"] = result.rfid.as_dict()
    else:
        metrics["rfid"] = rfid_entry(result.rfid, resolution=resolution)
    stats = codebook_statistics(result.counts)
    q, k = result.counts.shape
    metrics["codebook_usage"] = {
        "available": True, "value": stats["usage_mean"], "unit": "fraction",
        "per_codebook": stats["usage"], "used_codes": stats["used_codes"], "codebook_size": k,
        "computed": "codes used at least once over the whole set / codebook_size, mean over codebooks",
    }
    metrics["perplexity"] = {
        "available": True, "value": stats["perplexity_mean"], "unit": "codes", "max": k,
        "per_codebook": stats["perplexity"],
        "computed": "2 ** index_entropy of the set's code histogram, mean over codebooks",
    }
    metrics["index_entropy"] = {
        "available": True, "value": stats["entropy_bits_mean"], "unit": "bits", "max": math.log2(k),
        "per_codebook": stats["entropy_bits"],
        "computed": "Shannon entropy -sum p log2 p of the set's code frequencies, mean over codebooks",
    }
    return metrics


def model_section(model: Any, recipe: Any, resolution: int) -> dict[str, Any]:
    """The report's ``model`` object: the recipe's component types and the tokenizer's sizes at ``resolution``."""
    q = model.quantizer
    h, w = model.latent_grid(resolution, resolution)
    return {
        "name": recipe.name,
        "encoder": recipe.model.encoder.type,
        "quantizer": recipe.model.quantizer.type,
        "decoder": recipe.model.decoder.type,
        "codebook_size": q.codebook_size,
        "num_codebooks": q.num_codebooks,
        "downsample_factor": model.downsample_factor,
        "latent_grid": [h, w],
        "bits_per_image": q.bits_per_position * h * w,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def data_section(recipe: Any, source: DataSource, set_size: int, *, overrides: Sequence[str] = (),
                 path: Optional[str] = None) -> dict[str, Any]:
    """The report's ``data`` object (``images`` is added by :func:`build_report`)."""
    data = {
        "source": recipe.data.type,
        "description": source.describe(),
        "resolution": source.resolution,
        "set_size": set_size,
        "overrides": list(overrides),
        "path": str(Path(path).expanduser().resolve()) if path is not None else None,
    }
    skipped = int(source.skipped_files())
    if skipped:
        data["skipped_unreadable"] = skipped
    return data


def settings_section(*, batch_size: int, max_images: Optional[int], device: Any) -> dict[str, Any]:
    """The report's ``settings`` object (the pass always runs in float32)."""
    return {"batch_size": batch_size, "max_images": max_images, "device": str(device), "precision": "fp32"}


def build_report(
    result: EvaluationResult,
    *,
    checkpoint: dict[str, Any],
    data: dict[str, Any],
    model: dict[str, Any],
    settings: dict[str, Any],
    files: dict[str, str],
    lpips: LPIPSMetric | Unavailable | None = None,
) -> dict[str, Any]:
    """The whole JSON report (schema ``vqtk-eval-report-1``, see docs/eval_report.md)."""
    return {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"vqtk": __version__, "torch": torch.__version__},
        "checkpoint": checkpoint,
        "model": model,
        "data": {**data, "images": result.images},
        "settings": settings,
        "metrics": metrics_section(result, lpips=lpips, resolution=data.get("resolution")),
        "timing": {"seconds": result.seconds, "images_per_s": result.images / max(result.seconds, 1e-9)},
        "files": files,
    }


def _json_safe(value: Any) -> Any:
    """Non-finite floats (a diverged model's NaN reconstructions) become ``null``: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write atomically, indented, with a trailing newline; non-finite numbers as ``null``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
