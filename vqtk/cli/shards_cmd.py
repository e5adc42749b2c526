"""``vqtk shards``: write an image folder as WebDataset tar shards for streamed training."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vqtk.errors import VqtkError
from vqtk.interfaces.data import ShardDataSource
from vqtk.io.shards import SIZES_FILE, write_shards
from vqtk.recipe import dump_toml
from vqtk.registry import default_registry


def add_commands(sub) -> None:
    p = sub.add_parser("shards", help="write an image folder as WebDataset tar shards (data.type = \"shards\")")
    p.add_argument("source", help="folder of images (searched recursively, in sorted order)")
    p.add_argument("--out", required=True, help="folder for the shards (new or empty)")
    p.add_argument("--shard-size", type=int, default=1000, metavar="N", help="images per shard (default 1000)")
    p.add_argument("--max-bytes", type=int, metavar="B",
                   help="also start a new shard once one holds B bytes of images (it may pass B by one image)")
    p.add_argument("--resolution", type=int, metavar="N",
                   help="scale images down to N on their shorter side before storing (smaller, faster shards; "
                        "train at data.resolution <= N); default: store the files as they are")
    p.add_argument("--class-labels", action="store_true",
                   help="label each image by its immediate subfolder (sorted names give 0, 1, ...): KEY.cls")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes reading and checking images (default: CPU count, at most 8)")
    p.set_defaults(func=cmd_shards)


def cmd_shards(args: argparse.Namespace) -> int:
    for flag, value in (("--shard-size", args.shard_size), ("--max-bytes", args.max_bytes),
                        ("--resolution", args.resolution), ("--workers", args.workers)):
        if value is not None and value <= 0:
            raise VqtkError(f"{flag}: must be > 0, got {value}")
    src = Path(args.source)
    if not src.is_dir():
        raise VqtkError(f"{src}: {'not a folder' if src.exists() else 'no such folder'}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VqtkError(f"--out {out}: exists and is not a folder")
    workers = args.workers or min(8, os.cpu_count() or 1)
    report = write_shards(src, out, shard_size=args.shard_size, max_bytes=args.max_bytes,
                          resolution=args.resolution, class_labels=args.class_labels, workers=workers)
    total = sum(report.counts)
    skipped = f"; {report.skipped} unreadable files skipped" if report.skipped else ""
    print(f"wrote {total} images ({report.bytes / 1e6:.1f} MB) in {len(report.shards)} shards to {out}{skipped}")
    readers = [spec.name for spec in default_registry().components("data")
               if spec.component_class is not None and issubclass(spec.component_class, ShardDataSource)]
    data: dict = {"type": readers[0]} if len(readers) == 1 else {}
    data.update(shards=[report.pattern], sizes=str(out / SIZES_FILE))
    if args.class_labels:
        data.update(class_labels=True, num_classes=len(report.classes))
    if args.resolution:
        data["resolution"] = args.resolution
    note = "" if readers else "  (no installed data source reads shards: a vqtk.interfaces.data.ShardDataSource)"
    print(f"\n# in a recipe{note}:\n" + dump_toml({"data": data}).strip())
    return 0
