"""Reading WebDataset tar shards: streams for training, samples by position for held-out sets.

Training reads the shards front to back (webdataset's tar reader), never by
index: every epoch the shards are dealt, in an order drawn from ``(seed,
epoch)``, to the streams the trainer asks for (processes x ``streams``), and
each stream mixes its samples through a shuffle buffer seeded by ``(seed,
epoch, stream)``. The buffer's output order depends only on the sample count,
so a stream resumed at position ``p`` knows which samples it already gave
without reading them: it skips whole shards unopened and reads only from the
oldest sample still waiting in the buffer, decoding none it skips.

Held-out sets (and stage 2's code cache, which indexes the training set) read
samples by position through an index of the tar headers (uncompressed shards).
The data source itself, its recipe fields and its split into training and
held-out spans, is :mod:`vqtk_builtins.data.shards`.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import logging
import random
from collections import OrderedDict
from typing import Any, Iterator, Optional, Sequence

import attrs
import numpy as np
from PIL import UnidentifiedImageError
from torch.utils.data import Dataset

from vqtk.errors import VqtkError
from vqtk.interfaces.data import StreamingDataset
from vqtk.io.shards import (
    IMAGE_EXTENSIONS,
    TarIndex,
    count_in,
    index_tar,
    iter_tar,
    read_indexed,
)
from vqtk_builtins.data.transforms import fit_square, open_rgb

log = logging.getLogger("vqtk")

#: what a stream keeps of each sample (other members are read past)
_SUFFIXES = (*IMAGE_EXTENSIONS, "cls")
#: shard indexes kept in memory for reading by position
_INDEXES_KEPT = 64


@attrs.frozen
class Span:
    """Samples ``first .. first + count - 1`` of one shard (in tar order)."""

    path: str
    first: int
    count: int


class _Unreadable(Exception):
    """A sample that cannot become an item (the reason is the message)."""


def _rng(*parts: Any) -> random.Random:
    """A generator seeded by ``parts`` (stable across processes and Python versions)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def buffer_order(n: int, size: int, rng: random.Random) -> np.ndarray:
    """The order in which a shuffle buffer of ``size`` fed inputs ``0 .. n-1`` gives them out.

    WebDataset's buffer shuffle: once full, each new input swaps a random one
    out; at the end the rest leave in random order. Output ``j`` is never an
    input later than ``j + size - 1``, so a reader holds at most ``size``
    samples. ``size <= 1`` keeps the input order.
    """
    if size <= 1:
        return np.arange(n, dtype=np.int64)
    out: list[int] = []
    buf: list[int] = []
    for i in range(n):
        buf.append(i)
        if len(buf) >= size:
            k = int(rng.random() * len(buf))
            buf[k], buf[-1] = buf[-1], buf[k]
            out.append(buf.pop())
    rng.shuffle(buf)
    out.extend(buf)
    return np.asarray(out, dtype=np.int64)


class SampleDecoder:
    """Sample (``ext -> bytes``) to item, with the image folder's resize / crop / flip policy."""

    def __init__(self, *, resolution: int, resize: bool, random_crop: bool, hflip: bool, class_labels: bool,
                 num_classes: int, max_pixels: int):
        self.resolution, self.resize, self.random_crop, self.hflip = resolution, resize, random_crop, hflip
        self.class_labels, self.num_classes, self.max_pixels = class_labels, num_classes, max_pixels

    def image(self, sample: dict):
        """The decoded RGB picture and the label (or None); no randomness used."""
        ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if ext is None:
            raise _Unreadable(f"no image member (.{', .'.join(IMAGE_EXTENSIONS[:4])}...)")
        label = None
        if self.class_labels:
            try:
                label = int(sample["cls"].decode("ascii").strip())
            except KeyError:
                raise _Unreadable("no .cls member (data.class_labels = true)") from None
            except (UnicodeDecodeError, ValueError):
                raise _Unreadable(f".cls is not an integer: {sample['cls'][:20]!r}") from None
            if not 0 <= label < self.num_classes:
                raise _Unreadable(f"label {label} is not in 0 .. {self.num_classes - 1} (data.num_classes)")
        draft = 2 * self.resolution if self.resize else None
        try:
            picture = open_rgb(io.BytesIO(sample[ext]), max_pixels=self.max_pixels, draft_size=draft)
        except UnidentifiedImageError:
            raise _Unreadable(f"UnidentifiedImageError: .{ext} is no image Pillow can read") from None
        except Exception as exc:  # noqa: BLE001 - any undecodable image is skipped, not fatal
            raise _Unreadable(f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
        return picture, label

    def item(self, picture, label):
        """The picture cropped (torch RNG) to a tensor, paired with its label when there is one."""
        x = fit_square(picture, self.resolution, resize=self.resize, random_crop=self.random_crop,
                       hflip=self.hflip)
        return x if label is None else (x, label)


class Catalog:
    """The shards, their sample counts (from sizes.json or their headers, once) and header indexes."""

    def __init__(self, *, shards: list[str], sizes: dict[str, int], where: str):
        self.shards, self.sizes, self.where = shards, sizes, where
        self._indexes: OrderedDict[str, TarIndex] = OrderedDict()
        self.bad: set[tuple[str, str]] = set()
        self.damaged: set[str] = set()  # shards that ended before their count (reported once)

    @functools.cached_property
    def counts(self) -> list[int]:
        unknown = [p for p in self.shards if count_in(self.sizes, p) is None]
        if unknown:
            log.info("data: counting the samples of %d shards from their tar headers (no data.sizes entry)",
                     len(unknown))
        return [c if (c := count_in(self.sizes, p)) is not None else len(index_tar(p).samples)
                for p in self.shards]

    def index(self, path: str) -> TarIndex:
        if path in self._indexes:
            self._indexes.move_to_end(path)
        else:
            self._indexes[path] = found = index_tar(path)
            if found.error and path not in self.damaged:
                self.damaged.add(path)
                log.warning("data: shard %s is damaged after %d samples (%s)", path, len(found.samples), found.error)
            if len(self._indexes) > _INDEXES_KEPT:
                self._indexes.popitem(last=False)
        return self._indexes[path]

    def note_bad(self, url: str, key: str, reason: str, quiet: bool = False) -> None:
        """Count an unreadable sample (and warn, once, unless its shard's damage was reported)."""
        if (url, key) not in self.bad:
            self.bad.add((url, key))
            if not quiet:
                log.warning("data: skipping unreadable sample %s in %s (%s)", key, url, reason)


def spans_of(paths: Sequence[str], counts: Sequence[int]) -> list[Span]:
    return [Span(p, 0, c) for p, c in zip(paths, counts) if c > 0]


class _SpanReader:
    """Samples ``first ..`` of a run of spans, read front to back, keeping those ``keep`` says are needed."""

    def __init__(self, spans: list[Span], first: int, keep, catalog: Catalog):
        self.cache: dict[int, Optional[dict]] = {}
        self.keep = keep
        self.catalog = catalog
        self.samples = self._read(spans, first)

    def _read(self, spans: list[Span], first: int) -> Iterator[tuple[int, Optional[dict]]]:
        base = 0
        for span in spans:
            end = base + span.count
            if end <= first:  # wholly before the resume point: not opened
                base = end
                continue
            skip = span.first + max(0, first - base)
            i = max(first, base)
            why = "it ends there"
            try:
                for n, sample in enumerate(iter_tar(span.path, _SUFFIXES)):
                    if n < skip:
                        continue  # read past, never decoded
                    if i == end:
                        break
                    yield i, sample
                    i += 1
            except Exception as exc:  # noqa: BLE001 - a damaged shard loses its remaining samples only
                why = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if i < end:  # each missing sample is unreadable; one warning for the shard
                log.warning("data: shard %s: samples from #%d on cannot be read (%s); %d skipped",
                            span.path, span.first + i - base, why, end - i)
                self.catalog.damaged.add(span.path)
            for missing in range(i, end):
                yield missing, None
            base = end

    def get(self, i: int, take: bool) -> Optional[dict]:
        while i not in self.cache:
            j, sample = next(self.samples)
            if self.keep(j):
                self.cache[j] = sample
        return self.cache.pop(i) if take else self.cache[i]


class ShardStream(StreamingDataset):
    """Training samples of the shards: streamed for training, or read by position (stage 2's code cache)."""

    def __init__(self, *, catalog: Catalog, spans: list[Span], decoder: SampleDecoder, shuffle_buffer: int,
                 streams: int):
        self.catalog, self.spans, self.decoder = catalog, spans, decoder
        self.shuffle_buffer = shuffle_buffer
        self.streams_per_process = streams
        self._starts = np.cumsum([0] + [s.count for s in spans]).tolist()

    # -- streaming --------------------------------------------------------------------

    def assignment(self, seed: int, epoch: int, num_streams: int) -> list[list[Span]]:
        """The shards (spans) of each stream this epoch: shuffled by ``(seed, epoch)``, dealt in turn."""
        if len(self.spans) < num_streams:
            raise VqtkError(
                f"data.shards: {len(self.spans)} training shards cannot feed {num_streams} streams (training "
                f"processes x data.streams): each stream reads whole shards of its own; write more, smaller "
                f"shards (vqtk shards --shard-size) or lower data.streams")
        order = list(range(len(self.spans)))
        _rng("shards", seed, epoch).shuffle(order)
        return [[self.spans[k] for k in order[s::num_streams]] for s in range(num_streams)]

    def stream_lengths(self, *, seed: int, epoch: int, num_streams: int) -> list[int]:
        return [sum(s.count for s in spans) for spans in self.assignment(seed, epoch, num_streams)]

    def stream(self, *, seed: int, epoch: int, index: int, num_streams: int, start: int = 0) -> Iterator[Any]:
        spans = self.assignment(seed, epoch, num_streams)[index]
        n = sum(s.count for s in spans)
        order = buffer_order(n, self.shuffle_buffer, _rng("buffer", seed, epoch, index))
        return self._emit(spans, order, start)

    def _emit(self, spans: list[Span], order: np.ndarray, start: int) -> Iterator[Any]:
        n = len(order)
        if start >= n:
            return
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        # inputs given out before `start` are read past, unkept; nothing before the oldest still needed is read
        reader = _SpanReader(spans, int(order[start:].min()), lambda i: position[i] >= start, self.catalog)
        bases = np.cumsum([0] + [s.count for s in spans]).tolist()
        bad: set[int] = set()

        def decoded(j: int, take: bool):
            i = int(order[j])
            sample = reader.get(i, take)
            if i in bad:
                return None
            try:
                if sample is None:
                    raise _Unreadable("missing: the shard holds fewer samples than counted")
                return self.decoder.image(sample)
            except _Unreadable as exc:
                bad.add(i)
                if sample is None:
                    k = bisect.bisect_right(bases, i) - 1
                    url, key = spans[k].path, f"#{spans[k].first + i - bases[k]}"
                else:
                    url, key = sample["__url__"], sample["__key__"]
                self.catalog.note_bad(url, key, str(exc), quiet=url in self.catalog.damaged)
                return None

        for j in range(start, n):
            found = decoded(j, take=True)
            ahead = j
            while found is None:  # the next readable sample of the stream stands in
                ahead += 1
                if ahead == n:  # none after it: the next readable one in shard order (read by position)
                    yield _read_at(self.catalog, spans, bases, self.decoder, (int(order[j]) + 1) % n)
                    break
                found = decoded(ahead, take=False)
            else:
                yield self.decoder.item(*found)

    # -- by position ------------------------------------------------------------------

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: int):
        return _read_at(self.catalog, self.spans, self._starts, self.decoder, index)


class ShardSamples(Dataset):
    """Held-out samples read by position (centre crops, no flips, no randomness)."""

    def __init__(self, *, catalog: Catalog, spans: list[Span], decoder: SampleDecoder):
        self.catalog, self.spans, self.decoder = catalog, spans, decoder
        self._starts = np.cumsum([0] + [s.count for s in spans]).tolist()

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: int):
        return _read_at(self.catalog, self.spans, self._starts, self.decoder, index)


def _read_at(catalog: Catalog, spans: list[Span], starts: list[int], decoder: SampleDecoder, index: int):
    """Item ``index`` of ``spans``; an unreadable sample gives the next readable one (wrapping around)."""
    n = starts[-1]
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for {n} samples")
    for step in range(n):
        i = (index % n + step) % n
        k = bisect.bisect_right(starts, i) - 1
        span = spans[k]
        position = span.first + i - starts[k]
        found = catalog.index(span.path).samples
        key = found[position].key if position < len(found) else f"#{position}"
        if (span.path, key) in catalog.bad:
            continue
        if position >= len(found):
            catalog.note_bad(span.path, key, "missing: the shard holds fewer samples than counted",
                             quiet=span.path in catalog.damaged)
            continue
        sample = read_indexed(span.path, found[position], _SUFFIXES)
        try:
            return decoder.item(*decoder.image(sample))
        except _Unreadable as exc:
            catalog.note_bad(span.path, key, str(exc))
    raise VqtkError(f"{catalog.where}: none of the {n} samples from {spans[0].path} on could be read")
