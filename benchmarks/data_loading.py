"""Data loading: decode + augment throughput of one loader worker, image folder against shards.

The same real photos (the scikit-image ones the ``sample_photos`` source uses,
saved as JPEG, quality 90) are read three ways at the preset's resolution,
each in this one process, as one loader worker would:

- ``image_folder``: the ``image_folder`` source over the JPEG files (decode,
  shorter side resized, random crop, flip);
- ``shards``: the ``shards`` source over the same files written by
  ``vqtk shards`` (streamed through the tar reader and the shuffle buffer, then
  the same decode and augmentation);
- ``shards-resized``: shards written with ``vqtk shards --resolution R`` (stored
  already scaled down to the training resolution: small JPEGs, no resize).

Each call produces ``data_batch`` items. Divide the stage-1 rows' images/s by
these to see how many loader workers (``train.num_workers``) keep the model fed:
when fewer workers than that are available, the loader is the bottleneck.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Callable, Iterator

import torch
from PIL import Image

from vqtk.io.shards import SIZES_FILE, write_shards
from vqtk.recipe import load_recipe
from vqtk_builtins.data import ImageFolder, Shards
from vqtk_builtins.data.sample_photos import DEFAULT_EVAL, DEFAULT_TRAIN, load_photo

from benchmarks.context import Context, new_record, side_result
from benchmarks.timing import alternate, paired_ratios

FAMILY = "data"
UNIT = "images/s"
ITEMS = ("image_folder", "shards", "shards-resized")
REFERENCE = ITEMS[0]


def write_photos(folder: Path) -> list[Path]:
    """The colour sample photos as JPEG files (quality 90), as a dataset on disk would hold them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in (*DEFAULT_TRAIN, *DEFAULT_EVAL):
        path = folder / f"{name}.jpg"
        Image.fromarray(load_photo(name).permute(1, 2, 0).numpy()).save(path, quality=90)
        paths.append(path)
    return paths


def _endless(data: Shards) -> Iterator:
    """The training stream of ``data`` (one stream, as one worker reads it), epoch after epoch."""
    for epoch in itertools.count():
        yield from data.train_set().stream(seed=0, epoch=epoch, index=0, num_streams=1)


def sources(root: Path, resolution: int) -> dict[str, Callable[[int], list]]:
    """For each row, a function giving the next ``n`` training items."""
    photos = root / "photos"
    count = len(write_photos(photos))  # one shard each: opening it is then paid once per epoch, as it
    write_shards(photos, root / "shards", shard_size=count)  # nearly is with shards of thousands
    write_shards(photos, root / "resized", shard_size=count, resolution=resolution)
    folder = ImageFolder(path=str(photos), resolution=resolution, eval_fraction=0.0).train_set()
    streams = {}
    for key, sub in (("shards", "shards"), ("shards-resized", "resized")):
        data = Shards(shards=(str(root / sub / "shard-000000.tar"),), sizes=str(root / sub / SIZES_FILE),
                      resolution=resolution, eval_samples=0, streams=1, shuffle_buffer=4)
        streams[key] = _endless(data)
    cursor = itertools.count()
    calls: dict[str, Callable[[int], list]] = {
        "image_folder": lambda n: [folder[next(cursor) % len(folder)] for _ in range(n)]}
    for key, stream in streams.items():
        calls[key] = lambda n, s=stream: [next(s) for _ in range(n)]
    return calls


def measure_all(ctx: Context, keys: list[str]) -> list[dict]:
    wanted = [k for k in ITEMS if k in keys]
    if not wanted:
        return []
    resolution = load_recipe(ctx.preset.recipe_path, list(ctx.preset.overrides))[1]["data"]["resolution"]
    n = ctx.preset.data_batch
    make = sources(ctx.workdir / "data", resolution)
    names = wanted if REFERENCE in wanted else [REFERENCE, *wanted]
    times = alternate({k: (lambda k=k: make[k](n)) for k in names}, torch.device("cpu"),  # host work only
                      warmup=ctx.warmup, repeats=ctx.repeats)
    labels = {"image_folder": "image_folder source, JPEG files",
              "shards": "shards source, original JPEGs (vqtk shards)",
              "shards-resized": f"shards source, JPEGs stored at {resolution}px (vqtk shards --resolution)"}
    records = []
    for key in wanted:
        record = new_record(FAMILY, key, f"{key} · {resolution}px · 1 worker", UNIT, resolution=resolution,
                            items_per_call=n, photos=[*DEFAULT_TRAIN, *DEFAULT_EVAL], jpeg_quality=90)
        record["vqtk"] = side_result(labels[key], times[key], n)
        if key != REFERENCE:
            record["relative_to"] = {"key": REFERENCE, "speed": paired_ratios(times[key], times[REFERENCE])}
        records.append(record)
    return records


def bottleneck_notes(results: list[dict]) -> None:
    """Add to each data row how many such workers feed the stage-1 reference step measured in the same run."""
    step = next((r for r in results if r["family"] == "stage1" and r.get("vqtk")), None)
    if step is None:
        return
    need = step["vqtk"]["throughput"]
    for r in results:
        if r["family"] == FAMILY and r.get("vqtk"):
            workers = math.ceil(need / r["vqtk"]["throughput"])
            r["notes"].append(f"the stage-1 step `{step['key']}` takes {need:.3g} images/s: "
                              f"{workers} such loader worker(s) keep it fed")
