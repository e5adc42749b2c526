"""Image and codebook metrics for evaluating a tokenizer, written in torch.

Image metrics take batches ``(B, C, H, W)`` on the ``[0, 1]`` scale and return
one value per image; callers average over the set. Codebook metrics work on a
histogram of code indices accumulated over the whole set (one row per codebook).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import attrs
import torch
import torch.nn.functional as F

from vqtk.errors import MissingFileError, VqtkError

#: SSIM constants of Wang et al. (2004), as in ``skimage.metrics.structural_similarity``
#: with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` (model space) as float32 on ``[0, 1]``, clamped."""
    return ((images.detach().float() + 1) / 2).clamp(0, 1)


def psnr_per_image(real: torch.Tensor, fake: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image pair ``(B,)``: ``10 log10(range^2 / MSE)``, MSE over all pixels and channels.

    Identical images give ``10 log10(range^2 / 1e-10)`` (100 dB on ``[0, 1]``)
    rather than infinity, so a set average stays finite.
    """
    _check_pair(real, fake)
    mse = (real.float() - fake.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-10))


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
    _check_pair(real, fake)
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


def _check_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape != fake.shape or real.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) batches of one shape, got {tuple(real.shape)} and {tuple(fake.shape)}")


# -- codebook ------------------------------------------------------------------


def code_histogram(
    indices: torch.Tensor, *, codebook_size: int, num_codebooks: int = 1, check_range: bool = True
) -> torch.Tensor:
    """Counts ``(num_codebooks, codebook_size)`` (int64, on the indices' device) of a batch of indices.

    ``indices`` is ``(B, h, w)`` for one codebook or ``(B, h, w, Q)`` with ``Q ==
    num_codebooks``; row ``q`` counts codebook ``q``'s indices. ``check_range``
    raises ``ValueError`` for an index outside ``[0, codebook_size)`` (one host
    sync); without it the function never syncs.
    """
    idx = indices.detach().long()
    if num_codebooks == 1 and idx.dim() == 3:
        idx = idx.unsqueeze(-1)
    if idx.dim() != 4 or idx.shape[-1] != num_codebooks:
        raise ValueError(
            f"expected indices (B, h, w{', ' + str(num_codebooks) if num_codebooks > 1 else ''}), "
            f"got shape {tuple(indices.shape)}"
        )
    flat = idx.reshape(-1, num_codebooks)
    if check_range and flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
        raise ValueError(
            f"indices out of range for a codebook of {codebook_size} codes "
            f"(min {int(flat.min())}, max {int(flat.max())})"
        )
    offsets = torch.arange(num_codebooks, device=flat.device) * codebook_size
    counts = torch.bincount((flat + offsets).reshape(-1), minlength=num_codebooks * codebook_size)
    return counts.reshape(num_codebooks, codebook_size)


def entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of each row of a histogram ``(Q, K)`` -> ``(Q,)`` (float64).

    ``H = -sum p log2 p`` with ``p = counts / counts.sum()``; empty codes add 0.
    """
    c = counts.double()
    p = c / c.sum(dim=-1, keepdim=True).clamp_min(1)
    return -(torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p))).sum(dim=-1)


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
    used = (counts > 0).sum(dim=1)
    h = entropy_bits(counts)
    stats: dict[str, list[float] | list[int] | float] = {
        "used_codes": [int(u) for u in used],
        "usage": [float(u) / counts.shape[1] for u in used],
        "entropy_bits": [float(v) for v in h],
        "perplexity": [float(2.0**v) for v in h],
        "positions": int(counts[0].sum()),
    }
    for key in ("usage", "entropy_bits", "perplexity"):
        stats[f"{key}_mean"] = _mean(stats[key])  # type: ignore[arg-type]
    return stats


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")


# -- LPIPS -----------------------------------------------------------------------


@attrs.define
class Unavailable:
    """A metric that could not be computed, and why (reported, never silently dropped)."""

    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"available": False, "reason": self.reason}


@attrs.define(eq=False)
class LPIPSMetric:
    """LPIPS through the registered ``lpips`` loss, with pretrained backbone weights only.

    ``distance(real, fake)`` takes images in ``[-1, 1]`` and returns ``(B,)``.
    """

    loss: Any
    plugin: str
    config: dict[str, Any]

    def distance(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return self.loss.distance(real, fake).detach().float().reshape(-1)

    def to(self, device: torch.device) -> "LPIPSMetric":
        self.loss.to(device)
        return self


def build_lpips_metric(
    *, recipe: Any = None, registry: Any = None, backbone_weights: Optional[str] = None
) -> LPIPSMetric | Unavailable:
    """The ``lpips`` loss component as a metric, or :class:`Unavailable` saying why not.

    The options (``net``, ``backbone_weights``) come from the recipe's own
    ``lpips`` loss when it has one, else the component's defaults;
    ``backbone_weights`` overrides the file. A recipe that trained with
    ``pretrained_backbone = false`` is still evaluated with the pretrained
    backbone: a random backbone is never reported as LPIPS.

    Raises:
        VqtkError: ``backbone_weights`` names a file that does not exist.
    """
    from vqtk.registry import default_registry

    registry = registry or default_registry()
    if backbone_weights is not None and not Path(backbone_weights).expanduser().is_file():
        raise VqtkError(f"--lpips-weights: no such file {backbone_weights}")
    if "lpips" not in registry.names("loss"):
        return Unavailable("no loss component named 'lpips' is registered (the built-in plugin provides it)")
    spec = registry.get("loss", "lpips")
    config = None
    if recipe is not None:
        config = next((ref.config for ref in recipe.loss.values() if ref.type == "lpips"), None)
    try:
        if config is None:
            config = spec.config()
        fields = attrs.fields_dict(type(config))
        changes: dict[str, Any] = {}
        if "pretrained_backbone" in fields:
            changes["pretrained_backbone"] = True
        if backbone_weights is not None and "backbone_weights" in fields:
            changes["backbone_weights"] = str(Path(backbone_weights).expanduser())
        config = attrs.evolve(config, **changes)
        loss = spec.create(config)
    except MissingFileError as exc:
        return Unavailable(str(exc))
    except (VqtkError, ValueError, TypeError) as exc:
        return Unavailable(f"the lpips loss could not be built: {exc}")
    if not callable(getattr(loss, "distance", None)):
        return Unavailable(f"the 'lpips' loss of plugin {spec.plugin!r} has no distance(real, fake) method")
    return LPIPSMetric(loss=loss, plugin=spec.plugin, config=_plain(attrs.asdict(config)))


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in d.items()}
