"""FID features: torch-fidelity's port of TensorFlow's Inception v3, the running statistics, the distance.

Published tokenizer and generator tables (taming-transformers, LlamaGen via
ADM's evaluator, MaskGIT, ...) measure FID with TensorFlow's 2015-12-05
Inception graph: 2048-d "pool3" features of uint8 images resized to 299x299
by TensorFlow 1.x's bilinear resize. :class:`FidInception` computes those
features through torch-fidelity's ``FeatureExtractorInceptionV3`` (weights
converted from that graph, TF-exact resize). Other networks (torchvision's
Inception, clean-fid's antialiased resizing) give different numbers for the
same images (LlamaGen#34: 4.28 vs 2.11 for one checkpoint).

torch-fidelity never downloads here: its weight file
(``weights-inception-2015-12-05-6726825d.pth``, :mod:`vqtk.io.weights` key
``fid-inception``) is loaded from a local path, after a safe read
(``weights_only``) checked that it holds only tensors; its SHA-256 goes into
reports and statistics files. The protocol, shared by ``vqtk eval`` and
``vqtk fid-stats``:

1. images in ``[-1, 1]`` (the data source's tensors, or clamped reconstructions)
   become uint8 as ``clamp(127.5 x + 128, 0, 255)`` truncated, i.e.
   ``round((x + 1) * 127.5)`` with halves rounded up (LlamaGen's conversion;
   images read from 8-bit files get their exact pixel values back);
2. torch-fidelity resizes them to 299x299 (TF 1.x bilinear, ``align_corners=False``)
   and scales to ``(x - 128) / 128``;
3. the 2048-d average pool after ``Mixed_7c`` (torch-fidelity's feature ``"2048"``).

Mean and covariance are accumulated in float64 (:class:`FeatureStatistics`);
:func:`frechet_distance` is the usual formula, computed stably.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from scipy.linalg import lapack
from torch import nn

from vqtk.errors import MissingFileError, VqtkError
from vqtk.evaluation.metrics import Unavailable
from vqtk.io import weights
from vqtk.io.files import file_sha256

log = logging.getLogger("vqtk")

#: the :data:`vqtk.io.weights.KNOWN` key of the FID feature network's weights
FID_WEIGHTS = "fid-inception"

#: torch-fidelity's weight file (TensorFlow's 2015-12-05 Inception graph, converted)
INCEPTION_FILE = weights.record_of(FID_WEIGHTS).file
FEATURE_LAYER = "2048"
FEATURE_DIM = 2048
#: what a statistics file must have been made with: network, feature layer, quantisation, resize
PROTOCOL = "tf-inception-2015-12-05/pool3-2048/uint8-round-half-up/tf1-bilinear-299"
FEATURE_LAYER_TEXT = (
    "torch-fidelity feature '2048': pool3, the 2048-d global average pool after Mixed_7c "
    "(the layer of TensorFlow, pytorch-fid and ADM-evaluator FID)"
)
#: the Inception Score's parts (as torch-fidelity, ADM's evaluator and papers: 10) and torch-fidelity's shuffle seed
IS_SPLITS = 10
IS_SEED = 2020
IS_TEXT = ("exp(mean KL(p(y|x) || p(y))) over the samples' softmax of TensorFlow-Inception's 1008 logits without "
           "bias (torch-fidelity 'logits_unbiased', the original Inception Score code's), computed per split by "
           "torch-fidelity's isc_features_to_metric; value the mean over splits, std their spread")
QUANTIZE = "[-1, 1] -> uint8 as clamp(127.5 x + 128, 0, 255) truncated (round((x + 1) * 127.5), halves up)"
RESIZE = "torch-fidelity's TensorFlow-1.x bilinear resize to 299x299 (align_corners=False), then (x - 128) / 128"
COMPARABLE = (
    "TensorFlow-Inception FID, the protocol of published tokenizer tables: comparable with a paper's number "
    "only for the same images and reference (e.g. ImageNet val at 256 px, 50 000 images); not with "
    "torchvision-Inception or clean-fid numbers (LlamaGen#34)"
)


def find_inception_weights(explicit: Optional[str] = None) -> Optional[Path]:
    """``explicit`` when given (``vqtk eval`` checked that it exists), else the verified ``fid-inception``
    file of :mod:`vqtk.io.weights` (downloaded on first use unless offline), else ``None``.

    A download that fails is logged (one line); a corrupt cached copy raises a one-line :class:`VqtkError`.
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    try:
        return weights.fetch(FID_WEIGHTS)
    except MissingFileError as exc:
        if not weights.is_offline():
            log.warning("FID Inception (rFID, gFID, Inception Score): %s", exc)
        return None


def missing_weights_reason() -> str:
    record = weights.record_of(FID_WEIGHTS)
    where = " or ".join(str(d) for d in weights.weights_dirs())
    offline = "; VQTK_OFFLINE=1 forbids downloading it" if weights.is_offline() else \
        " and downloading it failed (see the log)"
    return (f"needs {record.file} in {where} ({record.what}){offline}: `{weights.download_command(record)}` "
            "fetches it; or --inception-weights PATH")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` to uint8 ``[0, 255]``: ``clamp(127.5 x + 128, 0, 255)`` truncated (see the module doc)."""
    return (images.float() * 127.5 + 128.0).clamp_(0, 255).to(torch.uint8)


class FidInception(nn.Module):
    """torch-fidelity's ``FeatureExtractorInceptionV3`` (feature ``"2048"``), frozen, from a local weight file.

    ``forward`` takes images ``(B, 3, H, W)`` (one channel is repeated) in
    ``[-1, 1]``, of any size, and returns ``(B, 2048)`` float32 pool3 features
    of their uint8 quantisation (:func:`to_uint8`). :meth:`describe` names
    the implementation, weights and protocol for reports and statistics files.
    """

    def __init__(self, weights_path: Path):
        super().__init__()
        import torch_fidelity
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = Path(weights_path)
        try:  # a safe read first: torch-fidelity unpickles the file with weights_only=False
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise VqtkError(f"{path}: cannot read it as Inception weights ({type(exc).__name__}; "
                            f"expected torch-fidelity's {INCEPTION_FILE})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise VqtkError(f"{path}: does not hold a state dict of tensors "
                            f"(expected torch-fidelity's {INCEPTION_FILE})")
        del state
        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", [FEATURE_LAYER],
                                                   feature_extractor_weights_path=str(path))
        except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped tensors
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__
            raise VqtkError(f"{path}: is not torch-fidelity's {INCEPTION_FILE} ({detail[:200]})") from None
        self.weights_path = path
        self.sha256 = file_sha256(path)
        self.version = torch_fidelity.__version__
        self.implementation = (f"torch-fidelity {self.version} FeatureExtractorInceptionV3 "
                               f"(TensorFlow Inception v3 2015-12-05, {INCEPTION_FILE})")

    def train(self, mode: bool = True) -> "FidInception":
        return super().train(False)  # always eval: batch norm statistics are fixed

    def describe(self) -> dict[str, Any]:
        """The extractor and protocol, as reports and statistics files record them."""
        return {
            "implementation": self.implementation,
            "feature_layer": FEATURE_LAYER_TEXT,
            "quantize": QUANTIZE,
            "resize": RESIZE,
            "protocol": PROTOCOL,
            "weights": str(self.weights_path),
            "weights_sha256": self.sha256,
        }

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"FID features need images (B, 3, H, W) or (B, 1, H, W), got {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        (features,) = self.net(to_uint8(images))
        return features.float()

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The 1008 class logits without bias of pool3 ``features`` (torch-fidelity's ``"logits_unbiased"``,
        its ``x.mm(fc.weight.T)``): what the Inception Score is computed from, without a second forward."""
        return features.float() @ self.net.fc.weight.T.float()


def load_fid_inception(explicit: Optional[str] = None) -> FidInception | Unavailable:
    """The FID feature network, or why it is unavailable (torch-fidelity not installed, no weight file).

    ``explicit`` is a weight file (``--inception-weights``); without it the
    file is :func:`find_inception_weights`'s.
    """
    if importlib.util.find_spec("torch_fidelity") is None:
        return Unavailable("needs the torch-fidelity package (pip install torch-fidelity): "
                           "the TensorFlow-Inception FID feature extractor")
    path = find_inception_weights(explicit)
    if path is None:
        return Unavailable(missing_weights_reason())
    return FidInception(path)


def inception_score(logits: torch.Tensor, splits: int = IS_SPLITS) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` of ``(N, 1008)`` unbiased logits: mean and std over
    ``splits`` equal parts, by torch-fidelity's own ``isc_features_to_metric`` (its shuffle with seed 2020)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    if logits.shape[0] < splits:
        raise ValueError(f"the Inception Score over {splits} splits needs at least {splits} images, "
                         f"got {logits.shape[0]}")
    out = isc_features_to_metric(logits.cpu(), splits=splits, shuffle=True, rng_seed=IS_SEED)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


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


def _half_psd(m: torch.Tensor) -> torch.Tensor:
    """``B`` (D, r) with ``B @ B.T == m`` for a symmetric PSD ``m`` of numerical rank r, float64.

    LAPACK's pivoted Cholesky (``dpstrf``, stable for semi-definite matrices):
    it stops once the remaining pivots are below ``D * eps * max(diag)``,
    rounding noise of a rank-deficient matrix, so its cost is ``D^2 r``.
    """
    sym = ((m + m.T) / 2).double().cpu().numpy()
    factor, pivots, rank, info = lapack.dpstrf(sym, lower=1)
    if info < 0:
        raise ValueError(f"dpstrf: argument {-info} is invalid")
    lower = np.tril(factor)[:, :rank]
    half = np.empty_like(lower)
    half[pivots - 1] = lower  # m = P L L^T P^T with P[pivots[k] - 1, k] = 1
    return torch.from_numpy(half)


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Fréchet distance between Gaussians ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``|mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^{1/2})``, in
    float64. With ``cov1 = B B^T`` (:func:`_half_psd`), the nonzero eigenvalues
    of ``cov1 cov2`` are those of the symmetric PSD ``B^T cov2 B`` (r x r, r the
    rank of ``cov1``): stable for the rank-deficient covariances of small sets,
    where ``scipy.linalg.sqrtm(cov1 @ cov2)`` can return complex noise, and
    fast for them (the factor costs ``D^2 r``).
    """
    mu1, mu2 = mu1.double(), mu2.double()
    cov1, cov2 = cov1.double(), cov2.double()
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(
            f"mismatched statistics: means {tuple(mu1.shape)} / {tuple(mu2.shape)}, "
            f"covariances {tuple(cov1.shape)} / {tuple(cov2.shape)}"
        )
    half = _half_psd(cov1).to(cov2.device)
    inner = half.T @ cov2 @ half
    tr_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum() if inner.numel() else 0.0
    diff = mu1 - mu2
    value = diff.dot(diff) + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt
    return float(value.clamp_min(0))
