"""The generator's optimizer step alone: which Adam implementation vqtk's ``make_optimizer`` gets.

All optimizers update the parameters of the reference tokenizer (same
gradients) and are timed in alternation with taming's choice,
``torch.optim.Adam`` with default settings. ``make_optimizer`` picks the fused
kernel where the device has one; ``adamw-foreach`` and ``adamw-fused`` force
``foreach=True`` or ``fused=True`` to show what each path costs.
"""

from __future__ import annotations

from typing import Optional

import torch

from vqtk.build import build_vqgan, count_parameters
from vqtk.recipe import load_recipe
from vqtk.train.loop import make_optimizer

from benchmarks.context import Context, compare, new_record, side_result
from benchmarks.matrix import STAGE1_CONFIGS, stage1_overrides
from benchmarks.timing import alternate

FAMILY = "optimizer"
UNIT = "steps/s"
ITEMS = ("make_optimizer", "adamw-foreach", "adamw-fused")


def implementation(opt: torch.optim.Optimizer, device: torch.device) -> str:
    """Which code path ``opt.step`` takes: fused, foreach (multi-tensor) or for-loop (one tensor at a time)."""
    if opt.defaults.get("fused"):
        return "fused"
    foreach: Optional[bool] = opt.defaults.get("foreach")
    if foreach is None:  # torch's default: foreach for CUDA tensors, the for-loop elsewhere
        foreach = device.type == "cuda"
    return "foreach" if foreach else "for-loop"


def measure_all(ctx: Context, keys: list[str]) -> list[dict]:
    wanted = [k for k in ITEMS if k in keys]
    if not wanted:
        return []
    overrides = stage1_overrides(STAGE1_CONFIGS[0], ctx.preset, str(ctx.device))
    recipe, _ = load_recipe(ctx.preset.recipe_path, overrides)
    torch.manual_seed(ctx.seed)
    model = build_vqgan(recipe).to(ctx.device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    o = recipe.train.optimizer
    baseline = torch.optim.Adam(params, lr=o.lr, betas=o.betas)
    kwargs = dict(lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    makers = {
        "make_optimizer": lambda: make_optimizer(params, o),
        "adamw-foreach": lambda: torch.optim.AdamW(params, foreach=True, **kwargs),
        "adamw-fused": lambda: torch.optim.AdamW(params, fused=True, **kwargs),
    }
    records = []
    for key in wanted:
        record = new_record(FAMILY, key, f"AdamW step · {key}", UNIT, recipe=str(ctx.preset.recipe),
                            overrides=overrides, tensors=len(params), params=count_parameters(model))
        try:
            opt = makers[key]()
        except (RuntimeError, ValueError) as exc:  # e.g. no fused kernel for this device
            record["skipped"] = f"{type(exc).__name__}: {exc}"
            records.append(record)
            continue
        times = alternate({"vqtk": opt.step, "baseline": baseline.step}, ctx.device,
                          warmup=ctx.warmup, repeats=ctx.repeats)
        record["vqtk"] = side_result(f"{key} ({implementation(opt, ctx.device)})", times["vqtk"], 1)
        record["baseline"] = side_result(f"torch.optim.Adam defaults ({implementation(baseline, ctx.device)})",
                                         times["baseline"], 1)
        records.append(compare(record))
    return records
