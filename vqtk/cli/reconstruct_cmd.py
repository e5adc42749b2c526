"""``vqtk reconstruct``: encode and decode images with a trained tokenizer."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from vqtk.errors import VqtkError
from vqtk.evaluation.run import data_resolution
from vqtk.io.images import save_grid, save_png, to_uint8
from vqtk.measure import psnr
from vqtk.pretrained import load
from vqtk.train.environment import pick_device

#: largest --size accepted: a square image of this side already takes gigabytes
MAX_SIZE = 8192


def add_commands(sub) -> None:
    p = sub.add_parser("reconstruct", help="tokenize and reconstruct images with a trained checkpoint")
    p.add_argument("checkpoint", help="run folder, checkpoint folder or model.safetensors")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", required=True, help="folder for the reconstructions")
    p.add_argument("--size", type=int, help="resize the shorter side to SIZE and center-crop a square "
                   "(default: the recipe's data resolution)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=cmd_reconstruct)


def _load_image(path: Path, size: int, factor: int):
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except FileNotFoundError:
        raise VqtkError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VqtkError(f"{path}: cannot read image ({exc})") from None
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    im = im.crop((left, top, left + size, top + size))
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return x.permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    if args.size is not None and not 0 < args.size <= MAX_SIZE:
        raise VqtkError(f"--size: must be between 1 and {MAX_SIZE}, got {args.size}")
    device = pick_device(args.device, "--device") if args.device else None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VqtkError(f"--out {out}: exists and is not a folder")
    model = load(args.checkpoint, device=device)
    size = args.size if args.size is not None else data_resolution(model.recipe)
    f = model.downsample_factor
    if size % f:
        raise VqtkError(f"--size: {size} must be a positive multiple of the downsampling factor {f}")
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    for name in args.images:
        path = Path(name)
        x = _load_image(path, size, f).to(device)
        with torch.no_grad():
            indices = model.encode_to_indices(x)
            rec = model.decode_indices(indices).float().clamp(-1, 1)
        save_png(Image.fromarray(to_uint8(rec)[0].numpy()), out / f"{path.stem}_recon.png")
        save_grid([x.cpu(), rec.cpu()], out / f"{path.stem}_compare.png")
        print(f"{path}: {tuple(indices.shape[1:])} codes, PSNR {float(psnr(x, rec)):.2f} dB -> "
              f"{out / (path.stem + '_recon.png')}")
    return 0
