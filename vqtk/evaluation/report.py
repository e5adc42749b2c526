"""Evaluating a trained tokenizer over a whole evaluation set: the JSON report and its pictures.

:func:`run_evaluation` is what ``vqtk eval`` calls: it loads a checkpoint,
builds the evaluation set (the recipe's data source, optionally overridden, or
an image folder), runs :func:`evaluate` and writes the report (schema in
``docs/eval_report.md``), a code-frequency histogram and a reconstruction grid.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import attrs
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset, Subset

from vqtk.errors import RecipeError, VqtkError
from vqtk.evaluation import fid as fid_mod
from vqtk.evaluation.metrics import (
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    LPIPSMetric,
    Unavailable,
    build_lpips_metric,
    code_histogram,
    codebook_statistics,
    psnr_per_image,
    ssim_per_image,
    to_unit_range,
)

log = logging.getLogger("vqtk")

FORMAT = "vqtk-eval-report-1"
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
    return torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])


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
        counts += code_histogram(out.quantizer.indices, codebook_size=quantizer.codebook_size,
                                 num_codebooks=quantizer.num_codebooks)
        real01, fake01 = to_unit_range(x), to_unit_range(rec)
        psnrs.append(psnr_per_image(real01, fake01).cpu())
        if ssim_result is None:
            try:
                ssims.append(ssim_per_image(real01, fake01).cpu())
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


# -- the report ------------------------------------------------------------------


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


def metrics_section(result: EvaluationResult, *, inception_weights: Optional[Path] = None,
                    lpips: LPIPSMetric | Unavailable | None = None) -> dict[str, Any]:
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
            extra.update(implementation=f"loss component 'lpips' of plugin {lpips.plugin!r} (lpips package, v0.1)",
                         config=lpips.config)
        metrics["lpips"] = _summary(result.lpips, **extra)
    if isinstance(result.rfid, Unavailable):
        metrics["rfid"] = result.rfid.as_dict()
    else:
        rfid = {
            "available": True,
            "value": result.rfid["value"],
            "unit": "1",
            "images": result.images,
            "implementation": fid_mod.IMPLEMENTATION,
            "weights": str(inception_weights) if inception_weights is not None else None,
            "feature_layer": fid_mod.FEATURE_LAYER,
            "resize": fid_mod.RESIZE,
            "note": fid_mod.NOT_COMPARABLE,
        }
        if result.images < fid_mod.FEATURE_DIM:
            rfid["warning"] = (
                f"{result.images} images < {fid_mod.FEATURE_DIM} feature dimensions: the covariances are "
                f"rank-deficient and FID is biased upwards; compare only at equal image counts"
            )
        metrics["rfid"] = rfid
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


def build_report(
    result: EvaluationResult,
    *,
    checkpoint: dict[str, Any],
    data: dict[str, Any],
    model: dict[str, Any],
    settings: dict[str, Any],
    files: dict[str, str],
    lpips: LPIPSMetric | Unavailable | None = None,
    inception_weights: Optional[Path] = None,
) -> dict[str, Any]:
    """The whole JSON report (schema ``vqtk-eval-report-1``, see docs/eval_report.md)."""
    from vqtk import __version__

    return {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"vqtk": __version__, "torch": torch.__version__},
        "checkpoint": checkpoint,
        "model": model,
        "data": {**data, "images": result.images},
        "settings": settings,
        "metrics": metrics_section(result, inception_weights=inception_weights, lpips=lpips),
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


# -- the histogram picture ---------------------------------------------------------------

_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def code_histogram_image(counts: torch.Tensor, *, title: str = "code frequencies",
                         size: tuple[int, int] = (900, 520)) -> Image.Image:
    """Sorted code frequencies (fraction of positions, log scale) against rank, one line per codebook."""
    counts = counts.detach().cpu().long()
    if counts.dim() == 1:
        counts = counts.unsqueeze(0)
    q, k = counts.shape
    width, height = size
    left, right, top, bottom = 70, 20, 50, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    stats = codebook_statistics(counts)
    d.text((left, 8), title, fill="black")
    d.text((left, 24), f"usage {100 * stats['usage_mean']:.1f}% of {k} codes, perplexity "
                       f"{stats['perplexity_mean']:.1f}, entropy {stats['entropy_bits_mean']:.2f} / "
                       f"{math.log2(k):.2f} bits" + (f" (mean of {q} codebooks)" if q > 1 else ""), fill="black")
    totals = counts.sum(dim=1, keepdim=True).clamp_min(1).double()
    freqs = (counts.double() / totals).sort(dim=1, descending=True).values
    positive = freqs[freqs > 0]
    d.rectangle([left, top, width - right, height - bottom], outline="black")
    if positive.numel() == 0:
        d.text((left + 10, height // 2), "no codes", fill="black")
        return img
    lo, hi = math.log10(float(positive.min())), math.log10(float(positive.max()))
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-6 else (lo, hi)
    lo -= max(0.1 * (hi - lo), 0.2)  # the rarest code still gets a visible bar
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(rank: float, value: float) -> tuple[float, float]:
        x = left + (rank + 0.5) / k * plot_w
        y = top + (hi - math.log10(value)) / (hi - lo) * plot_h
        return x, y

    for i in range(5):
        v = 10 ** (lo + (hi - lo) * i / 4)
        _, y = xy(0, v)
        d.line([left - 4, y, left, y], fill="black")
        d.text((4, y - 6), f"{v:.2g}", fill="black")
    for i in range(5):
        rank = (k - 1) * i / 4
        x, _ = xy(rank, 10**hi)
        d.line([x, height - bottom, x, height - bottom + 4], fill="black")
        d.text((x - 10, height - bottom + 8), f"{int(round(rank))}", fill="black")
    d.text((width - right - 150, height - 16), "code rank (by frequency)", fill="black")
    for row in range(q):
        colour = _COLOURS[row % len(_COLOURS)]
        values = [float(v) for v in freqs[row]]
        used = sum(v > 0 for v in values)
        # one point per code, or per pixel column when codes outnumber columns (the column's largest)
        per = max(1, math.ceil(k / plot_w))
        cols = [(r, max(values[r : r + per])) for r in range(0, k, per)]
        if q == 1:
            for r, v in cols:
                if v > 0:
                    x0, y = xy(r - 0.5, v)
                    x1, _ = xy(min(r + per, k) - 0.5, v)
                    d.rectangle([x0, y, max(x0, x1 - (1 if per == 1 and x1 - x0 > 3 else 0)), height - bottom],
                                fill=(150, 185, 220), outline=colour if x1 - x0 > 3 else None)
        else:
            pts = [xy(r, v) for r, v in cols if v > 0]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2)
            elif pts:
                x, y = pts[0]
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
            d.text((width - right - 200, top + 6 + 14 * row), f"codebook {row}: {used} used", fill=colour)
        if q == 1 and used < k:
            x, _ = xy(used - 0.5, 10**hi)
            for y0 in range(top, height - bottom, 8):
                d.line([x, y0, x, min(y0 + 4, height - bottom)], fill=(200, 0, 0))
            d.text((x + 4, top + 6), f"{used} of {k} codes used", fill=(200, 0, 0))
    return img


# -- from a checkpoint --------------------------------------------------------------------


def _checkpoint_info(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    from vqtk.io.checkpoint import MODEL_FILE, resolve_checkpoint

    folder = resolve_checkpoint(path)
    with safe_open(str(folder / MODEL_FILE), framework="pt") as f:
        meta = f.metadata() or {}
    return {"path": str(Path(folder).resolve()), "step": int(meta.get("step", "0")), "stage": meta.get("stage")}


def eval_recipe(recipe: Any, *, data_overrides: Sequence[str] = (), data_path: Optional[str] = None,
                registry: Any = None) -> Any:
    """The checkpoint's recipe with its ``[data]`` table replaced (``data_path``) and/or overridden.

    ``data_path`` evaluates every image under that folder (an ``image_folder``
    source at the recipe's resolution, centre crops). ``data_overrides`` are
    ``key=value`` TOML literals applied inside ``[data]``.
    """
    from vqtk.recipe import apply_overrides, recipe_from_dict
    from vqtk.recipe.converter import RecipeConverter
    from vqtk.registry import default_registry

    if not data_overrides and data_path is None:
        return recipe
    registry = registry or default_registry()
    raw = RecipeConverter(registry).unstructure(recipe)
    if data_path is not None:
        folder = Path(data_path).expanduser()
        if not folder.is_dir():
            raise VqtkError(f"--data-path: no such folder {data_path}")
        resolution = getattr(recipe.data.config, "resolution", None) or 256
        raw["data"] = {"type": "image_folder", "path": str(folder), "eval_path": str(folder),
                       "resolution": resolution}
    for item in data_overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise VqtkError(f"--data: expected KEY=VALUE, got {item!r}")
    raw = apply_overrides(raw, [f"data.{o}" for o in data_overrides])
    try:
        return recipe_from_dict(raw, registry)
    except RecipeError as exc:
        raise RecipeError([p for p in exc.problems if p.startswith("data")] or exc.problems) from None


def run_evaluation(
    checkpoint: str | Path,
    *,
    out: str | Path = "eval_report.json",
    data_overrides: Sequence[str] = (),
    data_path: Optional[str] = None,
    batch_size: int = 16,
    max_images: Optional[int] = None,
    lpips_weights: Optional[str] = None,
    inception_weights: Optional[str] = None,
    device: Optional[str] = None,
    num_workers: int = 0,
    registry: Any = None,
) -> dict[str, Any]:
    """Evaluate a tokenizer checkpoint; write the JSON report and its two PNGs; return the report.

    The PNGs go next to the report: ``<stem>_codes.png`` (code-frequency
    histogram) and ``<stem>_recon.png`` (top row images, bottom row reconstructions).
    """
    from vqtk.build import build_data, check_data_fits
    from vqtk.pretrained import load
    from vqtk.io.images import save_grid, save_png

    if batch_size <= 0:
        raise VqtkError(f"--batch-size: must be > 0, got {batch_size}")
    if max_images is not None and max_images <= 0:
        raise VqtkError(f"--max-images: must be > 0, got {max_images}")
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise VqtkError(f"--out: the report is JSON, give a path ending in .json (got {out})")
    info = _checkpoint_info(checkpoint)
    if info["stage"] == "2":
        log.info("%s is a stage-2 checkpoint: evaluating its tokenizer", info["path"])
    model = load(checkpoint, device=device, registry=registry)
    recipe = eval_recipe(model.recipe, data_overrides=data_overrides, data_path=data_path, registry=registry)
    source = build_data(recipe, registry)
    check_data_fits(model, source.resolution, source.channels)
    dataset = source.eval_set()
    if len(dataset) == 0:
        raise VqtkError(f"data: the evaluation set is empty ({source.describe()})")
    log.info("evaluating %s on %s", info["path"], source.describe())

    lpips: LPIPSMetric | Unavailable
    if source.channels != 3:
        lpips = Unavailable(f"LPIPS needs RGB images; this data has {source.channels} channels")
    else:
        lpips = build_lpips_metric(recipe=model.recipe, registry=registry, backbone_weights=lpips_weights)
        if isinstance(lpips, Unavailable) and lpips_weights is None:
            lpips = Unavailable(f"{lpips.reason} (vqtk eval: or --lpips-weights PATH)")
    weights_path = fid_mod.find_inception_weights(inception_weights)
    inception: Any
    if weights_path is None:
        inception = Unavailable(fid_mod.missing_weights_reason())
    else:
        inception = fid_mod.InceptionFeatures(weights_path)

    result = evaluate(model, dataset, batch_size=batch_size, max_images=max_images, lpips=lpips,
                      inception=inception, num_workers=num_workers)
    hist_path = out.with_name(f"{out.stem}_codes.png")
    grid_path = out.with_name(f"{out.stem}_recon.png")
    save_png(code_histogram_image(result.counts, title=f"code frequencies: {Path(info['path']).name}, "
                                                      f"{result.images} images"), hist_path)
    save_grid([result.grid_real, result.grid_reconstruction], grid_path, max_columns=GRID_IMAGES)

    q = model.quantizer
    h, w = model.latent_grid(source.resolution, source.resolution)
    model_info = {
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
    data_info = {
        "source": recipe.data.type,
        "description": source.describe(),
        "resolution": source.resolution,
        "set_size": len(dataset),
        "overrides": list(data_overrides),
        "path": str(Path(data_path).expanduser().resolve()) if data_path is not None else None,
    }
    skipped = getattr(source, "skipped", 0)
    if isinstance(skipped, int) and skipped:
        data_info["skipped_unreadable"] = skipped
    settings = {"batch_size": batch_size, "max_images": max_images,
                "device": str(next(model.parameters()).device), "precision": "fp32"}
    report = build_report(result, checkpoint=info, data=data_info, model=model_info, settings=settings,
                          files={"code_histogram": hist_path.name, "reconstructions": grid_path.name},
                          lpips=lpips, inception_weights=weights_path)
    write_json(report, out)
    return report
