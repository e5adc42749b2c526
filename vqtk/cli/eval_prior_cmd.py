"""``vqtk eval`` on a stage-2 (prior) run: the options that only sampling uses, their checks, the summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vqtk.errors import VqtkError
from vqtk.evaluation.compare import compare_table
from vqtk.evaluation.generation import DEFAULT_NUM_SAMPLES, run_generation_eval
from vqtk.evaluation.prior_run import check_sampling_values

#: options of a tokenizer evaluation, and their values when not given
TOKENIZER_ONLY = {"--data": ("data", []), "--data-path": ("data_path", None), "--max-images": ("max_images", None),
                  "--lpips-weights": ("lpips_weights", None), "--workers": ("workers", None)}
#: options of a prior evaluation, and their values when not given
PRIOR_ONLY = {"--num-samples": ("num_samples", None), "--seed": ("seed", None),
              "--temperature": ("temperature", None), "--top-k": ("top_k", None), "--top-p": ("top_p", None),
              "--cfg-scale": ("cfg_scale", None), "--steps": ("steps", None), "--fresh": ("fresh", False)}


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("priors (a stage-2 run: sample, then gFID, Inception Score, samples/s)")
    g.add_argument("--num-samples", type=int, metavar="N",
                   help=f"images to sample (default {DEFAULT_NUM_SAMPLES}, the papers' gFID protocol); class-balanced "
                        "for a class-conditional prior (sample i has class i mod num_classes)")
    g.add_argument("--seed", type=int, metavar="S", help="seed of the batch seeds (default 0)")
    g.add_argument("--temperature", type=float, metavar="T", help="default: the recipe's prior_train.temperature")
    g.add_argument("--top-k", type=int, metavar="K", help="default: the recipe's prior_train.top_k")
    g.add_argument("--top-p", type=float, metavar="P", help="default: the recipe's prior_train.top_p")
    g.add_argument("--cfg-scale", "--cfg", dest="cfg_scale", type=float, metavar="S",
                   help="classifier-free guidance scale (1 = off; default: the recipe's, else 1)")
    g.add_argument("--steps", type=int, metavar="N", help="decoding steps of iterative (MaskGIT) priors")
    g.add_argument("--fresh", action="store_true",
                   help="delete the samples an earlier run left in REPORT_samples/ and start over (by default the "
                        "same command continues them)")


def _given(args: argparse.Namespace, table: dict[str, tuple[str, Any]]) -> list[str]:
    return [option for option, (dest, unset) in table.items() if getattr(args, dest) != unset]


def refuse_prior_options(args: argparse.Namespace, path: str) -> None:
    """A tokenizer (stage-1) checkpoint takes none of the prior's options."""
    given = _given(args, PRIOR_ONLY)
    if given:
        raise VqtkError(f"{given[0]}: samples a prior, but {path} is a tokenizer (stage 1) checkpoint; give the "
                        "prior's run folder (e.g. runs/NAME/prior)")


def check_options(args: argparse.Namespace, path: str) -> None:
    """One-line errors for the prior's option values, and for tokenizer options given with a prior."""
    given = _given(args, TOKENIZER_ONLY)
    if given:
        raise VqtkError(f"{given[0]}: evaluates a tokenizer, but {path} is a prior (stage 2) checkpoint; evaluate "
                        "the tokenizer's own run folder for PSNR, LPIPS and rFID")
    if args.num_samples is not None and args.num_samples < 2:
        raise VqtkError(f"--num-samples: must be at least 2 (FID needs 2 images), got {args.num_samples}")
    check_sampling_values(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, cfg_scale=args.cfg_scale,
                          steps=args.steps, seed=args.seed, cfg_option="--cfg-scale")


def cmd_eval_prior(args: argparse.Namespace, path: str) -> int:
    check_options(args, path)
    report = run_generation_eval(
        args.checkpoint, out=args.out, num_samples=args.num_samples or DEFAULT_NUM_SAMPLES,
        batch_size=args.batch_size, seed=args.seed or 0, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, cfg_scale=args.cfg_scale, steps=args.steps, inception_weights=args.inception_weights,
        ref_stats=args.ref_stats, device=args.device, fresh=args.fresh)
    ckpt, sampling, timing = report["checkpoint"], report["sampling"], report["timing"]
    resumed = f" (continued from {sampling['resumed_from']} on disk)" if sampling["resumed_from"] else ""
    print_summary(report, Path(args.out), [
        f"{ckpt['path']} (step {ckpt['step']}): {sampling['description']}{resumed}",
        f"sampling {timing['sampling_samples_per_s']:.3g} samples/s (prior alone {timing['prior_samples_per_s']:.3g}), "
        f"end to end {timing['end_to_end_samples_per_s']:.3g} samples/s"],
        {"sample grid": "samples", "samples": "sample_folder"})
    return 0


def print_summary(report: dict[str, Any], out: Path, heading: list[str], files: dict[str, str]) -> None:
    """What ``vqtk eval`` prints for either kind of report: ``heading``, the metric table, why any metric
    was not computed, and the files (``files``: words -> key of the report's ``files``)."""
    print("\n".join(heading))
    print(compare_table([report], [out.stem]))
    for name, entry in report["metrics"].items():
        if not entry.get("available"):
            print(f"{name}: not computed: {entry['reason']}")
    print("; ".join([f"report {out}", *(f"{words} {out.with_name(report['files'][key])}"
                                        for words, key in files.items())]))
