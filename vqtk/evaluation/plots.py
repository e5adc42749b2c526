"""The report's pictures drawn with PIL: the code-frequency histogram (``<stem>_codes.png``)."""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw

from vqtk.evaluation.metrics import codebook_statistics

_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def code_histogram_image(counts: torch.Tensor, *, title: str = "code frequencies",
                         size: tuple[int, int] = (900, 520)) -> Image.Image:
    """Sorted code frequencies (fraction of positions, log scale) against rank, one line per codebook."""
    counts = counts.detach().cpu().long()
    if counts.dim() == 1:
        counts = counts.unsqueeze(0)
    q, k = counts.shape
    width, height = size
    left, right, top, bottom = 70, 20, 50, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    stats = codebook_statistics(counts)
    d.text((left, 8), title, fill="black")
    d.text((left, 24), f"usage {100 * stats['usage_mean']:.1f}% of {k} codes, perplexity "
                       f"{stats['perplexity_mean']:.1f}, entropy {stats['entropy_bits_mean']:.2f} / "
                       f"{math.log2(k):.2f} bits" + (f" (mean of {q} codebooks)" if q > 1 else ""), fill="black")
    totals = counts.sum(dim=1, keepdim=True).clamp_min(1).double()
    freqs = (counts.double() / totals).sort(dim=1, descending=True).values
    positive = freqs[freqs > 0]
    d.rectangle([left, top, width - right, height - bottom], outline="black")
    if positive.numel() == 0:
        d.text((left + 10, height // 2), "no codes", fill="black")
        return img
    lo, hi = math.log10(float(positive.min())), math.log10(float(positive.max()))
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-6 else (lo, hi)
    lo -= max(0.1 * (hi - lo), 0.2)  # the rarest code still gets a visible bar
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(rank: float, value: float) -> tuple[float, float]:
        x = left + (rank + 0.5) / k * plot_w
        y = top + (hi - math.log10(value)) / (hi - lo) * plot_h
        return x, y

    for i in range(5):
        v = 10 ** (lo + (hi - lo) * i / 4)
        _, y = xy(0, v)
        d.line([left - 4, y, left, y], fill="black")
        d.text((4, y - 6), f"{v:.2g}", fill="black")
    for i in range(5):
        rank = (k - 1) * i / 4
        x, _ = xy(rank, 10**hi)
        d.line([x, height - bottom, x, height - bottom + 4], fill="black")
        d.text((x - 10, height - bottom + 8), f"{int(round(rank))}", fill="black")
    d.text((width - right - 150, height - 16), "code rank (by frequency)", fill="black")
    for row in range(q):
        colour = _COLOURS[row % len(_COLOURS)]
        values = [float(v) for v in freqs[row]]
        used = sum(v > 0 for v in values)
        # one point per code, or per pixel column when codes outnumber columns (the column's largest)
        per = max(1, math.ceil(k / plot_w))
        cols = [(r, max(values[r : r + per])) for r in range(0, k, per)]
        if q == 1:
            for r, v in cols:
                if v > 0:
                    x0, y = xy(r - 0.5, v)
                    x1, _ = xy(min(r + per, k) - 0.5, v)
                    d.rectangle([x0, y, max(x0, x1 - (1 if per == 1 and x1 - x0 > 3 else 0)), height - bottom],
                                fill=(150, 185, 220), outline=colour if x1 - x0 > 3 else None)
        else:
            pts = [xy(r, v) for r, v in cols if v > 0]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2)
            elif pts:
                x, y = pts[0]
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
            d.text((width - right - 200, top + 6 + 14 * row), f"codebook {row}: {used} used", fill=colour)
        if q == 1 and used < k:
            x, _ = xy(used - 0.5, 10**hi)
            for y0 in range(top, height - bottom, 8):
                d.line([x, y0, x, min(y0 + 4, height - bottom)], fill=(200, 0, 0))
            d.text((x + 4, top + 6), f"{used} of {k} codes used", fill=(200, 0, 0))
    return img
