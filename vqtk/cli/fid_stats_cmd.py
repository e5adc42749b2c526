"""``vqtk fid-stats DIR --out STATS.npz``: FID reference statistics of a folder of images, computed once."""

from __future__ import annotations

import argparse
from pathlib import Path

from vqtk.errors import VqtkError
from vqtk.evaluation.fid import load_fid_inception
from vqtk.evaluation.fid_stats import folder_statistics
from vqtk.evaluation.metrics import Unavailable
from vqtk.train.environment import pick_device


def add_commands(sub) -> None:
    p = sub.add_parser(
        "fid-stats",
        help="FID reference statistics (Inception pool3 mean and covariance) of a folder of images",
        description="Compute the FID statistics of every image under DIR (recursive; shorter side resized to "
                    "--resolution, centre crop: what `vqtk eval --data-path DIR` evaluates) with the "
                    "TensorFlow Inception of torch-fidelity, and save them as an .npz for "
                    "`vqtk eval --ref-stats` (docs/eval_report.md).",
    )
    p.add_argument("folder", metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, metavar="STATS.npz", help="statistics file to write")
    p.add_argument("--resolution", type=int, default=256, metavar="N",
                   help="image side after resize and centre crop (default 256); use the resolution you "
                        "evaluate at")
    p.add_argument("--max-images", type=int, metavar="N",
                   help="use N images spread evenly over the folder, as `vqtk eval --max-images` (default: all)")
    p.add_argument("--batch-size", type=int, default=50, metavar="B")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
                        "(default: `vqtk download fid-inception`'s copy)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="data-loading worker processes")
    p.set_defaults(func=cmd_fid_stats)


def check_options(args: argparse.Namespace) -> None:
    """One-line errors for option values ``vqtk fid-stats`` cannot use, before anything is loaded."""
    if not Path(args.folder).expanduser().is_dir():
        raise VqtkError(f"fid-stats: no such folder {args.folder}")
    if Path(args.out).suffix.lower() != ".npz":
        raise VqtkError(f"--out: the statistics file is .npz, give a path ending in .npz (got {args.out})")
    for option, value in (("--resolution", args.resolution), ("--batch-size", args.batch_size),
                          ("--max-images", args.max_images)):
        if value is not None and value <= 0:
            raise VqtkError(f"{option}: must be > 0, got {value}")
    if args.max_images is not None and args.max_images < 2:
        raise VqtkError(f"--max-images: FID statistics need at least 2 images, got {args.max_images}")
    if args.workers < 0:
        raise VqtkError(f"--workers: must be >= 0, got {args.workers}")
    if args.inception_weights is not None and not Path(args.inception_weights).expanduser().is_file():
        raise VqtkError(f"--inception-weights: no such file {args.inception_weights}")


def cmd_fid_stats(args: argparse.Namespace) -> int:
    check_options(args)
    device = pick_device(args.device or "auto", "--device")
    inception = load_fid_inception(args.inception_weights)
    if isinstance(inception, Unavailable):
        raise VqtkError(f"fid-stats: {inception.reason}")
    stats = folder_statistics(args.folder, inception.to(device), resolution=args.resolution,
                              batch_size=args.batch_size, max_images=args.max_images, num_workers=args.workers)
    out = stats.save(args.out)
    print(f"{stats.count} images of {stats.meta['folder']} at {args.resolution} px: FID statistics "
          f"({stats.meta['implementation']}) written to {out}")
    return 0
