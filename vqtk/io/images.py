"""Pictures people look at: image grids and loss curves, written as PNG with Pillow."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` in ``[-1, 1]`` -> ``(B, H, W, C)`` uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.permute(0, 2, 3, 1)


def grid_image(rows: Sequence[torch.Tensor], pad: int = 2) -> Image.Image:
    """Rows of image batches (each ``(B, C, H, W)`` in ``[-1, 1]``, same H, W) as one picture."""
    batches = [to_uint8(r) for r in rows]
    n = max(b.shape[0] for b in batches)
    h, w = batches[0].shape[1:3]
    canvas = Image.new("RGB", (n * (w + pad) + pad, len(batches) * (h + pad) + pad), (255, 255, 255))
    for r, batch in enumerate(batches):
        for c in range(batch.shape[0]):
            canvas.paste(Image.fromarray(batch[c].numpy()), (pad + c * (w + pad), pad + r * (h + pad)))
    return canvas


def save_png(image: Image.Image, path: Path) -> Path:
    """Write atomically (a partial PNG never replaces a good one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_grid(rows: Sequence[torch.Tensor], path: Path, max_columns: int = 8) -> Path:
    return save_png(grid_image([r[:max_columns] for r in rows]), path)


def tile(images: torch.Tensor, columns: int | None = None) -> Image.Image:
    """A batch as a roughly square grid."""
    n = images.shape[0]
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = [images[i : i + columns] for i in range(0, n, columns)]
    return grid_image(rows)


_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def plot_curves(series: dict[str, list[tuple[int, float]]], path: Path, title: str = "loss",
                size: tuple[int, int] = (900, 520)) -> Path:
    """Line plot of named ``(step, value)`` series on a log-scale y axis."""
    width, height = size
    left, right, top, bottom = 70, 190, 30, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [(s, v) for vals in series.values() for s, v in vals if v > 0 and math.isfinite(v)]
    d.text((left, 8), title, fill="black")
    if not pts:
        d.text((left, height // 2), "no data yet", fill="black")
        return save_png(img, path)
    s0, s1 = min(p[0] for p in pts), max(p[0] for p in pts)
    lo, hi = math.log10(min(p[1] for p in pts)), math.log10(max(p[1] for p in pts))
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    s1 = s1 if s1 > s0 else s0 + 1

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (step - s0) / (s1 - s0) * (width - left - right)
        y = top + (hi - math.log10(value)) / (hi - lo) * (height - top - bottom)
        return x, y

    d.rectangle([left, top, width - right, height - bottom], outline="black")
    for k in range(5):
        v = 10 ** (lo + (hi - lo) * k / 4)
        _, y = xy(s0, v)
        d.line([left - 4, y, left, y], fill="black")
        d.text((4, y - 6), f"{v:.3g}", fill="black")
    for k in range(5):
        s = s0 + (s1 - s0) * k / 4
        x, _ = xy(s, 10**lo)
        d.line([x, height - bottom, x, height - bottom + 4], fill="black")
        d.text((x - 10, height - bottom + 8), f"{int(s)}", fill="black")
    d.text((width - right - 30, height - 16), "step", fill="black")
    for i, (name, vals) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        line = [xy(s, v) for s, v in vals if v > 0 and math.isfinite(v)]
        if len(line) > 1:
            d.line(line, fill=colour, width=2)
        elif line:
            x, y = line[0]
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        d.line([width - right + 10, top + 10 + 16 * i, width - right + 30, top + 10 + 16 * i], fill=colour, width=3)
        d.text((width - right + 36, top + 4 + 16 * i), name[:22], fill="black")
    return save_png(img, path)
