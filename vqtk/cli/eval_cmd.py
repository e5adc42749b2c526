"""``vqtk eval``: score a trained tokenizer over a whole evaluation set, or a prior's samples; or compare reports.

A stage-2 checkpoint is a prior: :mod:`vqtk.cli.eval_prior_cmd` takes it (sampling
options, gFID, Inception Score, samples/s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vqtk.cli import eval_prior_cmd
from vqtk.errors import VqtkError
from vqtk.evaluation.compare import compare_files
from vqtk.evaluation.run import checkpoint_info, run_evaluation
from vqtk.train.environment import pick_device


def add_commands(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a tokenizer (PSNR, SSIM, LPIPS, rFID, codebook usage) or a prior (gFID, Inception Score, "
             "samples/s) into a JSON report; or --compare reports",
        description="A tokenizer (stage-1 checkpoint): reconstruct every image of the evaluation set (the "
                    "recipe's data source eval_set(), or --data-path) and write a JSON report "
                    "(docs/eval_report.md) with a code-frequency histogram and a reconstruction grid next to it. "
                    "A prior (stage-2 checkpoint, e.g. runs/NAME/prior): sample --num-samples images into "
                    "REPORT_samples/ (resumable: the same command continues an interrupted run), then gFID against "
                    "--ref-stats and the Inception Score, samples/s and a sample grid. LPIPS and FID need weight "
                    "files; without them the report says which file is missing. FID is TensorFlow-Inception FID "
                    "(torch-fidelity), against the evaluated images or --ref-stats.",
    )
    p.add_argument("checkpoint", nargs="?", help="run folder, checkpoint folder or model.safetensors")
    p.add_argument("--data", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override fields of the recipe's [data] table (TOML literals), e.g. eval_crops=16")
    p.add_argument("--data-path", metavar="FOLDER",
                   help="evaluate every image under FOLDER instead (centre crops at the recipe's resolution)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N",
                   help="images per forward pass, or samples per batch (default 16)")
    p.add_argument("--max-images", type=int, metavar="N",
                   help="evaluate N images spread evenly over the set (default: all)")
    p.add_argument("--out", default="eval_report.json", metavar="REPORT.json",
                   help="report path (default eval_report.json); the PNGs are written next to it")
    p.add_argument("--lpips-weights", metavar="PATH",
                   help="torchvision backbone weights for LPIPS (default: the torch hub cache)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth for rFID, gFID and IS "
                        "(default: `vqtk download fid-inception`'s copy)")
    p.add_argument("--ref-stats", metavar="STATS.npz",
                   help="FID reference statistics from `vqtk fid-stats` (e.g. of ImageNet val): rFID's instead of "
                        "the evaluated images; gFID's (required for gFID)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--workers", type=int, metavar="N", help="data-loading worker processes (default 0)")
    p.add_argument("--compare", nargs="+", metavar="REPORT.json",
                   help="print reports side by side instead of evaluating (with two: difference and ratio)")
    eval_prior_cmd.add_options(p)
    p.set_defaults(func=cmd_eval)


def check_options(args: argparse.Namespace) -> None:
    """One-line errors for option values ``vqtk eval`` cannot use, before anything is loaded."""
    if args.batch_size <= 0:
        raise VqtkError(f"--batch-size: must be > 0, got {args.batch_size}")
    if args.max_images is not None and args.max_images <= 0:
        raise VqtkError(f"--max-images: must be > 0, got {args.max_images}")
    if args.workers is not None and args.workers < 0:
        raise VqtkError(f"--workers: must be >= 0, got {args.workers}")
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise VqtkError(f"--out: the report is JSON, give a path ending in .json (got {out})")
    for item in args.data:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise VqtkError(f"--data: expected KEY=VALUE, got {item!r}")
    if args.data_path is not None and not Path(args.data_path).expanduser().is_dir():
        raise VqtkError(f"--data-path: no such folder {args.data_path}")
    for option, path in (("--lpips-weights", args.lpips_weights), ("--inception-weights", args.inception_weights),
                         ("--ref-stats", args.ref_stats)):
        if path is not None and not Path(path).expanduser().is_file():
            raise VqtkError(f"{option}: no such file {path}")
    if args.device is not None:
        pick_device(args.device, "--device")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.compare:
        if args.checkpoint:
            raise VqtkError("--compare: takes report files only; drop the checkpoint argument")
        print(compare_files(args.compare))
        return 0
    if not args.checkpoint:
        raise VqtkError("eval: give a checkpoint to evaluate, or --compare REPORT.json ...")
    check_options(args)
    info = checkpoint_info(args.checkpoint)
    if info["stage"] == "2":
        return eval_prior_cmd.cmd_eval_prior(args, info["path"])
    eval_prior_cmd.refuse_prior_options(args, info["path"])
    report = run_evaluation(
        args.checkpoint,
        out=args.out,
        data_overrides=args.data,
        data_path=args.data_path,
        batch_size=args.batch_size,
        max_images=args.max_images,
        lpips_weights=args.lpips_weights,
        inception_weights=args.inception_weights,
        ref_stats=args.ref_stats,
        device=args.device,
        num_workers=args.workers or 0,
    )
    ckpt = report["checkpoint"]
    eval_prior_cmd.print_summary(report, Path(args.out), [
        f"{ckpt['path']} (step {ckpt['step']}) on {report['data']['description']}: "
        f"{report['data']['images']} images in {report['timing']['seconds']:.1f} s"],
        {"code histogram": "code_histogram", "reconstructions": "reconstructions"})
    return 0
