"""MaskGIT masking schedules: the fraction of a grid still masked as decoding progresses."""

from __future__ import annotations

import math
from typing import Literal

import torch

Schedule = Literal["cosine", "linear"]


def mask_ratio(schedule: Schedule, progress):
    """Fraction masked at ``progress`` in ``[0, 1]``: ``cos(pi/2 * r)`` (cosine) or ``1 - r`` (linear).

    Works on floats and tensors; 1 at the start, 0 at the end.
    """
    if schedule == "cosine":
        if isinstance(progress, torch.Tensor):
            return torch.cos(progress * (math.pi / 2))
        return math.cos(progress * math.pi / 2)
    if schedule == "linear":
        return 1 - progress
    raise ValueError(f"unknown schedule {schedule!r}; choose 'cosine' or 'linear'")


def masked_counts(num_tokens: int, steps: int, schedule: Schedule) -> list[int]:
    """How many of ``num_tokens`` are still masked after each of ``steps`` decoding steps.

    After step ``t`` (0-based) it is ``floor(num_tokens * mask_ratio((t + 1) / steps))``
    as in MaskGIT, kept below the previous count (each step fixes at least one
    token) and at least 1 before the last step; the last step fixes everything.
    """
    counts, remaining = [], num_tokens
    for t in range(steps):
        if t == steps - 1:
            target = 0
        else:
            target = math.floor(num_tokens * mask_ratio(schedule, (t + 1) / steps))
            target = max(0, min(max(target, 1), remaining - 1))
        counts.append(target)
        remaining = target
    return counts
