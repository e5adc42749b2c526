"""``python -m benchmarks``: choose the measurements, run them, write the report."""

from __future__ import annotations

import argparse
import gc
import logging
import shlex
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import torch

from benchmarks import codec, data_loading, gpt_decode, optimizer_step, prior_sampling, quantizer_alone, stage1_step
from benchmarks.context import Context
from benchmarks.machine import load_average, machine_info
from benchmarks.presets import FULL, PRESETS, SMALL, SMOKE
from benchmarks.report import write_all, write_json

log = logging.getLogger("vqtk.benchmarks")

FAMILIES = ("stage1", "codec", "prior", "gpt_decode", "quantizer", "optimizer", "data")
UNITS = {"stage1": stage1_step.UNIT, "codec": codec.UNIT, "prior": prior_sampling.UNIT,
         "gpt_decode": gpt_decode.UNIT,
         "quantizer": quantizer_alone.UNIT, "optimizer": optimizer_step.UNIT, "data": data_loading.UNIT}


def plan() -> dict[str, list[str]]:
    """Every measurement key, by family, in the order they run."""
    return {
        "stage1": [c.key for c in stage1_step.configs()],
        "codec": [f"{q}-{d}" for q, d in codec.items()],
        "prior": [k for k, _, _ in prior_sampling.ITEMS],
        "gpt_decode": list(gpt_decode.ITEMS),
        "quantizer": [f"{k}-{m}" for k, m in quantizer_alone.items()],
        "optimizer": list(optimizer_step.ITEMS),
        "data": list(data_loading.ITEMS),
    }


def _matches(token: str, family: str, key: str) -> bool:
    if token == family:
        return True
    fam, _, name = token.partition(":")
    return fam == family and (name == key or key.rsplit("-", 1)[0] == name)


def select(only: Optional[list[str]]) -> dict[str, list[str]]:
    """The measurements ``--only`` picks (all without it); unknown names are an error."""
    full = plan()
    if not only:
        return full
    unknown = [t for t in only if not any(_matches(t, f, k) for f, keys in full.items() for k in keys)]
    if unknown:
        raise ValueError(f"--only {' '.join(unknown)}: no such measurement "
                         f"(families: {', '.join(FAMILIES)}; `--list` shows every FAMILY:KEY)")
    return {f: [k for k in keys if any(_matches(t, f, k) for t in only)] for f, keys in full.items()}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Throughput and memory of vqtk's stage-1 step, codec, priors and quantizers, "
                    "against a plain PyTorch taming baseline measured in the same run.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="CPU-sized models (a few minutes on 2 cores)")
    size.add_argument("--smoke", action="store_true", help="tiny models, one or two repeats (CI; seconds)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="run only these: a family (stage1, codec, prior, gpt_decode, quantizer, optimizer, data) "
                        "or FAMILY:KEY (e.g. stage1:bf16, quantizer:fsq); see --list")
    p.add_argument("--list", action="store_true", help="print every FAMILY:KEY and exit")
    p.add_argument("--out", type=Path, help="output folder (default runs/benchmarks/PRESET-DEVICE-TIME)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s (bf16) for MFU")
    p.add_argument("--peak-tflops-fp32", type=float, help="peak TFLOP/s for fp32 rows (default: --peak-tflops)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile measurements: auto runs them on CUDA and skips them on CPU")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, help="untimed calls per side (default from the preset)")
    p.add_argument("--repeats", type=int, help="timed calls per side (default from the preset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="also show vqtk's own log messages")
    return p.parse_args(argv)


def pick_device(name: Optional[str]) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _summary(r: dict) -> str:
    if r.get("skipped"):
        return f"skipped ({r['skipped']})"
    if r.get("error"):
        return f"ERROR {r['error']}"
    ours, base = r.get("vqtk"), r.get("baseline")
    text = f"vqtk {ours['throughput']:.4g} {r['unit']}"
    if base:
        text += f", baseline {base['throughput']:.4g}, speed ratio {r['speed_ratio']['median']:.3f}"
    elif r.get("relative_to"):
        text += f", vs {r['relative_to']['key']} {r['relative_to']['speed']['median']:.3f}"
    return text


def _guard(family: str, key: str, fn: Callable[[], list[dict]], ctx: Context) -> list[dict]:
    """Run one measurement; an exception becomes an ``error`` record instead of ending the run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failing measurement must not lose the others
        log.debug("%s", traceback.format_exc())
        text = str(exc).splitlines()[0] if str(exc) else ""
        return [{"family": family, "key": key, "name": key, "unit": UNITS[family], "config": {}, "vqtk": None,
                 "baseline": None, "speed_ratio": None, "memory_ratio": None, "skipped": None,
                 "error": f"{type(exc).__name__}: {text}"[:300], "notes": []}]
    finally:
        gc.collect()
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def prime(device: torch.device) -> None:
    """Pay the process's one-time costs before any measurement.

    Importing the built-in components' libraries (vector-quantize-pytorch,
    x-transformers, lpips, torchvision) and the first convolution, attention and
    optimizer step (thread pools, kernel caches) would otherwise land in the
    first measurement's time and memory.
    """
    import importlib
    import pkgutil

    import vqtk_builtins

    for info in pkgutil.walk_packages(vqtk_builtins.__path__, vqtk_builtins.__name__ + "."):
        importlib.import_module(info.name)
    import torchvision  # noqa: F401 - the LPIPS backbones

    conv = torch.nn.Conv2d(3, 8, 3, padding=1).to(device)
    opt = torch.optim.AdamW(conv.parameters())
    x = torch.randn(2, 3, 16, 16, device=device)
    for precision in (None, torch.bfloat16):
        with torch.autocast(device.type, dtype=precision or torch.bfloat16, enabled=precision is not None):
            h = conv(x).flatten(2).transpose(1, 2)
            y = torch.nn.functional.scaled_dot_product_attention(h, h, h)
        y.float().square().mean().backward()
        opt.step()


def run(ctx: Context, chosen: dict[str, list[str]],
        on_progress: Optional[Callable[[list[dict]], None]] = None) -> list[dict]:
    """Run the chosen measurements in order; ``on_progress(results so far)`` after each one."""
    jobs: list[tuple[str, str, Callable[[], list[dict]]]] = []
    configs = {c.key: c for c in stage1_step.configs()}
    for key in chosen["stage1"]:
        jobs.append(("stage1", key, lambda c=configs[key]: [stage1_step.measure(ctx, c)]))
    for key in chosen["codec"]:
        q, d = key.rsplit("-", 1)
        jobs.append(("codec", key, lambda q=q, d=d: [codec.measure(ctx, q, d)]))
    if chosen["prior"]:
        jobs.append(("prior", ",".join(chosen["prior"]), lambda: prior_sampling.measure_all(ctx, chosen["prior"])))
    if chosen["gpt_decode"]:
        jobs.append(("gpt_decode", ",".join(chosen["gpt_decode"]),
                     lambda: gpt_decode.measure_all(ctx, chosen["gpt_decode"])))
    for key in chosen["quantizer"]:
        k, m = key.rsplit("-", 1)
        jobs.append(("quantizer", key, lambda k=k, m=m: [quantizer_alone.measure(ctx, k, m)]))
    if chosen["optimizer"]:
        jobs.append(("optimizer", ",".join(chosen["optimizer"]),
                     lambda: optimizer_step.measure_all(ctx, chosen["optimizer"])))
    if chosen["data"]:
        jobs.append(("data", ",".join(chosen["data"]), lambda: data_loading.measure_all(ctx, chosen["data"])))
    prime(ctx.device)
    results = []
    for i, (family, key, fn) in enumerate(jobs, 1):
        t0 = time.perf_counter()
        records = _guard(family, key, fn, ctx)
        for r in records:
            log.info("[%d/%d] %s %s: %s (%.1f s)", i, len(jobs), family, r["key"], _summary(r),
                     time.perf_counter() - t0)
        results.extend(records)
        if on_progress is not None:
            on_progress(results)
    data_loading.bottleneck_notes(results)
    return results


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.list:
        for family, keys in plan().items():
            for key in keys:
                print(f"{family}:{key}")
        return 0
    try:
        chosen = select(args.only)
        device = pick_device(args.device)
    except ValueError as exc:
        print(f"python -m benchmarks: error: {exc}", file=sys.stderr)
        return 2
    vqtk_log = logging.getLogger("vqtk")
    saved = (vqtk_log.level, log.level, torch.get_num_threads(), torch.backends.cudnn.benchmark)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    vqtk_log.setLevel(logging.INFO if args.verbose else logging.ERROR)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, chosen, device)
    finally:  # leave the process as it was (main is also called from tests)
        vqtk_log.setLevel(saved[0])
        log.setLevel(saved[1])
        torch.set_num_threads(saved[2])
        torch.backends.cudnn.benchmark = saved[3]


def _run(args: argparse.Namespace, chosen: dict[str, list[str]], device: torch.device) -> int:
    preset = SMOKE if args.smoke else SMALL if args.small else FULL
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both sides alike; the best algorithms after warm-up
    notes = []
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    compile_note = ""
    if not compile_on:
        compile_note = ("torch.compile skipped on CPU (compiling takes minutes on a few cores); "
                        "`--compile on` runs it" if args.compile == "auto" else "--compile off")
        notes.append(compile_note)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / "benchmarks" / f"{preset.name}-{device.type}-{stamp}"
    machine = machine_info(device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vqtk-bench-") as tmp:
        ctx = Context(
            preset=preset, device=device,
            warmup=preset.warmup if args.warmup is None else args.warmup,
            repeats=preset.repeats if args.repeats is None else args.repeats,
            compile=compile_on, compile_note=compile_note,
            peak_tflops=args.peak_tflops, peak_tflops_fp32=args.peak_tflops_fp32,
            seed=args.seed, workdir=Path(tmp),
        )
        log.info("benchmarks: preset %s on %s (%s), %d warm-up + %d timed calls per side, output %s",
                 preset.name, device, machine.get("gpu_name") or machine.get("cpu_model"), ctx.warmup,
                 ctx.repeats, out)
        partial = out / "results.partial.json"

        def result_of(so_far: list[dict]) -> dict:
            methods = {r.get("memory_method") for r in so_far if r.get("memory_method")}
            return {
                "schema": 1,
                "machine": machine,
                "run": {
                    "preset": preset.name,
                    "device": str(device),
                    "command": "python -m benchmarks " + " ".join(shlex.quote(a) for a in args.argv),
                    "warmup": ctx.warmup,
                    "repeats": ctx.repeats,
                    "compile": compile_on,
                    "peak_tflops": args.peak_tflops,
                    "peak_tflops_fp32": args.peak_tflops_fp32,
                    "memory_method": ", ".join(sorted(methods)) or None,
                    "elapsed_s": time.perf_counter() - started,
                    "selected": chosen,
                    "notes": notes,
                },
                "results": so_far,
            }

        def save_partial(so_far: list[dict]) -> None:
            # a run stopped by a time limit keeps every row measured so far:
            # `python -m benchmarks.report results.partial.json` renders them
            result = result_of(so_far)
            result["run"]["partial"] = True
            write_json(result, partial)

        results = run(ctx, chosen, save_partial)
    machine["load_average_end"] = load_average()
    result = result_of(results)
    paths = write_all(result, out)
    partial.unlink(missing_ok=True)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 1 if any(r.get("error") for r in results) else 0


__all__ = ["FAMILIES", "main", "plan", "select", "FULL", "SMALL", "SMOKE", "PRESETS"]
