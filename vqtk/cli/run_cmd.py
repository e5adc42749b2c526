"""``vqtk run``: train what a recipe describes."""

from __future__ import annotations

import argparse
from pathlib import Path

from vqtk.errors import VqtkError


def add_commands(sub) -> None:
    p = sub.add_parser("run", help="train the recipe's stages, writing checkpoints, metrics and images")
    p.add_argument("recipe", help="path to a TOML recipe")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="override recipe values (TOML literals)")
    p.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from vqtk.recipe import load_recipe
    from vqtk.train.checkpoint import LAST
    from vqtk.train.stage1 import Stage1Trainer

    recipe, resolved = load_recipe(args.recipe, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    has_run = (out / "checkpoints" / LAST).exists()
    if has_run and not args.resume:
        raise VqtkError(f"--out {out}: already holds a run; pass --resume to continue it, or choose another --out")
    if args.resume and not has_run:
        raise VqtkError(f"--resume: {out} holds no checkpoint to resume")
    if out.exists() and not out.is_dir():
        raise VqtkError(f"--out {out}: exists and is not a folder")
    trainer = Stage1Trainer(recipe, resolved, out, resume=args.resume, progress=not args.no_progress)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VqtkError(f"--out {out}: cannot create ({exc.strerror})") from None
    trainer.run()
    return 0
