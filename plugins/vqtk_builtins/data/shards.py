"""WebDataset tar shards as a data source (``data.type = "shards"``), streamed shard by shard.

The recipe fields, the split of the shards into training and held-out spans,
and the description live here; how the shards are read (streams dealt per
epoch, shuffle buffers, resumption without re-reading, samples by position)
is :mod:`vqtk_builtins.data.shard_reading`.
"""

from __future__ import annotations

import functools
from typing import Annotated, Literal, Optional

from vqtk.config import each, non_empty, non_negative, positive
from vqtk.errors import VqtkError
from vqtk.interfaces.data import ShardDataSource
from vqtk.io.shards import expand_shards, read_sizes
from vqtk_builtins.data.shard_reading import (
    Catalog,
    SampleDecoder,
    ShardSamples,
    ShardStream,
    Span,
    buffer_order,
    spans_of,
)
from vqtk_builtins.data.transforms import DEFAULT_MAX_PIXELS

__all__ = ["Shards", "ShardSamples", "ShardStream", "buffer_order"]


class Shards(ShardDataSource):
    """WebDataset tar shards (LAION / DataComp layout), streamed: each process and loader worker reads its own shards.

    A sample is ``KEY.jpg`` (or ``.png``, ``.webp``...) plus optional ``KEY.cls``
    (class index as text). Every epoch the shards are dealt to processes x
    ``streams`` streams in an order drawn from ``(seed, epoch)``, and each stream
    mixes its samples through a shuffle buffer seeded the same way; every stream
    is cut to the shortest one's whole batches. Images get the image folder's
    resize, crop and flip. Unreadable samples are skipped with one warning each
    (the stream's next readable sample stands in). The held-out set is
    ``eval_shards``, or else the first ``eval_samples`` samples of ``shards``.

    Args:
        shards: training shards: brace patterns ("/data/train-{000000..000099}.tar"), "::"-separated
            lists or paths (uncompressed tar files on a filesystem every process can read).
        resolution: side of the square images the model sees.
        crop: training crop; evaluation always uses a centre crop.
        resize: scale the shorter side to `resolution` first (bicubic); false crops at native size.
        hflip: random left-right flips while training.
        sizes: sample counts per shard: a JSON object {shard file name: count}, names relative to its
            folder (OpenCLIP's sizes.json, which vqtk shards writes); shards it does not list are counted
            from their tar headers at start, in every process.
        eval_shards: separate held-out shards (every sample in them); then all of `shards` trains.
        eval_samples: without eval_shards, the first this many samples of `shards` (in the order
            listed) are held out for evaluation and never trained on.
        class_labels: items are (image, label), the label read from KEY.cls.
        num_classes: number of classes (labels 0 .. num_classes - 1); needed with class_labels
            (vqtk shards --class-labels prints it).
        shuffle_buffer: samples each stream mixes through (WebDataset's shuffle buffer; each process
            holds streams x this many encoded samples); 1 keeps the order within shards.
        streams: shard streams each training process reads at once, interleaved batch by batch and
            shared by its loader workers; needs at least processes x streams shards. Changing it (or
            the number of processes) changes the order of the data.
        max_pixels: images with more pixels are skipped as possible decompression bombs.
    """

    def __init__(
        self,
        *,
        shards: Annotated[tuple[str, ...], non_empty, each(non_empty)],
        resolution: Annotated[int, positive] = 256,
        crop: Literal["random", "center"] = "random",
        resize: bool = True,
        hflip: bool = True,
        sizes: Annotated[Optional[str], non_empty] = None,
        eval_shards: Annotated[Optional[tuple[str, ...]], non_empty, each(non_empty)] = None,
        eval_samples: Annotated[int, non_negative] = 256,
        class_labels: bool = False,
        num_classes: Annotated[Optional[int], positive] = None,
        shuffle_buffer: Annotated[int, positive] = 1000,
        streams: Annotated[int, positive] = 4,
        max_pixels: Annotated[int, positive] = DEFAULT_MAX_PIXELS,
    ):
        if class_labels and num_classes is None:
            raise VqtkError("data.num_classes: needed with data.class_labels = true (labels 0 .. num_classes - 1)")
        self.resolution = resolution
        self.crop, self.resize, self.hflip = crop, resize, hflip
        self.class_labels = class_labels
        self.num_classes = num_classes if class_labels else 0
        self.shuffle_buffer, self.streams, self.eval_samples = shuffle_buffer, streams, eval_samples
        self.patterns = tuple(shards)
        counts = read_sizes(sizes, "data.sizes") if sizes is not None else {}
        self.catalog = Catalog(shards=expand_shards(shards, "data.shards"), sizes=counts, where="data.shards")
        self.eval_catalog = None if eval_shards is None else Catalog(
            shards=expand_shards(eval_shards, "data.eval_shards"), sizes=counts, where="data.eval_shards")
        decoder = functools.partial(SampleDecoder, resolution=resolution, resize=resize, class_labels=class_labels,
                                    num_classes=self.num_classes, max_pixels=max_pixels)
        self._train_decoder = decoder(random_crop=crop == "random", hflip=hflip)
        self._eval_decoder = decoder(random_crop=False, hflip=False)

    @functools.cached_property
    def _split(self) -> tuple[list[Span], list[Span]]:
        """Training and held-out spans (counting the shards on first use)."""
        paths, counts = self.catalog.shards, self.catalog.counts
        if self.eval_catalog is not None:
            return spans_of(paths, counts), spans_of(self.eval_catalog.shards, self.eval_catalog.counts)
        if self.eval_samples >= sum(counts):
            raise VqtkError(f"data.eval_samples: holding out {self.eval_samples} samples leaves none of the "
                            f"{sum(counts)} in data.shards to train on; lower it or give data.eval_shards")
        held, train, evals = self.eval_samples, [], []
        for path, count in zip(paths, counts):
            take = min(held, count)
            held -= take
            if take:
                evals.append(Span(path, 0, take))
            if count > take:
                train.append(Span(path, take, count - take))
        return train, evals

    @functools.cached_property
    def _train(self) -> ShardStream:
        return ShardStream(catalog=self.catalog, spans=self._split[0], decoder=self._train_decoder,
                           shuffle_buffer=self.shuffle_buffer, streams=self.streams)

    @functools.cached_property
    def _eval(self) -> ShardSamples:
        return ShardSamples(catalog=self.eval_catalog or self.catalog, spans=self._split[1],
                            decoder=self._eval_decoder)

    def train_set(self) -> ShardStream:
        """The training samples as a stream (the trainer splits it over processes and workers)."""
        return self._train

    def eval_set(self) -> ShardSamples:
        """Held-out samples: centre crops, no flips, no randomness."""
        return self._eval

    def skipped_files(self) -> int:
        """Unreadable samples skipped so far in this process (each loader worker keeps its own count)."""
        return len(self.catalog.bad) + (len(self.eval_catalog.bad) if self.eval_catalog else 0)

    def describe(self) -> str:
        """E.g. ``webdataset shards /data/train-{0..9}.tar: 10 shards, 9744 train, 256 eval, 256px random crop``."""
        train, evals = self._split
        parts = [f"{len(self.catalog.shards)} shards", f"{sum(s.count for s in train)} train", f"{sum(s.count for s in evals)} eval",
                 f"{self.resolution}px {self.crop} crop"]
        if self.hflip:
            parts.append("hflip")
        if self.class_labels:
            parts.append(f"{self.num_classes} classes")
        parts.append(f"{self.streams} streams per process, shuffle buffer {self.shuffle_buffer}")
        return f"webdataset shards {' '.join(self.patterns)}: " + ", ".join(parts)
