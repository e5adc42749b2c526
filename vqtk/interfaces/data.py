"""Data sources: where training and evaluation images come from."""

from __future__ import annotations

import abc
from typing import ClassVar

from torch.utils.data import Dataset


class DataSource(abc.ABC):
    """Provides image datasets chosen by recipe, like every other component.

    Each dataset item is either a float tensor ``(C, H, W)`` in ``[-1, 1]`` with
    ``H == W == resolution``, or a pair ``(image, label)`` (tuple or list) with an
    ``int`` label for class-conditional data (then :attr:`num_classes` > 0);
    :func:`vqtk.measure.split_batch` takes either apart.
    """

    #: arguments the assembler fills in from other parts of the recipe
    provided_arguments: ClassVar[tuple[str, ...]] = ()
    #: arguments every data source's recipe table has (the registry refuses one without them):
    #: tools read ``[data] resolution`` without building the source (whose files may be elsewhere)
    required_arguments: ClassVar[tuple[str, ...]] = ("resolution",)

    resolution: int
    channels: int = 3
    num_classes: int = 0

    @abc.abstractmethod
    def train_set(self) -> Dataset:
        """Images to train on (random crops / flips as configured)."""

    @abc.abstractmethod
    def eval_set(self) -> Dataset:
        """Held-out images, deterministic (no random augmentation)."""

    def skipped_files(self) -> int:
        """How many unreadable files the source has skipped so far, in this process (default 0).

        Sources that skip bad files instead of failing override this;
        ``vqtk eval`` reports a non-zero count as ``skipped_unreadable``.
        """
        return 0

    def describe(self) -> str:
        """One line for logs, e.g. ``"image folder /data/x: 1200 train, 50 eval"``."""
        return type(self).__name__


class FolderDataSource(DataSource):
    """A data source over a folder of image files, which tools can point at any folder.

    Its recipe table takes ``path`` (training images), ``eval_path`` (held-out
    images; the same folder evaluates every image in it) and ``resolution``:
    ``vqtk eval --data-path DIR`` builds the registered folder source for ``DIR``.
    """

    required_arguments: ClassVar[tuple[str, ...]] = ("resolution", "path", "eval_path")
