"""FID statistics of image sets: computed from batches, saved as ``.npz``, compared.

One code path for every FID vqtk reports: ``vqtk eval`` (rFID: reconstructions
against the evaluated images or a reference file), ``vqtk fid-stats`` (the
reference of a folder, computed once) and, for priors, samples against a
reference (gFID). Each takes an iterator of image batches ``(B, C, H, W)`` in
``[-1, 1]``::

    inception = load_fid_inception()                 # vqtk.evaluation.fid
    ref = FidStatistics.load("imagenet_val_256.npz", inception)
    fid = ref.fid(compute_statistics(batches, inception))

A statistics file (``vqtk-fid-stats-1``) is an ``.npz`` read without
unpickling: ``mu`` (2048,) and ``sigma`` (2048, 2048) float64, ``count``
(images), and ``meta``, a JSON string naming the extractor, its weights'
SHA-256, the protocol (:data:`vqtk.evaluation.fid.PROTOCOL`), the images'
source and resolution. A file made with another extractor, other weights or
another protocol is refused: its numbers would not be comparable.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import attrs
import numpy as np
import torch

from vqtk.errors import VqtkError
from vqtk.evaluation.fid import (
    FEATURE_DIM,
    PROTOCOL,
    FeatureStatistics,
    FidInception,
    frechet_distance,
)
from vqtk.evaluation.sets import folder_data, image_batches
from vqtk.io.files import file_sha256
from vqtk.version import __version__

FORMAT = "vqtk-fid-stats-1"
log = logging.getLogger("vqtk")


@attrs.define(eq=False)
class FidStatistics:
    """Mean ``mu`` (D,) and unbiased covariance ``sigma`` (D, D) of ``count`` images' features, float64.

    ``meta`` records how they were made (see the module doc); ``path`` and
    ``sha256`` are set for statistics read from a file.
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    count: int
    meta: dict[str, Any] = attrs.field(factory=dict)
    path: Optional[Path] = None
    sha256: Optional[str] = None

    def fid(self, other: "FidStatistics") -> float:
        """Fréchet distance between these statistics and ``other``'s."""
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)

    def save(self, path: str | Path) -> Path:
        """Write the ``.npz`` atomically (a temporary file moved into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        meta = {"format": FORMAT, **self.meta, "images": self.count}
        with open(tmp, "wb") as f:
            np.savez(f, mu=self.mu.double().numpy(), sigma=self.sigma.double().numpy(),
                     count=np.int64(self.count), meta=np.array(json.dumps(meta, sort_keys=True)))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, inception: Optional[FidInception] = None, *,
             where: str = "--ref-stats") -> "FidStatistics":
        """Read a statistics file and check it was made by vqtk's extractor and protocol.

        With ``inception`` the weights must be the same file too (by SHA-256).
        Any problem is a one-line :class:`VqtkError` starting with ``where``.
        """
        path = Path(path).expanduser()
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # noqa: BLE001 - not an npz, truncated, pickled objects...
            raise VqtkError(f"{where}: {path} is not a FID statistics .npz ({type(exc).__name__})") from None
        missing = [k for k in ("mu", "sigma", "count", "meta") if k not in arrays]
        if "meta" in missing:
            raise VqtkError(f"{where}: {path} has no vqtk metadata (made by another tool?); its extractor and "
                            "protocol cannot be checked: compute the statistics with `vqtk fid-stats`")
        try:
            meta = json.loads(str(arrays["meta"]))
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise VqtkError(f"{where}: {path} is not a {FORMAT} file")
        if meta.get("protocol") != PROTOCOL:
            raise VqtkError(f"{where}: {path} was made with another FID protocol ({meta.get('protocol')!r}, by "
                            f"{meta.get('implementation', 'an unknown extractor')}); vqtk's is {PROTOCOL!r}: "
                            "recompute it with `vqtk fid-stats`")
        if missing:
            raise VqtkError(f"{where}: {path} lacks {', '.join(missing)}")
        mu, sigma, count = arrays["mu"], arrays["sigma"], int(arrays["count"])
        if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM) or count < 2:
            raise VqtkError(f"{where}: {path} holds mu {mu.shape}, sigma {sigma.shape} of {count} images; "
                            f"expected ({FEATURE_DIM},), ({FEATURE_DIM}, {FEATURE_DIM}) of 2 or more")
        stats = cls(mu=torch.from_numpy(mu).double(), sigma=torch.from_numpy(sigma).double(), count=count,
                    meta=meta, path=path.resolve(), sha256=file_sha256(path))
        if inception is not None:
            stats.check_weights(inception, where=where)
        return stats

    def check_weights(self, inception: FidInception, *, where: str = "--ref-stats") -> None:
        """Refuse statistics made with other Inception weights than ``inception``'s (one-line error)."""
        made_with = self.meta.get("weights_sha256")
        if made_with != inception.sha256:
            raise VqtkError(f"{where}: {self.path} was made with other Inception weights (SHA-256 "
                            f"{str(made_with)[:12]}..., {self.meta.get('weights')}) than {inception.weights_path} "
                            f"({inception.sha256[:12]}...): recompute it with `vqtk fid-stats`")

    def reference_entry(self) -> dict[str, Any]:
        """How a report names these statistics as its FID reference."""
        if self.path is None:
            return {"source": "the evaluated images", "images": self.count}
        return {"source": "statistics file", "path": str(self.path), "sha256": self.sha256, "images": self.count,
                "resolution": self.meta.get("resolution"), "data": self.meta.get("data"),
                "created": self.meta.get("created")}


class FidAccumulator:
    """Adds image batches in ``[-1, 1]`` to running feature statistics; :meth:`result` gives :class:`FidStatistics`."""

    def __init__(self, inception: FidInception, device: torch.device | str = "cpu"):
        self.inception = inception
        self.stats = FeatureStatistics(FEATURE_DIM, device)

    @property
    def count(self) -> int:
        return self.stats.n

    def add(self, images: torch.Tensor) -> None:
        self.stats.add(self.inception(images))

    def result(self, **meta: Any) -> FidStatistics:
        """The statistics so far (at least 2 images), with the extractor's description and ``meta``."""
        mu, sigma = self.stats.mean_cov()
        return FidStatistics(mu=mu, sigma=sigma, count=self.stats.n, meta={
            **self.inception.describe(), "vqtk": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **meta})


def compute_statistics(batches: Iterable[torch.Tensor], inception: FidInception, *,
                       device: torch.device | str | None = None, **meta: Any) -> FidStatistics:
    """FID statistics of every image in ``batches`` (tensors ``(B, C, H, W)`` in ``[-1, 1]``).

    ``device`` defaults to the extractor's; ``meta`` (``resolution``, ``data``...) goes into the file's metadata.
    Raises :class:`VqtkError` for fewer than 2 images.
    """
    device = device or next(inception.parameters()).device
    acc = FidAccumulator(inception, device)
    for i, batch in enumerate(batches, 1):
        acc.add(batch.to(device, torch.float32))
        if i % 100 == 0:
            log.info("fid: %d images", acc.count)
    if acc.count < 2:
        raise VqtkError(f"FID statistics need at least 2 images, got {acc.count}")
    return acc.result(**meta)


def folder_statistics(folder: str | Path, inception: FidInception, *, resolution: int, batch_size: int = 50,
                      max_images: Optional[int] = None, num_workers: int = 0, registry: Any = None) -> FidStatistics:
    """Statistics of the images under ``folder`` as ``vqtk eval --data-path folder`` at ``resolution`` sees them.

    The registered folder data source decodes them (built-in ``image_folder``:
    shorter side resized to ``resolution``, centre crop); ``max_images`` picks
    the same images ``vqtk eval --max-images`` would.
    """
    source = folder_data(folder, resolution, registry)
    dataset = source.eval_set()
    if len(dataset) == 0:
        raise VqtkError(f"{folder}: no images to compute statistics of")
    log.info("fid: %s", source.describe())
    batches = image_batches(dataset, batch_size=batch_size, max_images=max_images, num_workers=num_workers)
    stats = compute_statistics(batches, inception, resolution=resolution, data=source.describe(),
                               folder=str(Path(folder).expanduser().resolve()))
    skipped = int(source.skipped_files())
    if skipped:
        stats.meta["skipped_unreadable"] = skipped
    return stats
