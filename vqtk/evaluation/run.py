"""``vqtk eval CKPT`` as a function: load a checkpoint, build its evaluation set, evaluate, write the report.

:func:`eval_recipe` is the recipe surgery behind ``--data`` / ``--data-path``;
:func:`run_evaluation` puts the loop (:mod:`~vqtk.evaluation.loop`), the report
(:mod:`~vqtk.evaluation.report`) and the pictures (:mod:`~vqtk.evaluation.plots`) together.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from safetensors import safe_open

from vqtk.build import build_data, check_data_fits
from vqtk.errors import RecipeError, VqtkError
from vqtk.evaluation.fid import FidInception, load_fid_inception
from vqtk.evaluation.fid_stats import FidStatistics
from vqtk.evaluation.loop import GRID_IMAGES, evaluate
from vqtk.evaluation.metrics import Unavailable
from vqtk.evaluation.perceptual import LPIPSMetric, build_lpips_metric
from vqtk.evaluation.plots import code_histogram_image
from vqtk.evaluation.report import build_report, data_section, model_section, settings_section, write_json
from vqtk.evaluation.sets import folder_source, folder_table  # noqa: F401 - folder_source: public here too
from vqtk.io.checkpoint import MODEL_FILE, resolve_checkpoint
from vqtk.io.images import save_grid, save_png
from vqtk.pretrained import load
from vqtk.recipe import apply_overrides, recipe_from_dict
from vqtk.recipe.converter import RecipeConverter
from vqtk.registry import default_registry

log = logging.getLogger("vqtk")


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The report's ``checkpoint`` object: the step folder's absolute path, its step and stage."""
    folder = resolve_checkpoint(path)
    with safe_open(str(folder / MODEL_FILE), framework="pt") as f:
        meta = f.metadata() or {}
    return {"path": str(Path(folder).resolve()), "step": int(meta.get("step", "0")), "stage": meta.get("stage")}


def data_resolution(recipe: Any) -> int:
    """The image side of the recipe's ``[data]`` table (every data source declares ``resolution``)."""
    return recipe.data.config.resolution


def eval_recipe(recipe: Any, *, data_overrides: Sequence[str] = (), data_path: Optional[str] = None,
                registry: Any = None) -> Any:
    """The checkpoint's recipe with its ``[data]`` table replaced (``data_path``) and/or overridden.

    ``data_path`` evaluates every image under that folder (the installed
    :class:`FolderDataSource`, built-in ``image_folder``, at the recipe's resolution, centre crops). ``data_overrides`` are
    ``key=value`` TOML literals applied inside ``[data]``.
    """
    if not data_overrides and data_path is None:
        return recipe
    registry = registry or default_registry()
    raw = RecipeConverter(registry).unstructure(recipe)
    if data_path is not None:
        raw["data"] = folder_table(data_path, data_resolution(recipe), registry)
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
    ref_stats: Optional[str] = None,
    device: Optional[str] = None,
    num_workers: int = 0,
    registry: Any = None,
) -> dict[str, Any]:
    """Evaluate a tokenizer checkpoint; write the JSON report and its two PNGs; return the report.

    The PNGs go next to the report: ``<stem>_codes.png`` (code-frequency
    histogram) and ``<stem>_recon.png`` (top row images, bottom row reconstructions).
    The arguments are those of ``vqtk eval``, which checks them first
    (:mod:`vqtk.cli.eval_cmd`); ``lpips_weights`` / ``inception_weights`` are
    weight files, ``data_overrides`` ``KEY=VALUE`` items of ``[data]``;
    ``ref_stats`` is a ``vqtk fid-stats`` file, rFID's reference instead of the
    evaluated images (it is checked before anything else is loaded).
    """
    out = Path(out)
    reference = FidStatistics.load(ref_stats) if ref_stats is not None else None
    fid = load_fid_inception(inception_weights)
    if reference is not None and isinstance(fid, FidInception):
        reference.check_weights(fid)
    info = checkpoint_info(checkpoint)
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
    if isinstance(fid, FidInception) and source.channels not in (1, 3):
        fid = Unavailable(f"FID needs RGB (or grayscale) images; this data has {source.channels} channels")

    result = evaluate(model, dataset, batch_size=batch_size, max_images=max_images, lpips=lpips,
                      fid=fid, fid_reference=reference, num_workers=num_workers)
    hist_path = out.with_name(f"{out.stem}_codes.png")
    grid_path = out.with_name(f"{out.stem}_recon.png")
    save_png(code_histogram_image(result.counts, title=f"code frequencies: {Path(info['path']).name}, "
                                                      f"{result.images} images"), hist_path)
    save_grid([result.grid_real, result.grid_reconstruction], grid_path, max_columns=GRID_IMAGES)

    model_info = model_section(model, recipe, source.resolution)
    data_info = data_section(recipe, source, len(dataset), overrides=data_overrides, path=data_path)
    settings = settings_section(batch_size=batch_size, max_images=max_images, device=next(model.parameters()).device)
    report = build_report(result, checkpoint=info, data=data_info, model=model_info, settings=settings,
                          files={"code_histogram": hist_path.name, "reconstructions": grid_path.name},
                          lpips=lpips)
    write_json(report, out)
    return report
