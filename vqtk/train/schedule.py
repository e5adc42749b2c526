"""Learning-rate schedules: linear warm-up, then constant, cosine or linear decay."""

from __future__ import annotations

import math

from vqtk.recipe.schema import OptimizerSection


def learning_rate(opt: OptimizerSection, step: int, total_steps: int) -> float:
    """The learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if opt.warmup_steps and step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    if opt.schedule == "constant":
        return opt.lr
    span = max(1, total_steps - opt.warmup_steps)
    progress = min(1.0, (step - opt.warmup_steps) / span)
    if opt.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * progress))
    else:  # linear
        factor = 1 - progress
    return opt.min_lr + (opt.lr - opt.min_lr) * factor
