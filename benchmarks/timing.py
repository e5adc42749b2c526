"""Timing calls on CPU or GPU, alternating the sides of a comparison, and summarising the repeats."""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Optional

import torch


def synchronize(device: torch.device) -> None:
    """Wait for every queued kernel on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, the device's queue drained before and after.

    On CUDA the figure comes from CUDA events recorded around the call on the
    current stream; the queue is empty when the start event is recorded, so the
    time includes any host-side launch overhead that keeps the GPU waiting. On
    CPU it is ``time.perf_counter`` wall time.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (``q`` in ``[0, 1]``) of a non-empty list."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise(seconds: list[float], items: int) -> dict:
    """Median and spread of per-call times, and the throughput (``items`` per call) they imply.

    ``throughput`` is ``items / median``; ``throughput_min`` / ``throughput_max``
    come from the slowest / fastest call.
    """
    med = statistics.median(seconds)
    return {
        "repeats": len(seconds),
        "times_ms": [s * 1e3 for s in seconds],
        "median_ms": med * 1e3,
        "min_ms": min(seconds) * 1e3,
        "max_ms": max(seconds) * 1e3,
        "q1_ms": quantile(seconds, 0.25) * 1e3,
        "q3_ms": quantile(seconds, 0.75) * 1e3,
        "items_per_call": items,
        "throughput": items / med,
        "throughput_min": items / max(seconds),
        "throughput_max": items / min(seconds),
    }


def alternate(
    calls: dict[str, Callable[[], object]], device: torch.device, *, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Time each call ``repeats`` times, alternating which side goes first in each round.

    Every call runs ``warmup`` untimed times first. Alternating spreads slow
    periods (other processes, clock changes) evenly over the sides, and lets
    :func:`paired_ratios` compare the calls of the same round.
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in range(repeats):
        for name in names if i % 2 == 0 else reversed(names):
            times[name].append(time_call(calls[name], device))
    return times


def paired_ratios(ours: list[float], reference: list[float]) -> Optional[dict]:
    """Speed of ``ours`` relative to ``reference`` round by round: ``reference_time / our_time``.

    Above 1 means ours is faster. Returns the median and the spread of the
    per-round ratios (rounds were timed back to back, so load affects both).
    """
    if not ours or len(ours) != len(reference):
        return None
    ratios = [r / o for o, r in zip(ours, reference)]
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "q1": quantile(ratios, 0.25),
        "q3": quantile(ratios, 0.75),
    }
