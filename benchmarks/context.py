"""What every measurement family needs: the run's settings and the shape of a result record."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from benchmarks.flops import count_flops, utilisation
from benchmarks.memory import PeakMemory
from benchmarks.presets import Preset
from benchmarks.timing import paired_ratios, summarise

log = logging.getLogger("vqtk.benchmarks")


@dataclass
class Context:
    """Settings of one benchmark run.

    Attributes:
        preset: sizes and repeat counts.
        device: where everything runs.
        warmup, repeats: untimed and timed calls per side.
        compile: whether ``torch.compile`` measurements run (else they are recorded as skipped).
        compile_note: why they were skipped.
        peak_tflops: the accelerator's peak for bf16 work (MFU denominator), if known.
        peak_tflops_fp32: the peak for fp32 work (defaults to ``peak_tflops``).
        seed: seeds inputs and models.
        workdir: scratch folder (trainers want an output folder; nothing is written there).
    """

    preset: Preset
    device: torch.device
    warmup: int
    repeats: int
    compile: bool
    compile_note: str = ""
    peak_tflops: Optional[float] = None
    peak_tflops_fp32: Optional[float] = None
    seed: int = 0
    workdir: Path = Path(".")
    flops_cache: dict = field(default_factory=dict)

    def peak_for(self, precision: str) -> Optional[float]:
        if precision == "fp32" and self.peak_tflops_fp32 is not None:
            return self.peak_tflops_fp32
        return self.peak_tflops

    def images(self, batch: int, resolution: int) -> torch.Tensor:
        """A fixed batch of images in ``[-1, 1]``: smooth random fields, so codes vary as on photos."""
        g = torch.Generator().manual_seed(self.seed)
        low = torch.rand(batch, 3, max(2, resolution // 8), max(2, resolution // 8), generator=g)
        x = torch.nn.functional.interpolate(low, size=(resolution, resolution), mode="bilinear",
                                            align_corners=False)
        x = x + 0.1 * torch.randn(batch, 3, resolution, resolution, generator=g)
        return (x.clamp(0, 1) * 2 - 1).to(self.device)


def new_record(family: str, key: str, name: str, unit: str, **config) -> dict:
    """An empty result record (filled by the family, summarised by the report)."""
    return {
        "family": family,
        "key": key,
        "name": name,
        "unit": unit,
        "config": config,
        "vqtk": None,
        "baseline": None,
        "speed_ratio": None,
        "memory_ratio": None,
        "skipped": None,
        "error": None,
        "notes": [],
    }


def side_result(label: str, seconds: list[float], items: int, *, memory_mb: Optional[float] = None,
                flops: Optional[int] = None, peak_tflops: Optional[float] = None, **extra) -> dict:
    """Timing summary of one side plus its memory and FLOP figures."""
    out = {"label": label, **summarise(seconds, items), "peak_memory_mb": memory_mb, "flops": flops}
    out.update(utilisation(flops, out["median_ms"] / 1e3, peak_tflops))
    out.update(extra)
    return out


def compare(record: dict) -> dict:
    """Fill ``speed_ratio`` (paired, vqtk speed / baseline speed) and ``memory_ratio`` (vqtk / baseline)."""
    ours, ref = record.get("vqtk"), record.get("baseline")
    if ours and ref:
        record["speed_ratio"] = paired_ratios([t / 1e3 for t in ours["times_ms"]],
                                              [t / 1e3 for t in ref["times_ms"]])
        if ours.get("peak_memory_mb") and ref.get("peak_memory_mb"):
            record["memory_ratio"] = ours["peak_memory_mb"] / ref["peak_memory_mb"]
    return record


def warm_and_probe(fn: Callable[[], object], memory: PeakMemory, warmup: int) -> Optional[float]:
    """Run ``fn`` ``warmup`` times, then once more measuring its peak memory (MiB above ``memory``'s base)."""
    for _ in range(warmup):
        fn()
    memory.begin()
    fn()
    return memory.end()


def maybe_flops(fn: Callable[[], object], enabled: bool) -> Optional[int]:
    """FLOPs of one call, or None when counting is off (compiled modules)."""
    if not enabled:
        return None
    try:
        return count_flops(fn)
    except Exception as exc:  # noqa: BLE001 - a counting failure must not lose the timing
        log.warning("FLOP counting failed: %s", exc)
        return None
