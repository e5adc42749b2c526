"""``vqtk sample``: draw images from a trained prior."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from vqtk.build import build_component, build_vqgan
from vqtk.errors import VqtkError
from vqtk.interfaces import SamplingOptions
from vqtk.io.checkpoint import load_checkpoint, load_state_strict
from vqtk.io.images import save_png, tile
from vqtk.pretrained import recipe_of
from vqtk.train.environment import pick_device


def add_commands(sub) -> None:
    p = sub.add_parser("sample", help="sample images from a stage-2 checkpoint")
    p.add_argument("checkpoint", help="stage-2 run folder (e.g. runs/NAME/prior), checkpoint folder or file")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="image size in pixels, a multiple of the tokenizer's downsampling factor; "
                        "larger than the training size samples by sliding window")
    p.add_argument("--class", dest="label", type=int, help="class label for class-conditional priors")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--steps", type=int, help="decoding steps for iterative (MaskGIT) priors")
    p.add_argument("--no-cache", action="store_true", help="disable the KV cache (autoregressive priors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, help="PNG file for the grid of samples")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    _check_arguments(args)
    device = pick_device(args.device or "auto", "--device")
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.metadata.get("stage") != "2":
        raise VqtkError(f"{ckpt.path}: a stage-1 (tokenizer) checkpoint; sample needs a stage-2 (prior) checkpoint")
    recipe = recipe_of(ckpt)
    tokenizer = build_vqgan(recipe)
    tok_state = ckpt.state_dict("model")
    if not tok_state:
        raise VqtkError(f"{ckpt.path}: holds no tokenizer weights")
    load_state_strict(tokenizer, tok_state, str(ckpt.path))
    prior = build_component(recipe.prior, "prior")
    load_state_strict(prior, ckpt.state_dict("prior"), str(ckpt.path))
    tokenizer.to(device).eval()
    prior.to(device).eval()

    grid = None
    if args.size:
        f = tokenizer.downsample_factor
        h, w = args.size
        if h <= 0 or w <= 0 or h % f or w % f:
            raise VqtkError(f"--size: {h} {w} must be positive multiples of the downsampling factor {f}")
        grid = (h // f, w // f)
    labels = None
    if args.label is not None:
        if not prior.num_classes:
            raise VqtkError("--class: this prior is unconditional")
        if not 0 <= args.label < prior.num_classes:
            raise VqtkError(f"--class: must be in [0, {prior.num_classes}), got {args.label}")
        labels = torch.full((args.n,), args.label, dtype=torch.long, device=device)
    elif prior.num_classes:
        labels = torch.arange(args.n, device=device) % prior.num_classes
    options = SamplingOptions(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              cfg_scale=args.cfg, steps=args.steps, use_cache=not args.no_cache)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    try:
        with torch.no_grad():
            idx = prior.sample(args.n, grid_size=grid, labels=labels, options=options, generator=generator)
            images = tokenizer.decode_indices(idx.to(device)).float().cpu()
    except ValueError as exc:  # an option the prior does not support
        raise VqtkError(f"prior {recipe.prior.type!r}: {exc}") from None
    path = save_png(tile(images), Path(args.out))
    print(f"{args.n} samples of {images.shape[2]}x{images.shape[3]} px ({idx.shape[1]}x{idx.shape[2]} codes) -> {path}")
    return 0


_SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values no prior could use, before any checkpoint is read."""
    if args.n <= 0:
        raise VqtkError(f"--n: must be > 0, got {args.n}")
    if not (0 < args.temperature < math.inf):
        raise VqtkError(f"--temperature: must be a finite number > 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise VqtkError(f"--top-p: must be in (0, 1], got {args.top_p}")
    if args.top_k is not None and args.top_k <= 0:
        raise VqtkError(f"--top-k: must be > 0, got {args.top_k}")
    if not math.isfinite(args.cfg) or args.cfg < 0:
        raise VqtkError(f"--cfg: must be a finite number >= 0 (1 = no guidance), got {args.cfg}")
    if args.steps is not None and args.steps <= 0:
        raise VqtkError(f"--steps: must be > 0, got {args.steps}")
    if not _SEED_RANGE[0] <= args.seed <= _SEED_RANGE[1]:
        raise VqtkError(f"--seed: must fit in 64 bits, got {args.seed}")
