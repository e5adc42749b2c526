"""``python -m benchmarks.quality``: every shipped quantizer trained on one budget, scored on held-out photos.

Each quantizer trains the same small tokenizer (``recipes/small_f8.toml``: the
quick start's f8 autoencoder, PatchGAN, losses and optimizer) for the same
number of steps, batch and seed on the photos inside scikit-image's wheel
(``sample_photos``), through vqtk's real trainer (``Stage1Trainer.run``, in this
process). Only ``[model.quantizer]`` differs: the table of the shipped recipe
that uses that quantizer (``SOURCES``), resized to small_f8's latent channels
and number of codes, or the quantizer's defaults where no recipe ships one.

The trained tokenizers are then scored on the whole held-out set (crops of
photos never trained on) by ``vqtk.evaluation.evaluate``, the pass behind
``vqtk eval``: PSNR, SSIM, codebook usage (codes used at least once over the
set) and perplexity. A quantizer whose held-out usage is under
:data:`COLLAPSE_BELOW` in any codebook is flagged ``COLLAPSED`` in the table.

Writes ``quality.json``, ``quality.md``, ``quality_grid.png`` (the held-out
photos, then one row of reconstructions per quantizer) and ``quality_usage.png``
(``codebook/window_usage`` over the training steps, from each run's
``metrics.jsonl``). ``benchmarks/README.md`` ("Tokenizer quality") has a result.

One module over 300 lines because it is one command whose parts (the runs'
recipes, the runs, the table and pictures they produce) serve nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import torch
from PIL import Image, ImageDraw

from vqtk.evaluation import codebook_statistics, evaluate
from vqtk.io.images import grid_image, plot_curves, save_png
from vqtk.recipe import apply_overrides, load_raw, recipe_from_dict
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.loader import read_toml
from vqtk.registry import default_registry
from vqtk.train.stage1 import Stage1Trainer

from benchmarks.machine import load_average, machine_info
from benchmarks.matrix import QUANTIZER_SOURCES, quantizer_table, table_overrides, toml_literal
from benchmarks.presets import RECIPES
from benchmarks.report import fmt

log = logging.getLogger("vqtk.benchmarks")

#: where each quantizer's ``[model.quantizer]`` table comes from (None: the quantizer's defaults);
#: the stage-1 benchmark's sources (``benchmarks/matrix.py``) plus the quantizers it does not time
SOURCES: dict[str, Optional[str]] = {
    "vq": QUANTIZER_SOURCES["vq"],
    "ema_vq": QUANTIZER_SOURCES["ema_vq"],
    "factorized": QUANTIZER_SOURCES["factorized"],
    "residual": QUANTIZER_SOURCES["residual"],
    "fsq": QUANTIZER_SOURCES["fsq"],
    "lfq": QUANTIZER_SOURCES["lfq"],
    "simvq": "variants/simvq.toml",
    "gumbel": None,
    "ibq": "variants/llamagen_ibq.toml",
}
#: the recipe every run starts from
BASE = "small_f8.toml"
#: held-out usage below this fraction (in any codebook) is flagged COLLAPSED
COLLAPSE_BELOW = 0.10


@dataclass(frozen=True)
class Budget:
    """What every quantizer gets: ``steps`` steps of ``batch`` images, the same model and held-out set.

    ``overrides`` change the base recipe (the same for every quantizer); ``drop_losses`` are loss
    tables removed; ``epochs`` data epochs fit in the steps (for ``codebook/epoch_usage``).
    """

    name: str
    steps: int
    batch: int
    eval_crops: int  # held-out crops per held-out photo
    grid_columns: int
    overrides: tuple[str, ...] = ()
    drop_losses: tuple[str, ...] = ()
    epochs: int = 4


DEFAULT = Budget(name="default", steps=120, batch=8, eval_crops=32, grid_columns=4)  # 7-8 min on 2 CPU cores

_TINY_AE = ("ch=32", "ch_mult=[1, 1]", "num_res_blocks=1", "z_channels=8", "resolution=16")
SMALL = Budget(  # the test suite's: seconds on one core
    name="small", steps=4, batch=2, eval_crops=2, grid_columns=2,
    overrides=(*(f"model.{part}.{kv}" for part in ("encoder", "decoder") for kv in _TINY_AE),
               "model.quantizer.dim=8", "model.quantizer.codebook_size=32", "model.discriminator.ndf=8",
               "model.discriminator.n_layers=1", "data.resolution=16"),
    drop_losses=("perceptual",),  # SqueezeNet's pooling needs more than 16 pixels
)


def table_for(name: str, *, dim: int, codebook_size: int) -> dict:
    """``name``'s ``[model.quantizer]`` table from its source, at ``dim`` channels and ``codebook_size`` codes."""
    if name in QUANTIZER_SOURCES:
        return quantizer_table(name, dim=dim, codebook_size=codebook_size)
    source = SOURCES[name]
    table = dict(read_toml(RECIPES / source)["model"]["quantizer"]) if source else {"type": name}
    return {**table, "dim": dim, "codebook_size": codebook_size}


def overrides_for(name: str, budget: Budget, *, steps: int, device: str, seed: int) -> list[str]:
    """Overrides on ``recipes/small_f8.toml`` that build ``name``'s run (``vqtk run`` accepts them as they are)."""
    base = apply_overrides(load_raw(RECIPES / BASE), budget.overrides)["model"]["quantizer"]
    table = table_for(name, dim=base["dim"], codebook_size=base["codebook_size"])
    log_every = max(1, steps // 20)
    epoch_steps = max(1, steps // budget.epochs)
    return [*(o for o in budget.overrides if not o.startswith("model.quantizer.")),
            *table_overrides("model.quantizer", table),
            f"train.steps={steps}", f"train.batch_size={budget.batch}", f"train.seed={seed}",
            f"train.device={toml_literal(device)}", f"train.log_every={log_every}",
            f"train.health_window={log_every}",  # each usage point: the codes of one log interval
            f"train.image_every={steps}", f"train.checkpoint_every={steps}", "train.eval_batches=0",
            f"data.samples_per_epoch={epoch_steps * budget.batch}", f"data.eval_crops={budget.eval_crops}"]


def train_and_score(name: str, budget: Budget, *, steps: int, device: str, seed: int, out: Path) -> dict:
    """Train ``name`` for the budget in ``out``, then score it on the whole held-out set."""
    registry = default_registry()
    overrides = overrides_for(name, budget, steps=steps, device=device, seed=seed)
    raw = apply_overrides(load_raw(RECIPES / BASE), overrides)
    for loss in budget.drop_losses:
        raw["loss"].pop(loss, None)
    recipe = recipe_from_dict(raw, registry)
    t0 = time.perf_counter()
    trainer = Stage1Trainer(recipe, RecipeConverter(registry).unstructure(recipe), out, registry=registry,
                            progress=False)
    trainer.run()
    seconds = time.perf_counter() - t0
    result = evaluate(trainer.eval_model, trainer.data.eval_set(), batch_size=16, grid_images=budget.grid_columns)
    stats = codebook_statistics(result.counts)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    q = trainer.model.quantizer
    return {
        "quantizer": name,
        "source": SOURCES[name] or f"`{name}` defaults",
        "settings": dict(raw["model"]["quantizer"]),
        "overrides": overrides,
        "dropped_losses": list(budget.drop_losses),
        "codebook_size": int(q.codebook_size),
        "num_codebooks": int(q.num_codebooks),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "images": result.images,
        "psnr": float(result.psnr.mean()),
        "ssim": float(result.ssim.mean()) if torch.is_tensor(result.ssim) else None,
        "usage": stats["usage_mean"],
        "usage_per_codebook": stats["usage"],
        "used_codes": stats["used_codes"],
        "perplexity": stats["perplexity_mean"],
        "entropy_bits": stats["entropy_bits_mean"],
        "positions": stats["positions"],
        "usage_curve": [[r["step"], r["codebook/window_usage"]] for r in lines if "codebook/window_usage" in r],
        "epoch_usage": [{"step": r["step"], "epoch": r["epoch"] - 1, "usage": r["codebook/epoch_usage"],
                         "perplexity": r["codebook/epoch_perplexity"]} for r in lines if "codebook/epoch_usage" in r],
        "train_seconds": seconds,
        "grid_real": result.grid_real,
        "grid_reconstruction": result.grid_reconstruction,
    }


def status(result: dict) -> str:
    """``COLLAPSED`` when any codebook's held-out usage is under :data:`COLLAPSE_BELOW`; else ``ok``."""
    if result.get("error"):
        return "error"
    low = [u for u in result.get("usage_per_codebook") or [result["usage"]] if u < COLLAPSE_BELOW]
    return "COLLAPSED" if low else "ok"


def markdown(data: dict) -> str:
    """The table and the run's settings, as ``quality.md`` (and benchmarks/README.md) shows them."""
    m, run = data["machine"], data["run"]
    lines = [
        "# vqtk tokenizer quality: every quantizer, one budget",
        "",
        f"- machine: {m.get('gpu_name') or m.get('cpu_model')}, {m.get('torch_threads')} torch threads; "
        f"torch {m.get('torch')}, vqtk {m.get('vqtk')} (commit {m.get('git_commit')}); load average "
        f"{m.get('load_average_start')} at start, {m.get('load_average_end')} at end",
        f"- command: `{run['command']}`: {run['elapsed_s']:.0f} s in all",
        f"- budget: {run['steps']} steps of {run['batch']} images at {run['resolution']}x{run['resolution']} "
        f"(`recipes/{BASE}` with the overrides in `quality.json`), seed {run['seed']}, for every quantizer; "
        f"data epochs of {run['epoch_steps']} steps",
        f"- held-out: all {run['held_out_images']} crops of the `sample_photos` eval photos; usage = codes "
        "used at least once over the whole set / codes; perplexity = 2^entropy of the code frequencies "
        "(both averaged over codebooks); last epoch = `codebook/epoch_usage` of the last full training epoch",
        f"- COLLAPSED: held-out usage under {COLLAPSE_BELOW:.0%} in a codebook",
        "",
        "| quantizer | settings from | codes | PSNR (dB) | SSIM | usage | perplexity | usage, last epoch | "
        "train s | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["results"]:
        if r.get("error"):
            lines.append(f"| {r['quantizer']} | error: {r['error']} | | | | | | | | error |")
            continue
        codes = f"{r['num_codebooks']} x {r['codebook_size']}" if r["num_codebooks"] > 1 else str(r["codebook_size"])
        epoch = f"{r['epoch_usage'][-1]['usage']:.1%}" if r["epoch_usage"] else "–"
        flag = status(r) if status(r) == "ok" else f"**{status(r)}**"
        lines.append(
            f"| {r['quantizer']} | {r['source']} | {codes} | {r['psnr']:.2f} | {fmt(r['ssim'])} | {r['usage']:.1%} | "
            f"{r['perplexity']:.1f} | {epoch} | {r['train_seconds']:.0f} | {flag} |")
    return "\n".join(lines) + "\n"


def grid(results: list[dict], path: Path) -> Path:
    """The held-out photos, then each quantizer's reconstructions, one labelled row each."""
    done = [r for r in results if not r.get("error")]
    rows = [done[0]["grid_real"], *(r["grid_reconstruction"] for r in done)] if done else []
    labels = ["held-out", *(r["quantizer"] for r in done)]
    if not rows:
        return save_png(Image.new("RGB", (200, 40), "white"), path)
    body = grid_image(rows)
    label_w, pad, h = 80, 2, rows[0].shape[-2]
    canvas = Image.new("RGB", (body.width + label_w, body.height), "white")
    canvas.paste(body, (label_w, 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        draw.text((4, pad + i * (h + pad) + h // 2 - 6), label, fill="black")
    return save_png(canvas, path)


def write_all(data: dict, out: Path) -> dict[str, Path]:
    """``quality.json``, ``quality.md``, ``quality_grid.png`` and ``quality_usage.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    pictures = {"grid": grid(data["results"], out / "quality_grid.png"),
                "usage": plot_curves({r["quantizer"]: [tuple(p) for p in r.get("usage_curve", [])]
                                      for r in data["results"]}, out / "quality_usage.png",
                                     title=f"codebook usage over each log interval ({data['run']['log_every']} "
                                           "steps), fraction of codes")}
    plain = {**data, "results": [{k: v for k, v in r.items() if not k.startswith("grid_")} | {"status": status(r)}
                                 for r in data["results"]]}
    (out / "quality.json").write_text(json.dumps(plain, indent=2) + "\n")
    (out / "quality.md").write_text(markdown(plain))
    return {"json": out / "quality.json", "markdown": out / "quality.md", **pictures}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description="Train every shipped quantizer on one budget through vqtk's trainer, then table held-out PSNR, SSIM, codebook usage and perplexity.")
    p.add_argument("--steps", type=int, help=f"training steps per quantizer (default {DEFAULT.steps}; "
                                             f"--small: {SMALL.steps})")
    p.add_argument("--quantizers", help=f"comma-separated, from {','.join(SOURCES)} (default: all)")
    p.add_argument("--small", action="store_true", help="a tiny model at 16x16 (the test suite's smoke run)")
    p.add_argument("--out", type=Path, help="output folder (default runs/benchmarks/quality-BUDGET-DEVICE-TIME)")
    p.add_argument("--keep-runs", action="store_true", help="keep each quantizer's run folder under OUT/runs/")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="also show vqtk's own log messages")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    budget = SMALL if args.small else DEFAULT
    names = [n.strip() for n in (args.quantizers or ",".join(SOURCES)).split(",") if n.strip()]
    unknown = [n for n in names if n not in SOURCES]
    problem = (f"--quantizers {','.join(unknown)}: unknown (known: {', '.join(SOURCES)})" if unknown else
               "--steps must be at least 1" if args.steps is not None and args.steps < 1 else
               "--device cuda: CUDA is not available here" if args.device == "cuda" and not torch.cuda.is_available()
               else None)
    if problem or not names:
        print(f"python -m benchmarks.quality: error: {problem or '--quantizers: none given'}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or budget.steps
    out = args.out or Path("runs") / "benchmarks" / f"quality-{budget.name}-{device}-{datetime.now():%Y%m%d-%H%M%S}"
    vqtk_log = logging.getLogger("vqtk")
    saved = (vqtk_log.level, log.level, torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    vqtk_log.setLevel(logging.INFO if args.verbose else logging.ERROR)
    log.setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    # reruns give the same table: without this, the backward of a codebook lookup (`codes[idx]`,
    # index_put_ with accumulate) adds floats in a varying order on several CPU threads (vq, simvq,
    # ibq moved by up to 0.4 dB between reruns on 2 cores); warn_only: ops without a deterministic
    # kernel (on CUDA) warn instead of stopping the run
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:  # leave the process as it was (main is also called from tests)
        return _run(args, budget, names, steps, device, out)
    finally:
        vqtk_log.setLevel(saved[0])
        log.setLevel(saved[1])
        torch.set_num_threads(saved[2])
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])


def _run(args: argparse.Namespace, budget: Budget, names: list[str], steps: int, device: str, out: Path) -> int:
    machine = machine_info(torch.device(device))
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="vqtk-quality-") as tmp:
        runs = out / "runs" if args.keep_runs else Path(tmp)
        for i, name in enumerate(names, 1):
            t0 = time.perf_counter()
            try:
                r = train_and_score(name, budget, steps=steps, device=device, seed=args.seed, out=runs / name)
                log.info("[%d/%d] %s: PSNR %.2f dB, SSIM %s, usage %.1f%%, perplexity %.1f, %s (%.0f s)", i,
                         len(names), name, r["psnr"], fmt(r["ssim"]), 100 * r["usage"], r["perplexity"], status(r),
                         time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - one failing quantizer must not lose the others
                log.debug("%s", exc, exc_info=True)
                r = {"quantizer": name, "source": SOURCES[name], "error": f"{type(exc).__name__}: {exc}"[:300]}
                log.info("[%d/%d] %s: ERROR %s", i, len(names), name, r["error"])
            results.append(r)
    machine["load_average_end"] = load_average()
    resolution = int(apply_overrides(load_raw(RECIPES / BASE), budget.overrides)["data"]["resolution"])
    data = {
        "schema": 1,
        "machine": machine,
        "run": {"command": "python -m benchmarks.quality " + " ".join(shlex.quote(a) for a in args.argv),
                "budget": budget.name, "steps": steps, "batch": budget.batch, "resolution": resolution,
                "seed": args.seed, "deterministic_algorithms": True, "log_every": max(1, steps // 20), "epoch_steps": max(1, steps // budget.epochs),
                "held_out_images": next((r["images"] for r in results if "images" in r), None),
                "collapse_below": COLLAPSE_BELOW, "base_recipe": f"recipes/{BASE}",
                "elapsed_s": time.perf_counter() - started},
        "results": results,
    }
    paths = write_all(data, out)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
