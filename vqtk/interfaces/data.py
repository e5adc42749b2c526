"""Data sources: where training and evaluation images come from."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Iterator

from torch.utils.data import Dataset, IterableDataset, get_worker_info


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
        """Images to train on (random crops / flips as configured).

        Either a map-style dataset (``len`` and indexing: the trainer draws each
        epoch's order itself) or a :class:`StreamingDataset` (read front to back
        in streams, such as tar shards: the dataset orders each epoch).
        """

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


class ShardDataSource(DataSource):
    """A data source over WebDataset tar shards, the layout ``vqtk shards`` writes.

    Its recipe table takes ``shards`` (patterns naming the training shards),
    ``sizes`` (their ``sizes.json``), ``class_labels``, ``num_classes`` and
    ``resolution``: ``vqtk shards`` prints such a table for the registered one.
    """

    required_arguments: ClassVar[tuple[str, ...]] = ("resolution", "shards", "sizes", "class_labels", "num_classes")


class StreamingDataset(IterableDataset, abc.ABC):
    """A training set read front to back in streams (tar shards, record files), not by index.

    A data source whose :meth:`DataSource.train_set` returns one declares that the
    trainer's batch stream must not index it. Every epoch the stream splits it
    into ``num_streams`` = processes x :attr:`streams_per_process` streams of
    disjoint data; each process reads its own streams (sharing them among its
    data-loader workers) and interleaves them batch by batch.

    Contract, for exact resumption: for a given ``(seed, epoch, num_streams)``
    the streams' contents and order are fixed (the same on every process and
    machine), and :meth:`stream` started at ``start`` yields exactly the items an
    uninterrupted stream yields from position ``start`` on. The random
    augmentation of an item is drawn from torch's global RNG while it is
    produced (the caller seeds it per item). An unreadable item is replaced
    (e.g. by the next readable one), never dropped, so a stream always yields
    the length :meth:`stream_lengths` announced.
    """

    #: streams each training process reads at once; a worker count that divides it keeps the order
    streams_per_process: int = 1

    @abc.abstractmethod
    def stream_lengths(self, *, seed: int, epoch: int, num_streams: int) -> list[int]:
        """Items each of the ``num_streams`` streams of this epoch holds (cheap: no decoding).

        Raise :class:`vqtk.VqtkError` when the data cannot be split that many
        ways (e.g. fewer shards than streams).
        """

    @abc.abstractmethod
    def stream(self, *, seed: int, epoch: int, index: int, num_streams: int, start: int = 0) -> Iterator[Any]:
        """Items of stream ``index`` (of ``num_streams``) of this epoch, from position ``start`` on.

        Items skipped by ``start`` should cost as little as the format allows
        (not decoded). Items follow the :class:`DataSource` item contract.
        """

    def __iter__(self) -> Iterator[Any]:
        """Epoch 0 with seed 0, split among data-loader workers: for direct use outside the trainer."""
        info = get_worker_info()
        index, count = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.stream(seed=0, epoch=0, index=index, num_streams=count)
