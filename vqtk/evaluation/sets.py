"""Evaluation image sets: which images of a set are evaluated, their batches, and any folder as a set.

``vqtk eval --data-path DIR`` and ``vqtk fid-stats DIR`` read a folder through
the same registered :class:`~vqtk.interfaces.FolderDataSource` (built-in
``image_folder``: shorter side resized, centre crop), so the reference
statistics of a folder are computed from exactly the images an evaluation of
that folder sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from vqtk.build import build_component
from vqtk.errors import VqtkError
from vqtk.interfaces import DataSource, FolderDataSource
from vqtk.measure import split_batch
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import DataRef
from vqtk.registry import default_registry


def pick_indices(total: int, max_images: Optional[int]) -> list[int]:
    """All of ``range(total)``, or ``max_images`` of them spread evenly over the set (deterministic)."""
    if max_images is None or max_images >= total:
        return list(range(total))
    if max_images == 1:
        return [0]
    return torch.linspace(0, total - 1, max_images).round().long().tolist()


def collate_images(items: list) -> torch.Tensor:
    """The images of a list of data items (tensors, ``(image, label)`` tuples or lists); labels dropped."""
    return torch.stack([split_batch(item)[0] for item in items])


def image_loader(dataset: Dataset, picks: list[int], *, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Batches ``(B, C, H, W)`` in ``[-1, 1]`` of ``dataset[i] for i in picks``, in order, labels dropped."""
    return DataLoader(Subset(dataset, picks), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, collate_fn=collate_images)


def image_batches(dataset: Dataset, *, batch_size: int, max_images: Optional[int] = None,
                  num_workers: int = 0) -> Iterator[torch.Tensor]:
    """The batches :func:`vqtk.evaluation.loop.evaluate` sees: ``max_images`` picked by :func:`pick_indices`."""
    yield from image_loader(dataset, pick_indices(len(dataset), max_images),
                            batch_size=batch_size, num_workers=num_workers)


def folder_source(registry: Any) -> str:
    """The registered data source that reads any folder (a :class:`FolderDataSource`), by name."""
    found = [s.name for s in registry.components("data")
             if s.component_class is not None and issubclass(s.component_class, FolderDataSource)]
    if not found:
        raise VqtkError("--data-path: no installed data source reads a folder "
                        "(a vqtk.interfaces.FolderDataSource); use --data to set the recipe's [data] instead")
    if len(found) > 1:
        raise VqtkError(f"--data-path: several installed data sources read folders ({', '.join(found)}); "
                        "choose one with --data type=NAME path=DIR")
    return found[0]


def folder_table(folder: str | Path, resolution: int, registry: Any) -> dict[str, Any]:
    """The ``[data]`` table that evaluates every image under ``folder`` at ``resolution`` (centre crops)."""
    path = str(Path(folder).expanduser())
    return {"type": folder_source(registry), "path": path, "eval_path": path, "resolution": resolution}


def folder_data(folder: str | Path, resolution: int, registry: Any = None) -> DataSource:
    """The data source of :func:`folder_table`, built; its ``eval_set()`` is every image of ``folder``."""
    registry = registry or default_registry()
    ref = RecipeConverter(registry).structure(folder_table(folder, resolution, registry), DataRef)
    return build_component(ref, "data", registry)
