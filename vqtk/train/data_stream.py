"""An endless, resumable stream of training batches.

Each epoch visits the dataset in an order drawn from ``(seed, epoch)``, and
every item's random augmentation is drawn from a generator seeded by
``(seed, epoch, position)``. The stream's whole state is therefore two
integers, so a resumed run sees exactly the batches an uninterrupted run would,
whatever the number of data-loader workers.
"""

from __future__ import annotations

from typing import Iterator

import attrs
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from vqtk.errors import VqtkError


def _item_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + position * 104_729 + 0x5DEECE66D) % (2**63 - 1)


@attrs.frozen
class _ItemError:
    """A user-fixable data error (e.g. every image unreadable), carried out of a loader worker.

    Raised inside a worker, a :class:`VqtkError` would come back with the
    worker's whole traceback pasted into its message; this keeps it one line.
    """

    message: str


class _SeededItems(Dataset):
    """Calls the wrapped dataset under a torch RNG seeded for each (epoch, position)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]):
        epoch, position, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_item_seed(self.seed, epoch, position))
            try:
                return self.dataset[index]
            except VqtkError as exc:
                return _ItemError(str(exc))


def _collate(items: list):
    for item in items:
        if isinstance(item, _ItemError):
            return item
    return default_collate(items)


@attrs.define
class StreamState:
    epoch: int = 0
    position: int = 0  # items of this epoch already consumed


class BatchStream:
    """Yields batches forever; :attr:`state` says where it stands, for checkpoints."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        state: StreamState | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.size = len(dataset)  # type: ignore[arg-type]
        if self.size < batch_size * world_size:
            raise VqtkError(
                f"data: {self.size} training images is fewer than one batch "
                f"(train.batch_size = {batch_size}, x {world_size} processes)"
            )
        self.items = _SeededItems(dataset, seed)
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.rank = rank
        self.world_size = world_size
        self.state = state or StreamState()

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 10_007 + epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator:
        global_batch = self.batch_size * self.world_size
        while True:
            epoch = self.state.epoch
            order = self._order(epoch)
            usable = (self.size // global_batch) * global_batch
            start = self.state.position
            keys = []
            for pos in range(start, usable):
                # each rank takes its slice of every global batch
                if (pos % global_batch) // self.batch_size == self.rank:
                    keys.append((epoch, pos, order[pos]))
            loader = DataLoader(
                self.items,
                batch_size=self.batch_size,
                sampler=keys,
                num_workers=self.num_workers,
                drop_last=True,
                persistent_workers=False,
                # the loader draws a base seed when iterated; from its own generator, so that
                # re-creating it on resume leaves the global RNG (dropout, code restarts) untouched
                generator=torch.Generator().manual_seed(self.seed * 31 + epoch),
                collate_fn=_collate,
            )
            for batch in loader:
                if isinstance(batch, _ItemError):
                    raise VqtkError(batch.message)
                self.state.position += global_batch
                yield batch
            self.state = StreamState(epoch=epoch + 1, position=0)
