"""Stage-2 sampling speed: GPT with and without its KV cache, and MaskGIT, at equal settings.

The priors come from the shipped recipes (``quickstart.toml`` for the GPT,
``variants/maskgit_prior.toml`` for MaskGIT) with the preset's sizes applied to
both, so they share codebook, grid, width, depth and heads. All three are timed
in alternating rounds; there is no taming baseline for this family, so each
record compares against the GPT sampled without a cache instead.
"""

from __future__ import annotations

import torch

from vqtk.build import build_component, count_parameters
from vqtk.interfaces import SamplingOptions
from vqtk.recipe import load_recipe

from benchmarks.context import Context, maybe_flops, new_record, side_result
from benchmarks.matrix import PRIOR_SOURCES, prior_overrides
from benchmarks.presets import RECIPES
from benchmarks.timing import alternate, paired_ratios

FAMILY = "prior"
UNIT = "tokens/s"

#: (key, prior variant, KV cache) of each measurement; the first is the reference of the others
ITEMS = (("gpt-no-cache", "gpt", False), ("gpt-kv-cache", "gpt", True), ("maskgit", "maskgit", True))


def build(ctx: Context, variant: str):
    recipe, resolved = load_recipe(RECIPES / PRIOR_SOURCES[variant], prior_overrides(variant, ctx.preset))
    torch.manual_seed(ctx.seed)
    prior = build_component(recipe.prior, "prior").to(ctx.device).eval()
    return prior, resolved["prior"]


def measure_all(ctx: Context, keys: list[str]) -> list[dict]:
    """Time the selected items (plus the no-cache GPT they are compared with) in one alternation."""
    wanted = [item for item in ITEMS if item[0] in keys]
    if not wanted:
        return []
    if ITEMS[0] not in wanted:
        wanted.insert(0, ITEMS[0])
    priors = {v: build(ctx, v) for v in {variant for _, variant, _ in wanted}}
    batch = ctx.preset.prior_batch
    calls, records = {}, {}
    for key, variant, cache in wanted:
        prior, table = priors[variant]
        h, w = prior.grid_size
        options = SamplingOptions(temperature=1.0, top_k=None, use_cache=cache)
        gen = torch.Generator(device=ctx.device)

        def call(prior=prior, options=options, gen=gen):
            gen.manual_seed(ctx.seed)
            return prior.sample(batch, options=options, generator=gen)

        calls[key] = call
        name = f"{variant} · {'KV cache' if cache else 'no cache'}" if variant == "gpt" else \
            f"maskgit · {table.get('steps')} steps"
        records[key] = new_record(FAMILY, key, name, UNIT, recipe=PRIOR_SOURCES[variant],
                                  overrides=prior_overrides(variant, ctx.preset), batch=batch, grid=[h, w],
                                  prior={k: v for k, v in table.items()}, use_cache=cache)
    for fn in calls.values():
        fn()  # first call: lazy initialisation outside the warm-ups' count
    flops = {key: maybe_flops(fn, True) for key, fn in calls.items()}
    times = alternate(calls, ctx.device, warmup=max(ctx.warmup - 1, 0), repeats=ctx.repeats)
    for key, variant, cache in wanted:
        prior, _ = priors[variant]
        tokens = batch * prior.grid_size[0] * prior.grid_size[1]
        rec = records[key]
        rec["vqtk"] = side_result(f"vqtk {type(prior).__name__}.sample", times[key], tokens, flops=flops[key],
                                  peak_tflops=ctx.peak_for("fp32"), params=count_parameters(prior))
        if key != ITEMS[0][0]:
            rec["relative_to"] = {"key": ITEMS[0][0],
                                  "speed": paired_ratios(times[key], times[ITEMS[0][0]])}
    return [records[k] for k, _, _ in wanted if k in keys]
