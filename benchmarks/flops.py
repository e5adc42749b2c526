"""Counting the FLOPs of one call, and model FLOPs utilisation against a peak."""

from __future__ import annotations

from typing import Callable, Optional


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as ``torch.utils.flop_counter.FlopCounterMode`` counts them.

    It counts matrix multiplications, convolutions and attention (forward and
    backward, including ``torch.autograd.grad`` calls); elementwise work is not
    counted, as is usual for model FLOPs utilisation. Run it on eager modules:
    compiled graphs are not seen operator by operator.
    """
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    except (RuntimeError, AssertionError):
        # its per-module tracker hooks module inputs and outputs, which fails on a leaf
        # parameter passed to a module under no_grad (a codebook through
        # vector-quantize-pytorch's bridge) and inside torch.autograd.grad on a leaf input
        # (the R1 penalty): count without per-module attribution instead
        counter = FlopCounterMode(display=False)
        counter.mod_tracker = _GlobalOnly()
        with counter:
            fn()
    return int(counter.get_total_flops())


class _GlobalOnly:
    """A stand-in for FlopCounterMode's module tracker that attributes every FLOP to "Global"."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def utilisation(flops: Optional[int], seconds: float, peak_tflops: Optional[float]) -> dict:
    """Achieved TFLOP/s and, when a peak is given, the fraction of it (MFU)."""
    if not flops or seconds <= 0:
        return {"tflops": None, "mfu": None}
    achieved = flops / seconds / 1e12
    return {"tflops": achieved, "mfu": achieved / peak_tflops if peak_tflops else None}
