"""``vqtk run``: train what a recipe describes (stage 1, then stage 2 when it has a prior)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vqtk.build import check_recipe_prior
from vqtk.errors import VqtkError
from vqtk.io.checkpoint import LAST
from vqtk.recipe import load_recipe
from vqtk.train.stage1 import Stage1Trainer
from vqtk.train.stage2 import Stage2Trainer

log = logging.getLogger("vqtk")


def add_commands(sub) -> None:
    p = sub.add_parser("run", help="train the recipe's stages, writing checkpoints, metrics and images")
    p.add_argument("recipe", help="path to a TOML recipe")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="override recipe values (TOML literals)")
    p.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoints")
    p.add_argument("--stage", choices=["1", "2", "all"], default="all",
                   help="run only stage 1 (tokenizer) or stage 2 (prior); default: every stage the recipe has")
    p.add_argument("--tokenizer", help="stage 2: tokenizer checkpoint to train on (default: this run's stage 1)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.set_defaults(func=cmd_run)


def _has_run(folder: Path) -> bool:
    return (folder / "checkpoints" / LAST).exists()


def cmd_run(args: argparse.Namespace) -> int:
    recipe, resolved = load_recipe(args.recipe, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    if out.exists() and not out.is_dir():
        raise VqtkError(f"--out {out}: exists and is not a folder")
    stage1 = args.stage in ("1", "all") and args.tokenizer is None
    stage2 = args.stage == "2" or (args.stage == "all" and recipe.prior is not None)
    if stage2 and recipe.prior is None:
        raise VqtkError("--stage 2: the recipe has no [prior] table")
    if args.tokenizer and args.stage == "1":
        raise VqtkError("--tokenizer: only used by stage 2")
    prior_out = out / "prior"
    for folder, wanted in ((out, stage1), (prior_out, stage2)):
        if wanted and _has_run(folder) and not args.resume:
            raise VqtkError(f"--out {out}: already holds a run; pass --resume to continue it, or choose another --out")
    if args.resume and not any(_has_run(f) for f, w in ((out, stage1), (prior_out, stage2)) if w):
        raise VqtkError(f"--resume: {out} holds no checkpoint to resume")

    def make_out() -> None:  # only once the model is built: a bad recipe leaves no folder behind
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VqtkError(f"--out {out}: cannot create ({exc.strerror})") from None

    tokenizer = args.tokenizer
    if stage1:
        trainer = Stage1Trainer(recipe, resolved, out, resume=args.resume and _has_run(out),
                                progress=not args.no_progress)
        if stage2:  # a prior that cannot model these codes is refused before stage 1 trains
            check_recipe_prior(recipe, trainer.model, trainer.data.resolution)
        make_out()
        tokenizer = trainer.run()
    if stage2:
        if tokenizer is None:
            if not _has_run(out):
                raise VqtkError(f"--stage 2: {out} has no stage-1 checkpoint; train it first or pass --tokenizer")
            tokenizer = out
        trainer2 = Stage2Trainer(recipe, resolved, prior_out, tokenizer, resume=args.resume,
                                 progress=not args.no_progress)
        make_out()
        trainer2.run()
    return 0
