"""Image and codebook metrics over a whole evaluation set, and the :class:`Unavailable` result.

SSIM takes batches ``(B, C, H, W)`` on the ``[0, 1]`` scale and returns one
value per image; PSNR and the code histogram are :mod:`vqtk.measure`'s. The
codebook summary works on a histogram of code indices accumulated over the
whole set (one row per codebook).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import attrs
import torch
import torch.nn.functional as F

from vqtk.measure import check_image_pair, code_usage, entropy_bits, perplexity, used_codes

#: SSIM constants of Wang et al. (2004), as in ``skimage.metrics.structural_similarity``
#: with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-d Gaussian taps ``(size,)`` centred on the middle tap (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_per_image(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    data_range: float = 1.0,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> torch.Tensor:
    """Mean SSIM of each image pair ``(B,)``, averaged over channels.

    Local means, variances and covariance come from a separable Gaussian window
    (``window`` taps, ``sigma``) applied without padding, so only positions where
    the whole window lies inside the image count (the same positions
    scikit-image averages after cropping its padded border). Variances are
    population (biased) estimates, as in the original SSIM.

    Raises:
        ValueError: the images are smaller than the window.
    """
    check_image_pair(real, fake)
    b, c, h, w = real.shape
    if h < window or w < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {h}x{w}")
    g = gaussian_window(window, sigma).to(device=real.device, dtype=torch.float64)
    x = real.double().reshape(b * c, 1, h, w)
    y = fake.double().reshape(b * c, 1, h, w)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, g.view(1, 1, 1, window))
        return F.conv2d(t, g.view(1, 1, window, 1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.reshape(b, c, -1).mean(dim=2).mean(dim=1).float()


# -- codebook ------------------------------------------------------------------


def codebook_statistics(counts: torch.Tensor) -> dict[str, list[float] | list[int] | float]:
    """Usage, perplexity and entropy of a code histogram ``(Q, K)``, per codebook and averaged.

    - ``usage``: fraction of the ``K`` codes used at least once;
    - ``used_codes``: how many codes were used;
    - ``entropy_bits``: Shannon entropy of the code frequencies (at most ``log2 K``);
    - ``perplexity``: ``2 ** entropy_bits``, the number of equally likely codes
      that would give the same entropy (at most ``K``).

    Each is a list with one value per codebook, plus ``*_mean`` averaged over codebooks.
    """
    counts = counts.detach().cpu().long()
    if counts.dim() == 1:
        counts = counts.unsqueeze(0)
    stats: dict[str, list[float] | list[int] | float] = {
        "used_codes": used_codes(counts).tolist(),
        "usage": code_usage(counts, dtype=torch.float64).tolist(),
        "entropy_bits": entropy_bits(counts).tolist(),
        "perplexity": perplexity(counts).tolist(),
        "positions": int(counts[0].sum()),
    }
    for key in ("usage", "entropy_bits", "perplexity"):
        stats[f"{key}_mean"] = _mean(stats[key])  # type: ignore[arg-type]
    return stats


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")


# -- results ---------------------------------------------------------------------


@attrs.define
class Unavailable:
    """A metric that could not be computed, and why (reported, never silently dropped)."""

    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"available": False, "reason": self.reason}
