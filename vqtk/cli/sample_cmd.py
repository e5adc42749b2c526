"""``vqtk sample``: draw images from a trained prior."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vqtk.errors import VqtkError
from vqtk.evaluation.prior_run import balanced_labels, check_sampling_values, load_prior_checkpoint
from vqtk.interfaces import SCALES, SamplingOptions, TokenLayout
from vqtk.io.images import save_png, tile
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
    run = load_prior_checkpoint(args.checkpoint, device=device)
    recipe, tokenizer, prior = run.recipe, run.tokenizer, run.prior

    grid = None
    if args.size:
        f = tokenizer.downsample_factor
        h, w = args.size
        if h <= 0 or w <= 0 or h % f or w % f:
            raise VqtkError(f"--size: {h} {w} must be positive multiples of the downsampling factor {f}")
        grid = (h // f, w // f)
        if prior.layout.kind == SCALES and grid != tuple(prior.grid_size):
            g = prior.grid_size
            raise VqtkError(f"--size: this prior models {prior.layout.describe()}, which code "
                            f"{g[0] * f}x{g[1] * f}-pixel images only")
    labels = None
    if args.label is not None:
        if not prior.num_classes:
            raise VqtkError("--class: this prior is unconditional")
        if not 0 <= args.label < prior.num_classes:
            raise VqtkError(f"--class: must be in [0, {prior.num_classes}), got {args.label}")
        labels = torch.full((args.n,), args.label, dtype=torch.long, device=device)
    else:
        labels = balanced_labels(0, args.n, prior.num_classes, device)
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
    print(f"{args.n} samples of {images.shape[2]}x{images.shape[3]} px ({_codes(idx, prior.layout)}) -> {path}")
    return 0


def _codes(indices: torch.Tensor, layout: TokenLayout) -> str:
    """``8x8 codes``, ``8x8x4 codes`` (depth) or ``680 codes in 10 scales (...)``."""
    if layout.kind == SCALES:
        return f"{indices.shape[1]} codes in {layout.describe()}"
    return "x".join(str(n) for n in indices.shape[1:]) + " codes"


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values no prior could use, before any checkpoint is read."""
    if args.n <= 0:
        raise VqtkError(f"--n: must be > 0, got {args.n}")
    check_sampling_values(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, cfg_scale=args.cfg,
                          steps=args.steps, seed=args.seed)
