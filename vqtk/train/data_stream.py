"""An endless, resumable stream of training batches; its whole state is ``(epoch, position)``.

Map-style datasets: each epoch visits the dataset in an order drawn from ``(seed, epoch)``; a
resumed run sees exactly the batches an uninterrupted run would, whatever the number of workers.

Streaming datasets (:class:`~vqtk.interfaces.data.StreamingDataset`, e.g. tar shards) order each
epoch themselves, split into ``processes x streams_per_process`` streams of disjoint data, each cut
to the same whole number of batches; process ``r`` takes its batch ``i`` from its stream
``i % streams_per_process`` and its loader workers share its streams. A resumed run asks each
stream to start where it stopped: the same batches as an uninterrupted run while the number of
processes, the batch size and the data settings are unchanged (the number of workers may change).

Every item's random augmentation is drawn from a generator seeded by ``(seed, epoch, position)``.
Loader workers default to :func:`auto_workers`; batches are pinned when CUDA is available, and
what workers log (skipped files) is re-emitted by the main process with the batch it concerns.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from typing import Any, Iterator, NamedTuple, Optional

import attrs
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate, get_worker_info

from vqtk.errors import VqtkError
from vqtk.interfaces.data import StreamingDataset

log = logging.getLogger("vqtk")

#: most loader workers "auto" picks per process
MAX_AUTO_WORKERS = 4


def _item_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + position * 104_729 + 0x5DEECE66D) % (2**63 - 1)


def auto_workers(world_size: int = 1) -> int:
    """With an accelerator, ``min(4, CPUs usable / processes on this machine - 1)`` (torchrun's
    ``LOCAL_WORLD_SIZE``, else all ``world_size`` are taken as local), one CPU per process left to the
    training loop; 0 without one: on CPU the cores are the model's, a loader process would take them."""
    mps = getattr(torch.backends, "mps", None)
    if not (torch.cuda.is_available() or (mps is not None and mps.is_available())):
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size) or 1)
    return max(0, min(MAX_AUTO_WORKERS, cpus // max(1, local) - 1))


@attrs.frozen
class _ItemError:
    """A user-fixable data error carried out of a loader worker (a raised :class:`VqtkError` would
    come back with the worker's traceback pasted into its message)."""

    message: str


class _Shipment(NamedTuple):  # a collated batch (or an _ItemError) and the log records made with it
    batch: Any
    records: list


class _WorkerLog(logging.handlers.QueueHandler):  # a worker's vqtk log records, until shipped with a batch
    def __init__(self) -> None:
        super().__init__(queue=None)  # type: ignore[arg-type]
        self.records: list[logging.LogRecord] = []

    def enqueue(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_WORKER_LOG: Optional[_WorkerLog] = None


def _worker_init(_worker_id: int) -> None:
    """In a loader worker: keep ``vqtk`` log records for the main process instead of writing them."""
    global _WORKER_LOG
    _WORKER_LOG = _WorkerLog()
    logger = logging.getLogger("vqtk")
    logger.handlers = [_WORKER_LOG]
    logger.propagate = False


def _collate(items: list) -> _Shipment:
    records: list = []
    if _WORKER_LOG is not None:
        records, _WORKER_LOG.records = _WORKER_LOG.records, []
    for item in items:
        if isinstance(item, _ItemError):
            return _Shipment(item, records)
    return _Shipment(default_collate(items), records)


def _unpack(shipment: _Shipment, seen: set):
    """The batch, after the worker's log records not in ``seen`` are handled here (each epoch's workers
    start afresh: they would warn again about files skipped before); a data error is raised."""
    for record in shipment.records:
        if (record.name, record.levelno, record.msg) not in seen:
            seen.add((record.name, record.levelno, record.msg))
            logging.getLogger(record.name).handle(record)
    if isinstance(shipment.batch, _ItemError):
        raise VqtkError(shipment.batch.message)
    return shipment.batch


class _SeededItems(Dataset):
    """Calls the wrapped dataset under a torch RNG seeded for each (epoch, position)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

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


@attrs.frozen
class _EpochPlan:
    """One epoch of a streaming dataset as one process reads it."""

    seed: int
    epoch: int
    rank: int
    world_size: int
    streams: int  # per process
    batches: int  # per stream (every stream is cut to this many)
    batch_size: int
    done: int  # batches this process already took this epoch

    def consumed(self, local: int) -> int:
        """Batches of local stream ``local`` among the first :attr:`done` batches of this process."""
        return max(0, -(-(self.done - local) // self.streams))


class _StreamItems(IterableDataset):
    """The items of one process's remaining epoch, in batch order, for one loader worker.

    Worker ``w`` of ``K`` (``K`` divides the streams per process) produces the
    process's batches ``i`` with ``i % K == (w + done) % K``: the loader's
    round-robin over workers then returns them in order, starting at batch ``done``.
    """

    def __init__(self, dataset: StreamingDataset, plan: _EpochPlan):
        self.dataset, self.plan = dataset, plan

    def __iter__(self) -> Iterator:
        p = self.plan
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        k = ((info.id if info is not None else 0) + p.done) % workers
        first = p.done + (k - p.done) % workers
        open_streams: dict[int, Iterator] = {}
        try:
            for i in range(first, p.streams * p.batches, workers):
                local = i % p.streams
                if local not in open_streams:
                    open_streams[local] = self.dataset.stream(
                        seed=p.seed, epoch=p.epoch, index=p.rank * p.streams + local,
                        num_streams=p.world_size * p.streams, start=p.consumed(local) * p.batch_size)
                source = open_streams[local]
                for q in range(p.batch_size):
                    position = (i * p.world_size + p.rank) * p.batch_size + q
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(_item_seed(p.seed, p.epoch, position))
                        item = next(source, None)
                    if item is None:
                        raise RuntimeError(f"stream {p.rank * p.streams + local} of epoch {p.epoch} ended before "
                                           f"the length its dataset announced")
                    yield item
        except VqtkError as exc:
            yield _ItemError(str(exc))


@attrs.define
class StreamState:
    epoch: int = 0
    position: int = 0  # items of this epoch already consumed (by all processes)


class BatchStream:
    """Yields batches forever; :attr:`state` says where it stands, for checkpoints. ``num_workers=None``
    picks :func:`auto_workers`; ``pin_memory=None`` pins when CUDA is available (copies are non-blocking)."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        num_workers: Optional[int] = 0,
        state: StreamState | None = None,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: Optional[bool] = None,
    ):
        self.streaming = isinstance(dataset, StreamingDataset)
        if not self.streaming:
            self.size = len(dataset)  # type: ignore[arg-type]
            if self.size < batch_size * world_size:
                raise VqtkError(
                    f"data: {self.size} training images is fewer than one batch "
                    f"(train.batch_size = {batch_size}, x {world_size} processes)"
                )
            self.items: Dataset = _SeededItems(dataset, seed)
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_workers = auto_workers(world_size) if num_workers is None else num_workers
        self.rank, self.world_size = rank, world_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.state = state or StreamState()
        self._warned_waste = self._told_workers = False
        self._worker_records: set = set()

    def _loader(self, dataset: Dataset, epoch: int, workers: int, **kwargs) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, num_workers=workers, persistent_workers=False,
            pin_memory=self.pin_memory, worker_init_fn=_worker_init if workers else None,
            # the loader draws a base seed when iterated; from its own generator, so that
            # re-creating it on resume leaves the global RNG (dropout, code restarts) untouched
            generator=torch.Generator().manual_seed(self.seed * 31 + epoch), collate_fn=_collate, **kwargs)

    def _drain(self, loader: DataLoader) -> Iterator:
        for shipment in loader:
            batch = _unpack(shipment, self._worker_records)
            self.state.position += self.batch_size * self.world_size
            yield batch

    def __iter__(self) -> Iterator:
        return self._streamed() if self.streaming else self._indexed()

    def _indexed(self) -> Iterator:
        global_batch = self.batch_size * self.world_size
        while True:
            epoch = self.state.epoch
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 10_007 + epoch))
            order = order.tolist()
            usable = (self.size // global_batch) * global_batch
            start = self.state.position
            keys = []
            for pos in range(start, usable):
                # each rank takes its slice of every global batch
                if (pos % global_batch) // self.batch_size == self.rank:
                    keys.append((epoch, pos, order[pos]))
            yield from self._drain(self._loader(self.items, epoch, self.num_workers, sampler=keys, drop_last=True))
            self.state = StreamState(epoch=epoch + 1, position=0)

    def _plan(self, epoch: int) -> _EpochPlan:
        dataset: StreamingDataset = self.dataset  # type: ignore[assignment]
        streams = max(1, int(dataset.streams_per_process))
        lengths = dataset.stream_lengths(seed=self.seed, epoch=epoch, num_streams=self.world_size * streams)
        batches = min(lengths) // self.batch_size
        if batches == 0:
            raise VqtkError(
                f"data: the shortest of the {len(lengths)} streams of epoch {epoch} holds {min(lengths)} items, "
                f"fewer than one batch (train.batch_size = {self.batch_size}); the data is read as "
                f"{self.world_size} processes x {streams} streams: split it into more parts, or read fewer streams"
            )
        used, total = batches * self.batch_size * len(lengths), sum(lengths)
        if used < 0.9 * total and not self._warned_waste and self.rank == 0:
            self._warned_waste = True
            log.warning("data: each epoch uses %d of %d items: each of the %d streams is cut to the shortest "
                        "(%d items); equal parts (e.g. a shard count divisible by the number of streams) waste less",
                        used, total, len(lengths), min(lengths))
        position = self.state.position if epoch == self.state.epoch else 0
        return _EpochPlan(seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size, streams=streams,
                          batches=batches, batch_size=self.batch_size,
                          done=position // (self.batch_size * self.world_size))

    def stream_workers(self, streams: int) -> int:
        """Loader workers for ``streams`` streams per process: the most, up to ``num_workers``, that divide it."""
        if self.num_workers <= 0:
            return 0
        workers = max(k for k in range(1, min(self.num_workers, streams) + 1) if streams % k == 0)
        if workers != self.num_workers and self.rank == 0 and not self._told_workers:
            self._told_workers = True
            log.info("data: %d loader workers (of %d asked for) share the %d streams of each process",
                     workers, self.num_workers, streams)
        return workers

    def _streamed(self) -> Iterator:
        while True:
            plan = self._plan(self.state.epoch)
            if plan.done < plan.streams * plan.batches:
                items = _StreamItems(self.dataset, plan)  # type: ignore[arg-type]
                yield from self._drain(self._loader(items, plan.epoch, self.stream_workers(plan.streams)))
            self.state = StreamState(epoch=plan.epoch + 1, position=0)
