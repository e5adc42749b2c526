"""Samples written as they are made: one uint8 ``.npz`` per batch and a manifest, so long runs resume.

A sample folder (``<report stem>_samples/`` next to a ``vqtk eval`` report of a
prior) holds ``manifest.json`` and ``batch_NNNNNN.npz`` files. Batch ``k``
holds samples ``k*B .. k*B + B - 1`` (``B`` the batch size) as ``images``
``(B, H, W, 3)`` uint8 (the FID quantisation of :func:`vqtk.evaluation.fid.to_uint8`,
so features of the stored images equal those of the decoded ones) and
``labels`` ``(B,)`` int64 (``-1`` for an unconditional prior). Its random
generator is seeded by :func:`batch_seed` ``(seed, k)`` alone, so a batch is the same
image whether it was made in one run or after an interruption, and a larger
``--num-samples`` extends a folder (every batch is made whole; a run uses the first
``num_samples`` samples).

The manifest (``vqtk-samples-1``) records the settings every batch shares
(:attr:`SampleStore.settings`: checkpoint weights, seed, batch size, sampling
options, image size) and per batch its file, seed, count and seconds. A batch
file is written atomically before the manifest names it: a kill at any moment
loses at most the batch being made. Opening a folder made with other settings is
a one-line error per differing setting, naming its option.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from vqtk.errors import VqtkError
from vqtk.evaluation.fid import to_uint8
from vqtk.io.files import write_atomic

log = logging.getLogger("vqtk")

FORMAT = "vqtk-samples-1"
MANIFEST = "manifest.json"

#: the option that sets each recorded setting (named in mismatch errors)
OPTION_OF = {
    "checkpoint_sha256": "CKPT", "seed": "--seed", "batch_size": "--batch-size", "temperature": "--temperature",
    "top_k": "--top-k", "top_p": "--top-p", "cfg_scale": "--cfg-scale", "steps": "--steps",
    "grid_size": "CKPT", "num_classes": "CKPT", "labels": "CKPT",
}


def batch_seed(seed: int, index: int) -> int:
    """The generator seed of batch ``index``: ``numpy.random.SeedSequence([seed mod 2**64, index])``'s
    first 63 bits (independent streams per batch, a pure function of the two numbers)."""
    words = np.random.SeedSequence([seed % 2**64, index]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def batch_file(index: int) -> str:
    return f"batch_{index:06d}.npz"


class SampleStore:
    """The sample folder ``folder`` for samples made with ``settings`` (a JSON-able dict, see the module doc)."""

    def __init__(self, folder: str | Path, settings: dict[str, Any]):
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))  # as read back from the manifest (tuples -> lists)
        self.batch_size = int(settings["batch_size"])
        self.batches: dict[int, dict[str, Any]] = {}

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def open(self, *, fresh: bool = False) -> "SampleStore":
        """Read the folder's manifest (unless ``fresh``, which removes its batches first).

        Batches the manifest lists but whose file is gone are made again. A folder
        made with other settings is refused, unless it holds no finished batch.
        """
        if fresh:
            self.clear()
        if not self.manifest_path.exists():
            return self
        try:
            manifest = json.loads(self.manifest_path.read_text())
            found, batches = manifest["settings"], manifest["batches"]
            if manifest.get("format") != FORMAT or not isinstance(found, dict) or not isinstance(batches, list):
                raise ValueError("not a manifest")
        except (OSError, ValueError, KeyError, TypeError):
            raise VqtkError(f"{self.manifest_path}: not a {FORMAT} sample manifest; --fresh starts over "
                            "(removing this folder's batch files)") from None
        if not batches:
            return self
        differ = [key for key in sorted(set(found) | set(self.settings)) if found.get(key) != self.settings.get(key)]
        if differ:
            raise VqtkError("\n".join(
                f"{OPTION_OF.get(key, key)}: the samples in {self.folder} were made with {key} "
                f"{json.dumps(found.get(key))}, not {json.dumps(self.settings.get(key))}; rerun with the same "
                "settings to continue them, add --fresh to start over there, or choose another --out"
                for key in differ))
        for entry in batches:
            if (self.folder / entry["file"]).is_file():
                self.batches[int(entry["index"])] = entry
        return self

    def clear(self) -> None:
        """Remove the manifest, every batch file and the samples' Inception statistics (nothing else)."""
        for path in [self.manifest_path, *self.folder.glob("batch_*.npz"), *self.folder.glob("inception_*.npz")]:
            path.unlink(missing_ok=True)
        self.batches = {}

    def batches_for(self, num_samples: int) -> int:
        return -(-num_samples // self.batch_size)

    def missing(self, num_samples: int) -> list[int]:
        """Batch indices still to make for ``num_samples`` samples, in order."""
        return [k for k in range(self.batches_for(num_samples)) if k not in self.batches]

    def done(self, num_samples: int) -> int:
        """How many of the first ``num_samples`` samples are on disk."""
        return sum(min(self.batch_size, num_samples - k * self.batch_size)
                   for k in range(self.batches_for(num_samples)) if k in self.batches)

    def write(self, index: int, images: torch.Tensor, labels: Optional[torch.Tensor], *, seed: int,
              seconds: dict[str, float]) -> None:
        """Store batch ``index`` (images ``(B, C, H, W)`` in ``[-1, 1]``), then the manifest naming it.

        ``seconds`` (time spent making it, by phase) is recorded with the time writing it took as ``write``.
        """
        pixels = to_uint8(images.detach().cpu())
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        array = pixels.permute(0, 2, 3, 1).contiguous().numpy()
        label_array = (labels.cpu().numpy() if labels is not None else np.full(array.shape[0], -1)).astype(np.int64)
        name = batch_file(index)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, images=array, labels=label_array)

        start = time.perf_counter()
        write_atomic(self.folder / name, save)
        seconds = {**seconds, "write": time.perf_counter() - start}
        self.batches[index] = {"index": index, "file": name, "seed": seed, "count": int(array.shape[0]),
                               "seconds": {k: round(v, 6) for k, v in seconds.items()}}
        manifest = {"format": FORMAT, "settings": self.settings,
                    "batches": [self.batches[k] for k in sorted(self.batches)]}
        write_atomic(self.manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n"))

    def read(self, num_samples: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` of the first ``num_samples`` samples, batch by batch: images
        ``(B, 3, H, W)`` float32 in ``[-1, 1]`` (exactly the stored uint8 levels), labels ``(B,)``."""
        left = num_samples
        for k in range(self.batches_for(num_samples)):
            path = self.folder / batch_file(k)
            try:
                with np.load(path, allow_pickle=False) as data:
                    images, labels = data["images"], data["labels"]
            except Exception as exc:  # noqa: BLE001 - truncated or foreign file: the user's to remove
                raise VqtkError(f"{path}: unreadable sample batch ({type(exc).__name__}); --fresh starts over") \
                    from None
            take = min(left, images.shape[0])
            x = torch.from_numpy(images[:take]).permute(0, 3, 1, 2).float() / 127.5 - 1
            yield x, torch.from_numpy(labels[:take])
            left -= take

    def labels(self, num_samples: int) -> torch.Tensor:
        """The labels of the first ``num_samples`` samples (``-1``: unconditional), without reading images."""
        out = []
        for k in range(self.batches_for(num_samples)):
            with np.load(self.folder / batch_file(k), allow_pickle=False) as data:
                out.append(torch.from_numpy(data["labels"]))
        return torch.cat(out)[:num_samples]

    def seconds(self, num_samples: int) -> tuple[int, dict[str, float]]:
        """Samples made (whole batches) for the first ``num_samples`` and the seconds spent, summed by phase."""
        made, total = 0, {}
        for k in range(self.batches_for(num_samples)):
            made += self.batches[k]["count"]
            for phase, s in self.batches[k]["seconds"].items():
                total[phase] = total.get(phase, 0.0) + s
        return made, total
