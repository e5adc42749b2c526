"""Quantizers alone at ImageNet-like sizes (16384 codes, 256 channels, 16x16 grids, batch 32).

For each variant: a training call (forward in train mode, backward of a loss on
the quantized latents plus the quantizer's own loss, as in stage 1) and an
encode call (eval-mode forward without gradients). The baseline is taming's
plain ``VectorQuantizer2`` at the same sizes. ``vq-no-dead-code`` is ``vq``
with dead-code replacement off, which shows what that replacement costs.
"""

from __future__ import annotations

from typing import Callable

import torch

from vqtk.build import build_component
from vqtk.recipe import load_recipe

from benchmarks.baseline_taming import VectorQuantizer
from benchmarks.context import Context, compare, maybe_flops, new_record, side_result, warm_and_probe
from benchmarks.matrix import QUANTIZERS, quantizer_overrides
from benchmarks.memory import PeakMemory
from benchmarks.timing import alternate

FAMILY = "quantizer"
UNIT = "vectors/s"

#: (key, recipe variant, table changes)
VARIANTS = (*((q, q, {}) for q in QUANTIZERS), ("vq-no-dead-code", "vq", {"threshold_ema_dead_code": 0.0}))
MODES = ("train", "encode")


def items() -> list[tuple[str, str]]:
    return [(key, mode) for key, _, _ in VARIANTS for mode in MODES]


def _train_call(module: torch.nn.Module, z: torch.Tensor, plain: bool) -> Callable[[], None]:
    def call() -> None:
        module.train()
        z.grad = None
        if plain:
            q, loss, _ = module(z)
        else:
            out = module(z)
            q, loss = out.quantized, out.loss
        (q.float().square().mean() + loss).backward()

    return call


def _encode_call(module: torch.nn.Module, z: torch.Tensor, plain: bool) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        module.eval()
        with torch.no_grad():
            return module(z)[2] if plain else module(z).indices

    return call


def measure(ctx: Context, key: str, mode: str) -> dict:
    variant, changes = next((v, c) for k, v, c in VARIANTS if k == key)
    p = ctx.preset
    overrides = quantizer_overrides(variant, p, **changes)
    shape = (p.quantizer_batch, p.quantizer_dim, p.quantizer_grid, p.quantizer_grid)
    record = new_record(FAMILY, f"{key}-{mode}", f"{mode} · {key}", UNIT, recipe=str(p.recipe),
                        overrides=overrides, input_shape=list(shape), codes=p.quantizer_codes)
    recipe, resolved = load_recipe(p.recipe_path, overrides)
    record["config"]["quantizer"] = resolved["model"]["quantizer"]
    g = torch.Generator().manual_seed(ctx.seed)
    z = torch.randn(*shape, generator=g).to(ctx.device).requires_grad_(mode == "train")
    memory = PeakMemory(ctx.device)

    torch.manual_seed(ctx.seed)
    memory.start()
    ours = build_component(recipe.model.quantizer, "model.quantizer").to(ctx.device)
    ours_fn = (_train_call if mode == "train" else _encode_call)(ours, z, plain=False)
    ours_mem = warm_and_probe(ours_fn, memory, ctx.warmup)

    memory.start()
    base = VectorQuantizer(p.quantizer_codes, p.quantizer_dim, 0.25).to(ctx.device)
    base_fn = (_train_call if mode == "train" else _encode_call)(base, z, plain=True)
    base_mem = warm_and_probe(base_fn, memory, ctx.warmup)

    flops_ours, flops_base = maybe_flops(ours_fn, True), maybe_flops(base_fn, True)
    times = alternate({"vqtk": ours_fn, "baseline": base_fn}, ctx.device, warmup=0, repeats=ctx.repeats)
    vectors = shape[0] * shape[2] * shape[3]
    peak = ctx.peak_for("fp32")
    record["vqtk"] = side_result(f"vqtk {type(ours).__name__} ({mode})", times["vqtk"], vectors,
                                 memory_mb=ours_mem, flops=flops_ours, peak_tflops=peak,
                                 codebook_size=ours.codebook_size, num_codebooks=ours.num_codebooks)
    record["baseline"] = side_result(f"plain taming VectorQuantizer2 ({mode})", times["baseline"], vectors,
                                     memory_mb=base_mem, flops=flops_base, peak_tflops=peak,
                                     codebook_size=p.quantizer_codes, num_codebooks=1)
    record["memory_method"] = memory.method
    return compare(record)
