"""Reconstruction FID (rFID): Fréchet distance between Inception features of images and reconstructions.

vqtk never downloads weights. The feature network is torchvision's
``inception_v3`` with its ImageNet weights, loaded from a local file (torch's
hub cache, where torchvision itself would have saved it, or an explicit path).
Features are the 2048-d global average pool ("pool3") of images resized to
299x299 by bilinear interpolation.

FID values depend on the network weights, the resizing and the feature layer:
numbers from different tools (pytorch-fid, clean-fid, TensorFlow, torchvision
weights) are not comparable (LlamaGen#34 reports 4.28 vs 2.11 for one model).
The report always names the implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.errors import VqtkError

#: torchvision's file for ``Inception_V3_Weights.IMAGENET1K_V1``.
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
IMPLEMENTATION = "vqtk: torchvision inception_v3, IMAGENET1K_V1 weights (inception_v3_google-0cc3c7bd.pth)"
FEATURE_LAYER = "pool3: 2048-d global average pool after Mixed_7c"
RESIZE = "bilinear (align_corners=False, no antialias) to 299x299; pixels in [-1, 1], the scale the weights expect"
NOT_COMPARABLE = (
    "FID depends on the Inception weights, resizing and feature layer: compare only numbers from the "
    "same tool; not comparable to pytorch-fid, clean-fid or TensorFlow FID (see LlamaGen#34)"
)
FEATURE_DIM = 2048
INPUT_SIZE = 299


def hub_checkpoint_dir() -> Path:
    """Where torchvision caches weights: ``torch.hub.get_dir()/checkpoints`` (follows ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights(explicit: Optional[str] = None) -> Optional[Path]:
    """``explicit`` when given (``vqtk eval`` checked that it exists), else the hub cache's file, else ``None``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    cached = hub_checkpoint_dir() / INCEPTION_FILE
    return cached if cached.is_file() else None


def missing_weights_reason() -> str:
    return f"needs {INCEPTION_FILE} in {hub_checkpoint_dir()} (torchvision's ImageNet inception_v3 weights; " \
           f"vqtk does not download) or --inception-weights PATH"


class InceptionFeatures(nn.Module):
    """torchvision's Inception v3 cut at the 2048-d average pool, frozen, eval mode.

    ``forward`` takes images in ``[-1, 1]`` of any size and returns ``(B, 2048)`` float32.
    """

    def __init__(self, weights: Path):
        super().__init__()
        from torchvision.models import inception_v3

        with torch.device("meta"):  # no random initialisation: every tensor comes from the file
            net = inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise VqtkError(f"{weights}: cannot read Inception weights ({type(exc).__name__})") from None
        if not isinstance(state, dict):
            raise VqtkError(f"{weights}: does not hold a state dict")
        try:
            net.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise VqtkError(f"{weights}: is not torchvision's {INCEPTION_FILE} ({first})") from None
        # torchvision's ImageNet weights are Google's, trained on inputs scaled to [-1, 1]
        # (transform_input=True only maps ImageNet-normalised input back to that scale)
        net = net.float()
        net.fc = nn.Identity()
        net.dropout = nn.Identity()
        net.AuxLogits = None
        net.aux_logits = False
        if any(t.is_meta for t in [*net.parameters(), *net.buffers()]):
            raise VqtkError(f"{weights}: does not hold every tensor of torchvision's inception_v3")
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)  # always eval: batch norm statistics are fixed

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.net(x.clamp(-1, 1)).float()


class FeatureStatistics:
    """Running mean and covariance of feature vectors, in float64, without keeping the features.

    Call :meth:`add` with ``(B, D)`` batches, then :meth:`mean_cov`.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, features: torch.Tensor) -> None:
        f = features.detach().to(self.sum.device, torch.float64)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (as ``numpy.cov(rowvar=False)``)."""
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors, got {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.cpu(), cov.cpu()


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues clamped)."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Fréchet distance between Gaussians ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``|mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^{1/2})``. The trace
    of the matrix square root is computed as ``tr((S1^{1/2} cov2 S1^{1/2})^{1/2})``
    (the same eigenvalues as ``cov1 cov2``, but a symmetric PSD matrix), in
    float64: stable for the rank-deficient covariances of small sets, where
    ``scipy.linalg.sqrtm(cov1 @ cov2)`` can return complex noise.
    """
    mu1, mu2 = mu1.double(), mu2.double()
    cov1, cov2 = cov1.double(), cov2.double()
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(
            f"mismatched statistics: means {tuple(mu1.shape)} / {tuple(mu2.shape)}, "
            f"covariances {tuple(cov1.shape)} / {tuple(cov2.shape)}"
        )
    root1 = _sqrt_psd(cov1)
    inner = root1 @ cov2 @ root1
    tr_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    value = diff.dot(diff) + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt
    return float(value.clamp_min(0))
