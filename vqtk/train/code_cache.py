"""Encoding a dataset into code indices once, and reusing the result.

The cache file is keyed by the tokenizer checkpoint's bytes and the data
settings, and lives beside the tokenizer's run (``<run>/codes/<key>.safetensors``),
so any stage-2 run on the same tokenizer and data reuses it. It holds whatever
``encode_to_indices`` returns, in the quantizer's token layout (``(N, h, w)``,
``(N, h, w, Q)`` or multi-scale ``(N, L)``), checked against that layout when
written (shape) and when read (layout).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from vqtk.errors import VqtkError
from vqtk.measure import split_batch
from vqtk.model import VQGAN
from vqtk.train.data_stream import _SeededItems

log = logging.getLogger("vqtk")


def cache_dir_for(tokenizer_folder: Path) -> Path:
    """``<run>/codes`` for a checkpoint in ``<run>/checkpoints/step_N``, else ``<folder>/codes``."""
    if tokenizer_folder.parent.name == "checkpoints":
        return tokenizer_folder.parent.parent / "codes"
    return tokenizer_folder / "codes"


def cache_key(tokenizer_digest: str, data_toml: str, passes: int, seed: int) -> str:
    h = hashlib.sha256()
    for part in (tokenizer_digest, data_toml, str(passes), str(seed)):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()[:20]


@torch.no_grad()
def encode_dataset(model: VQGAN, dataset, *, batch_size: int, passes: int, seed: int,
                   device: torch.device, show_progress: bool = True):
    """Indices in the quantizer's layout (int64; ``(N, h, w[, Q])`` or ``(N, L)``) and labels ``(N,)`` or
    ``None`` for ``passes`` sweeps."""
    items = _SeededItems(dataset, seed)
    n = len(dataset)
    codes, labels = [], []
    model.eval()
    total = passes * n
    done = 0
    for p in range(passes):
        for start in range(0, n, batch_size):
            pairs = [split_batch(items[(p, i, i)]) for i in range(start, min(n, start + batch_size))]
            if pairs[0][1] is not None:
                labels.extend(int(label) for _, label in pairs)
            x = torch.stack([image for image, _ in pairs]).to(device)
            idx = model.encode_to_indices(x)
            want = _index_shape(model, x.shape[0], x.shape[-2:])
            if tuple(idx.shape) != want:
                raise VqtkError(f"model.quantizer: encode_to_indices returned shape {tuple(idx.shape)} for "
                                f"{model.quantizer.layout.describe()}, expected {want}")
            codes.append(idx.cpu())
            done += len(pairs)
            if show_progress and (start // batch_size) % 20 == 0:
                log.info("encoding training set: %d/%d images", done, total)
    return torch.cat(codes), (torch.tensor(labels) if labels else None)


def load_or_encode(model: VQGAN, dataset, *, cache_dir: Path, key: str, batch_size: int, passes: int,
                   seed: int, device: torch.device) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    path = cache_dir / f"{key}.safetensors"
    if path.is_file():
        try:
            data = load_file(str(path))
            model.quantizer.layout.check_indices(data["codes"])
            log.info("code cache: reusing %s (%d images)", path, data["codes"].shape[0])
            return data["codes"], data.get("labels")
        except Exception as exc:  # a broken cache is rebuilt, never trusted
            log.warning("code cache %s unreadable (%s); encoding again", path, exc)
    codes, labels = encode_dataset(model, dataset, batch_size=batch_size, passes=passes, seed=seed, device=device)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tensors = {"codes": codes.contiguous()}
    if labels is not None:
        tensors["labels"] = labels
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    log.info("code cache: wrote %s (%d images of %s indices)", path, codes.shape[0], tuple(codes.shape[1:]))
    return codes, labels


def _index_shape(model: VQGAN, batch: int, size) -> tuple[int, ...]:
    """The index shape of ``batch`` images of ``size = (H, W)`` pixels in the tokenizer's layout."""
    return model.quantizer.layout.index_shape(batch, model.latent_grid(int(size[0]), int(size[1])))
