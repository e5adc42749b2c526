"""Tokenizer inference: images to code indices (encode) and indices back to images (decode).

vqtk's ``VQGAN.encode_to_indices`` / ``decode_indices`` for each quantizer
variant, against the plain taming model (VQ) of the same sizes, in eval mode
without gradients.
"""

from __future__ import annotations

import torch

from vqtk.build import build_vqgan, count_parameters
from vqtk.recipe import load_recipe

from benchmarks.baseline_taming import VQModel
from benchmarks.context import Context, compare, maybe_flops, new_record, side_result, warm_and_probe
from benchmarks.matrix import QUANTIZERS, Stage1Config, stage1_overrides
from benchmarks.memory import PeakMemory
from benchmarks.stage1_step import baseline_settings, reference_resolved
from benchmarks.timing import alternate

FAMILY = "codec"
UNIT = "images/s"


def items() -> list[tuple[str, str]]:
    """(quantizer, direction) pairs measured."""
    return [(q, d) for q in QUANTIZERS for d in ("encode", "decode")]


def measure(ctx: Context, quantizer: str, direction: str) -> dict:
    config = Stage1Config(quantizer, quantizer=quantizer)
    overrides = stage1_overrides(config, ctx.preset, str(ctx.device))
    batch = ctx.preset.codec_batch
    record = new_record(FAMILY, f"{quantizer}-{direction}", f"{direction} · {quantizer}", UNIT,
                        recipe=str(ctx.preset.recipe), overrides=overrides, quantizer=quantizer,
                        direction=direction, batch=batch)
    recipe, resolved = load_recipe(ctx.preset.recipe_path, overrides)
    resolution = resolved["data"]["resolution"]
    record["config"]["resolution"] = resolution
    x = ctx.images(batch, resolution)
    memory = PeakMemory(ctx.device)

    torch.manual_seed(ctx.seed)
    memory.start()
    ours = build_vqgan(recipe).to(ctx.device).eval()
    ours_idx = ours.encode_to_indices(x)
    ours_fn = (lambda: ours.encode_to_indices(x)) if direction == "encode" else (lambda: ours.decode_indices(ours_idx))
    ours_mem = warm_and_probe(ours_fn, memory, ctx.warmup)

    settings = baseline_settings(reference_resolved(ctx))
    memory.start()
    base = VQModel(arch=settings["arch"], n_embed=settings["n_embed"], embed_dim=settings["embed_dim"]).to(ctx.device)
    base.eval()
    base_idx = base.encode_to_indices(x)
    base_fn = (lambda: base.encode_to_indices(x)) if direction == "encode" else (lambda: base.decode_indices(base_idx))
    base_mem = warm_and_probe(base_fn, memory, ctx.warmup)

    flops_ours, flops_base = maybe_flops(ours_fn, True), maybe_flops(base_fn, True)
    times = alternate({"vqtk": ours_fn, "baseline": base_fn}, ctx.device, warmup=0, repeats=ctx.repeats)
    peak = ctx.peak_for("fp32")
    record["vqtk"] = side_result(f"vqtk VQGAN.{direction}_{'to_indices' if direction == 'encode' else 'indices'}",
                                 times["vqtk"], batch, memory_mb=ours_mem, flops=flops_ours, peak_tflops=peak,
                                 params=count_parameters(ours), index_shape=list(ours_idx.shape))
    record["baseline"] = side_result(f"plain taming VQModel ({direction})", times["baseline"], batch,
                                     memory_mb=base_mem, flops=flops_base, peak_tflops=peak,
                                     params=count_parameters(base), index_shape=list(base_idx.shape))
    record["memory_method"] = memory.method
    return compare(record)
