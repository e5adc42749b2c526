"""Stage-1 training step: vqtk's ``Stage1Trainer.train_step`` against the plain taming step.

Both sides get the same batch, architecture sizes, loss weights, optimizer
settings, precision, memory format and compilation; they are built one after
the other (each side's memory is measured from just before it is built), warmed
up, then timed in alternating rounds.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import attrs
import torch

from vqtk.build import count_parameters
from vqtk.recipe import load_recipe
from vqtk.recipe.schema import TrainSection
from vqtk.train.stage1 import Stage1Trainer

from benchmarks.baseline_taming import TamingTrainStep
from benchmarks.context import Context, compare, maybe_flops, new_record, side_result, warm_and_probe
from benchmarks.matrix import STAGE1_CONFIGS, Stage1Config, stage1_overrides
from benchmarks.memory import PeakMemory
from benchmarks.timing import alternate

FAMILY = "stage1"
UNIT = "images/s"


def baseline_settings(resolved: dict) -> dict:
    """The plain step's arguments from a resolved reference recipe (VQ + PatchGAN)."""
    enc = resolved["model"]["encoder"]
    q = resolved["model"]["quantizer"]
    disc = resolved["model"]["discriminator"]
    losses = resolved["loss"]
    perceptual = next((v for v in losses.values() if v["type"] == "lpips"), None)
    gan = next((v for v in losses.values() if v["type"] == "gan"), {"weight": 0.75})
    codebook = next((v for v in losses.values() if v["type"] == "quantizer"), {"weight": 1.0})
    opt = resolved["train"]["optimizer"]
    arch = {k: enc[k] for k in ("ch", "num_res_blocks", "z_channels", "resolution", "dropout")}
    arch.update(ch_mult=tuple(enc["ch_mult"]), attn_resolutions=tuple(enc["attn_resolutions"]))
    return dict(
        arch=arch,
        n_embed=q["codebook_size"],
        embed_dim=q["dim"],
        beta=q.get("beta", 0.25),
        ndf=disc["ndf"],
        n_layers=disc["n_layers"],
        lpips_net=perceptual["net"] if perceptual else None,
        perceptual_weight=perceptual["weight"] if perceptual else 0.0,
        disc_weight=gan["weight"],
        codebook_weight=codebook["weight"],
        lr=opt["lr"],
        betas=tuple(opt["betas"]),
    )


def missing_setting(config: Stage1Config) -> Optional[str]:
    """The ``[train]`` field this vqtk lacks for ``config``, if any."""
    fields = attrs.fields_dict(TrainSection)
    if config.compile and "compile" not in fields:
        return "this vqtk's [train] has no `compile` setting"
    if config.channels_last and "channels_last" not in fields:
        return "this vqtk's [train] has no `channels_last` setting"
    return None


def skip_reason(ctx: Context, config: Stage1Config) -> Optional[str]:
    if config.compile and not ctx.compile:
        return ctx.compile_note or "torch.compile measurements are off (--compile off)"
    if config.precision == "bf16" and ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return missing_setting(config)


class VqtkSide:
    """vqtk's real trainer, stepped on a fixed batch exactly as its loop does (minus data loading)."""

    label = "vqtk Stage1Trainer.train_step"

    def __init__(self, ctx: Context, recipe, resolved):
        self.trainer = Stage1Trainer(recipe, resolved, ctx.workdir / "stage1", progress=False)

    def step(self, x: torch.Tensor) -> None:
        self.trainer.train_step([x])
        self.trainer.step += 1

    def params(self) -> dict:
        t = self.trainer
        return {"params": count_parameters(t.model), "disc_params": count_parameters(t.disc) if t.disc else 0}


def eager_flops(ctx: Context, config: Stage1Config, side: str) -> Optional[int]:
    """FLOPs of one step of ``side`` for ``config`` counted on eager modules (compiled ones hide their ops)."""
    key = (side, config.quantizer, config.disc)
    if key not in ctx.flops_cache:
        eager = dataclasses.replace(config, compile=False, key=config.key + "-eager")
        recipe, resolved = load_recipe(ctx.preset.recipe_path, stage1_overrides(eager, ctx.preset, str(ctx.device)))
        x = ctx.images(recipe.train.batch_size, resolved["data"]["resolution"])
        if side == "vqtk":
            v = VqtkSide(ctx, recipe, resolved)
            v.step(x)
            ctx.flops_cache[key] = maybe_flops(lambda: v.step(x), True)
        else:
            b = TamingTrainStep(**baseline_settings(reference_resolved(ctx)), device=ctx.device,
                                precision=eager.precision, channels_last=eager.channels_last)
            b(x)
            ctx.flops_cache[key] = maybe_flops(lambda: b(x), True)
    return ctx.flops_cache[key]


def reference_resolved(ctx: Context) -> dict:
    """The resolved recipe of the reference configuration (the baseline copies its sizes)."""
    if "reference_resolved" not in ctx.flops_cache:
        _, resolved = load_recipe(ctx.preset.recipe_path,
                                  stage1_overrides(STAGE1_CONFIGS[0], ctx.preset, str(ctx.device)))
        ctx.flops_cache["reference_resolved"] = resolved
    return ctx.flops_cache["reference_resolved"]


def measure(ctx: Context, config: Stage1Config) -> dict:
    """One stage-1 configuration: vqtk and baseline timed in alternation on the same batch."""
    overrides = stage1_overrides(config, ctx.preset, str(ctx.device))
    record = new_record(FAMILY, config.key, config.label, UNIT, recipe=str(ctx.preset.recipe),
                        overrides=overrides, quantizer=config.quantizer, discriminator=config.disc,
                        precision=config.precision, channels_last=config.channels_last, compile=config.compile)
    reason = skip_reason(ctx, config)
    if reason:
        record["skipped"] = reason
        return record
    recipe, resolved = load_recipe(ctx.preset.recipe_path, overrides)
    batch, resolution = recipe.train.batch_size, resolved["data"]["resolution"]
    record["config"].update(batch=batch, resolution=resolution)
    if config.compile:
        # each compiled row compiles from scratch: graphs cached by an earlier row (other
        # precision or layout) must not be reused, nor count against the recompile limit
        torch._dynamo.reset()
    x = ctx.images(batch, resolution)
    memory = PeakMemory(ctx.device)

    memory.start()
    ours = VqtkSide(ctx, recipe, resolved)
    ours_mem = warm_and_probe(lambda: ours.step(x), memory, ctx.warmup)

    memory.start()
    settings = baseline_settings(reference_resolved(ctx))
    base = TamingTrainStep(**settings, device=ctx.device, precision=config.precision,
                           channels_last=config.channels_last, compile=config.compile)
    base_mem = warm_and_probe(lambda: base(x), memory, ctx.warmup)
    record["config"]["baseline"] = {k: v for k, v in settings.items() if k != "arch"} | {"arch": settings["arch"]}

    if config.compile:
        ours_flops, base_flops = eager_flops(ctx, config, "vqtk"), eager_flops(ctx, config, "baseline")
    else:
        ours_flops = maybe_flops(lambda: ours.step(x), True)
        base_flops = maybe_flops(lambda: base(x), True)
        ctx.flops_cache.setdefault(("vqtk", config.quantizer, config.disc), ours_flops)
        ctx.flops_cache.setdefault(("baseline", config.quantizer, config.disc), base_flops)

    times = alternate({"vqtk": lambda: ours.step(x), "baseline": lambda: base(x)}, ctx.device,
                      warmup=0, repeats=ctx.repeats)
    peak = ctx.peak_for(config.precision)
    record["vqtk"] = side_result(VqtkSide.label, times["vqtk"], batch, memory_mb=ours_mem, flops=ours_flops,
                                 peak_tflops=peak, **ours.params())
    record["baseline"] = side_result(
        "plain PyTorch taming step (benchmarks/baseline_taming.py)", times["baseline"], batch,
        memory_mb=base_mem, flops=base_flops, peak_tflops=peak,
        params=count_parameters(base.model), disc_params=count_parameters(base.disc),
    )
    record["memory_method"] = memory.method
    return compare(record)


def configs() -> tuple[Stage1Config, ...]:
    return STAGE1_CONFIGS
