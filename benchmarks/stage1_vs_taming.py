"""Time a stage-1 training step with vqtk's taming encoder/decoder against taming-transformers' own.

One step: encoder -> 1x1 conv -> (identity in place of the quantizer) -> 1x1
conv -> decoder, L1 loss against the input, backward, Adam step. Both
implementations run in the same process on the same inputs, with the same
initial weights (taming's state dict is loaded into vqtk's modules, which also
checks that the parameter names match), alternating repeats so that load from
other processes affects both alike. Reported: median step time of each and the
ratio vqtk / taming.

taming's code is not part of vqtk: its ``model.py`` (which needs only torch and
numpy) is imported at run time from a local checkout::

    python benchmarks/stage1_vs_taming.py --taming-root /path/to/taming-transformers

Configurations:
    f16:   taming's ImageNet f16-16384 architecture (ch 128, ch_mult [1,1,2,2,4],
           2 res blocks, attention at 16, z 256), batch 1 at 256x256.
    small: ch 64, ch_mult [1,1,2,2], 1 res block, attention at 8 (the latent
           grid) and in the middle, z 64, batch 8 at 64x64.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vqtk_builtins.autoencoders import TamingDecoder, TamingEncoder

log = logging.getLogger("vqtk.benchmarks")

CONFIGS = {
    "f16": dict(
        arch=dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
                  z_channels=256, resolution=256),
        batch=1,
        size=256,
    ),
    "small": dict(
        arch=dict(ch=64, ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                  z_channels=64, resolution=64),
        batch=8,
        size=64,
    ),
}


def load_taming_model(root: Path) -> ModuleType:
    """Import ``taming/modules/diffusionmodules/model.py`` from a checkout, bypassing its package."""
    candidates = [root / "taming/modules/diffusionmodules/model.py", root / "modules/diffusionmodules/model.py"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise SystemExit(f"--taming-root {root}: no taming/modules/diffusionmodules/model.py under it")
    spec = importlib.util.spec_from_file_location("_taming_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Stage1(nn.Module):
    """encoder -> quant_conv -> identity -> post_quant_conv -> decoder."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, z_channels: int):
        super().__init__()
        self.encoder = encoder
        self.quant_conv = nn.Conv2d(z_channels, z_channels, 1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(self.quant_conv(self.encoder(x))))


def build_pair(tm: ModuleType, arch: dict, seed: int) -> tuple[Stage1, Stage1]:
    """taming's model and vqtk's, with identical weights."""
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints the z shape
        taming = Stage1(
            tm.Encoder(**arch, in_channels=3, out_ch=3, double_z=False),
            tm.Decoder(**arch, in_channels=3, out_ch=3),
            arch["z_channels"],
        )
    ours = Stage1(TamingEncoder(**arch, in_channels=3), TamingDecoder(**arch, out_channels=3), arch["z_channels"])
    ours.load_state_dict(taming.state_dict())  # strict: the names must match
    return taming, ours


def make_step(model: Stage1, x: torch.Tensor) -> Callable[[], float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.l1_loss(model(x), x)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def time_pair(
    steps: dict[str, Callable[[], float]], warmup: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process CPU seconds of each step, repeats alternating between the sides."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats):
        order = list(steps) if i % 2 == 0 else list(reversed(steps))  # alternate who goes first
        for name in order:
            c0, t0 = time.process_time(), time.perf_counter()
            steps[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def run_config(tm: ModuleType, name: str, warmup: int, repeats: int, channels_last: bool) -> dict:
    cfg = CONFIGS[name]
    taming, ours = build_pair(tm, cfg["arch"], seed=0)
    torch.manual_seed(1)
    x = torch.rand(cfg["batch"], 3, cfg["size"], cfg["size"]) * 2 - 1
    with torch.no_grad():
        diff = (taming(x) - ours(x)).abs().max().item()
    x_ours = x
    if channels_last:
        ours = ours.to(memory_format=torch.channels_last)
        x_ours = x.contiguous(memory_format=torch.channels_last)
    times, cpu = time_pair({"vqtk": make_step(ours, x_ours), "taming": make_step(taming, x)}, warmup, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "config": name,
        "batch": cfg["batch"],
        "size": cfg["size"],
        "params": sum(p.numel() for p in ours.parameters()),
        "max_abs_output_diff": diff,
        "channels_last": channels_last,
        "vqtk_ms": med["vqtk"] * 1e3,
        "taming_ms": med["taming"] * 1e3,
        "ratio": med["vqtk"] / med["taming"],
        "vqtk_cpu_ms": med_cpu["vqtk"] * 1e3,
        "taming_cpu_ms": med_cpu["taming"] * 1e3,
        "cpu_ratio": med_cpu["vqtk"] / med_cpu["taming"],
        "vqtk_all_ms": [t * 1e3 for t in times["vqtk"]],
        "taming_all_ms": [t * 1e3 for t in times["taming"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taming-root", type=Path, required=True, help="a taming-transformers checkout")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["small", "f16"])
    parser.add_argument("--warmup", type=int, default=None, help="default: 3 (small), 2 (f16)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 10 (small), 5 (f16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true", help="run vqtk's side in channels_last")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    torch.set_num_threads(args.threads)
    tm = load_taming_model(args.taming_root)
    results = []
    for name in args.configs:
        warmup = args.warmup if args.warmup is not None else (2 if name == "f16" else 3)
        repeats = args.repeats if args.repeats is not None else (5 if name == "f16" else 10)
        r = run_config(tm, name, warmup, repeats, args.channels_last)
        results.append(r)
        log.info(
            "%-5s batch %d at %dx%d, %.2f M params (+ 1x1 convs), outputs differ by %.1e: "
            "wall vqtk %.1f ms, taming %.1f ms, ratio %.3f; CPU time vqtk %.1f ms, taming %.1f ms, "
            "ratio %.3f (medians of %d, %d warm-ups, %d threads%s)",
            name, r["batch"], r["size"], r["size"], r["params"] / 1e6, r["max_abs_output_diff"],
            r["vqtk_ms"], r["taming_ms"], r["ratio"], r["vqtk_cpu_ms"], r["taming_cpu_ms"], r["cpu_ratio"],
            repeats, warmup, args.threads,
            ", vqtk channels_last" if args.channels_last else "",
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
