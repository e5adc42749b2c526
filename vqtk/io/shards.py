"""WebDataset tar shards: writing them from an image folder, finding, counting and reading them.

The format is WebDataset's (the LAION / DataComp convention): each shard is a
plain tar file in which a sample is the run of consecutive members sharing a
key, ``KEY.jpg`` (or ``png``, ``webp``...) plus optional ``KEY.cls`` (class
index as text) and other files. Sample counts per shard live in OpenCLIP's
``sizes.json`` (``{"shard-000000.tar": 1000, ...}``) next to the shards.

Writing uses webdataset's ``ShardWriter``; reading streams through
webdataset's tar iterator and key grouping, and random access (held-out sets)
goes through an index of member offsets read from the tar headers alone.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import re
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence

import attrs
import webdataset
from PIL import Image, ImageOps
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext, group_by_keys, meta_prefix, meta_suffix, tar_file_expander

from vqtk.errors import VqtkError

log = logging.getLogger("vqtk")

#: image extensions a sample may carry its picture in, in order of preference
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "gif")
#: OpenCLIP's per-shard sample counts, written next to the shards
SIZES_FILE = "sizes.json"
#: class names, line ``i`` naming label ``i`` (written with class labels)
CLASSES_FILE = "classes.txt"
SHARD_NAME = "shard-%06d.tar"

_SKIP_META = re.compile(r"__[^/]*__($|/)")  # webdataset's tar_file_iterator skips these members too


# -- finding and counting -----------------------------------------------------------------


def expand_shards(patterns: Sequence[str], where: str) -> list[str]:
    """Shard files named by ``patterns`` (brace patterns such as ``train-{000000..000099}.tar``,
    ``::``-separated lists, plain paths), in order; a missing or repeated file is an error at ``where``."""
    found: list[str] = []
    for pattern in patterns:
        paths = [os.path.expanduser(p) for p in expand_urls(pattern)]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            extra = f" (and {len(missing) - 1} more of the {len(paths)} it names)" if len(missing) > 1 else ""
            raise VqtkError(f"{where}: no such shard file: {missing[0]}{extra}")
        found.extend(paths)
    seen: set[str] = set()
    for path in found:
        real = os.path.realpath(path)
        if real in seen:
            raise VqtkError(f"{where}: {path} is listed twice (shards must be disjoint)")
        seen.add(real)
    if not found:
        raise VqtkError(f"{where}: names no shard files")
    return found


def read_sizes(path: str, where: str) -> dict[str, int]:
    """A ``sizes.json`` (``{shard file name: sample count}``, names relative to its folder), by real path."""
    file = Path(os.path.expanduser(path))
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise VqtkError(f"{where}: no such file: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VqtkError(f"{where}: cannot read {path} ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, int) and v >= 0 for v in data.values()):
        raise VqtkError(f"{where}: {path} is not a JSON object of shard names and sample counts")
    return {os.path.realpath(file.parent / name): count for name, count in data.items()}


def count_in(sizes: dict[str, int], shard: str) -> Optional[int]:
    """The count ``sizes`` (from :func:`read_sizes`) gives ``shard``, else None."""
    return sizes.get(os.path.realpath(shard))


class IndexedSample(NamedTuple):  # a sample's key and where its members' bytes lie: ext -> (offset, size)
    key: str
    members: dict


class TarIndex(NamedTuple):  # the samples of one shard, from its headers; why reading stopped early, if it did
    samples: list
    error: Optional[str] = None


def _member(name: str) -> Optional[tuple[str, str]]:
    """``(key, extension)`` of a tar member, or None for what webdataset's reader skips."""
    if ("/" not in name and name.startswith(meta_prefix) and name.endswith(meta_suffix)) or _SKIP_META.match(name):
        return None
    key, ext = base_plus_ext(name)
    return None if key is None else (key, ext.lower())


def index_tar(path: str) -> TarIndex:
    """Samples of an uncompressed tar shard, grouped by key as webdataset groups them (headers only)."""
    samples: list[IndexedSample] = []
    try:
        with tarfile.open(path, "r:") as tf:
            current: Optional[IndexedSample] = None
            for info in tf:
                parts = _member(info.name) if info.isreg() else None
                if parts is None:
                    continue
                if current is None or parts[0] != current.key:
                    current = IndexedSample(key=parts[0], members={})
                    samples.append(current)
                current.members[parts[1]] = (info.offset_data, info.size)
                tf.members = []  # a shard may hold millions of members: keep none
    except (tarfile.TarError, OSError, EOFError) as exc:
        return TarIndex(samples, f"{type(exc).__name__}: {exc}")
    return TarIndex(samples)


def read_indexed(path: str, sample: IndexedSample, suffixes: Optional[Iterable[str]] = None) -> dict:
    """The sample's bytes by extension (only ``suffixes`` when given), with ``__key__`` and ``__url__``."""
    wanted = None if suffixes is None else set(suffixes)
    out: dict = {"__key__": sample.key, "__url__": path}
    with open(path, "rb") as f:
        for ext, (offset, size) in sample.members.items():
            if wanted is None or ext in wanted:
                f.seek(offset)
                out[ext] = f.read(size)
    return out


def iter_tar(path: str, suffixes: Optional[Iterable[str]] = None) -> Iterator[dict]:
    """A shard's samples front to back (webdataset's tar reader): ``ext -> bytes``, only ``suffixes`` kept;
    raises what the tar reader raises for a damaged shard."""
    with open(path, "rb") as stream:
        files = tar_file_expander([{"url": path, "stream": stream}])
        yield from group_by_keys(files, suffixes=None if suffixes is None else set(suffixes))


# -- writing ------------------------------------------------------------------------------


@attrs.frozen
class WriteReport:
    """What :func:`write_shards` wrote."""

    out: Path
    shards: list  # file names, in order
    counts: list  # samples per shard
    skipped: int
    classes: list  # class names (label i is classes[i]); empty without class labels
    bytes: int

    @property
    def pattern(self) -> str:
        """The brace pattern naming every shard, for a recipe's ``data.shards``."""
        last = len(self.shards) - 1
        name = SHARD_NAME.replace("%06d", "{000000..%06d}" % last) if last else self.shards[0]
        return str(self.out / name)


def list_source(src: Path, class_labels: bool) -> tuple[list[Path], list[str]]:
    """Image files under ``src`` sorted by relative path (hidden ones skipped), and class names.

    With ``class_labels`` each immediate subfolder is a class (sorted names give
    labels 0, 1, ...) and files directly in ``src`` are left out with a warning.
    """
    files = sorted((p for p in src.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
                    and not any(part.startswith(".") for part in p.relative_to(src).parts) and p.is_file()),
                   key=lambda p: p.relative_to(src).as_posix())
    if not class_labels:
        return files, []
    loose = [f for f in files if len(f.relative_to(src).parts) == 1]
    if loose:
        log.warning("%d images directly in %s left out (--class-labels takes one subfolder per class)",
                    len(loose), src)
    files = [f for f in files if len(f.relative_to(src).parts) > 1]
    return files, sorted({f.relative_to(src).parts[0] for f in files})


def _shrink(data: bytes, ext: str, size: int) -> tuple[bytes, str]:
    """Image bytes with the shorter side scaled down to ``size`` (upright; PNG unless it was a JPEG)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if min(im.size) <= size:
            return data, ext
        im = ImageOps.exif_transpose(im)
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        if ext in ("jpg", "jpeg") and im.mode in ("RGB", "L"):
            im.save(out, format="JPEG", quality=95)
            return out.getvalue(), "jpg"
        im.save(out, format="PNG")
        return out.getvalue(), "png"


def _prepare(job: tuple[str, Optional[int]]) -> tuple[Optional[bytes], str]:
    """``(bytes, ext)`` of one image file ready to store, or ``(None, reason)`` when it cannot be read."""
    path, resolution = job
    ext = path.rsplit(".", 1)[-1].lower()
    try:
        with Image.open(path) as im:
            im.load()  # a full decode: a file the trainer could not read is not stored
        data = Path(path).read_bytes()
        if resolution is not None:
            return _shrink(data, ext, resolution)
        return data, ext
    except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, not fatal
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


def write_shards(src: Path, out: Path, *, shard_size: int, max_bytes: Optional[int] = None,
                 resolution: Optional[int] = None, class_labels: bool = False, workers: int = 1) -> WriteReport:
    """Write the images under ``src`` into WebDataset shards in ``out`` (an empty or new folder).

    Files go in sorted order with keys ``000000000``, ``000000001``, ...; each
    sample holds the image (``KEY.jpg``... the original bytes, or scaled down
    to ``resolution`` on its shorter side), ``KEY.json`` (``{"path": ...}``,
    relative to ``src``) and with ``class_labels`` ``KEY.cls``. A shard is
    closed after ``shard_size`` images or once it holds ``max_bytes`` (it may
    pass that by one image). Unreadable files are skipped with a warning each.
    ``workers`` processes read and check the images (the order stays the same).
    """
    files, classes = list_source(src, class_labels)
    if not files:
        extra = " class subfolders of" if class_labels else ""
        raise VqtkError(f"{src}: no images found in{extra} it (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    out.mkdir(parents=True, exist_ok=True)
    taken = sorted(p.name for p in out.iterdir() if p.suffix == ".tar" or p.name in (SIZES_FILE, CLASSES_FILE))
    if taken:
        raise VqtkError(f"--out {out}: already holds shards ({taken[0]}...); choose an empty folder")
    labels = {name: i for i, name in enumerate(classes)}
    opened: dict[str, object] = {}
    written: list[str] = []

    def opener(fname: str):
        opened[fname] = stream = open(fname + ".partial", "wb")
        return stream

    def finished(fname: str) -> None:
        opened.pop(fname).close()  # type: ignore[attr-defined]
        os.replace(fname + ".partial", fname)
        written.append(os.path.basename(fname))

    counts: list[int] = []
    skipped = total_bytes = index = 0
    jobs = [(str(f), resolution) for f in files]
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    block = 64 * workers  # images in flight at once: memory stays bounded whatever the folder's size
    results = itertools.chain.from_iterable(
        pool.map(_prepare, jobs[k:k + block], chunksize=8) if pool else map(_prepare, jobs[k:k + block])
        for k in range(0, len(jobs), block))
    writer: Optional[webdataset.ShardWriter] = None
    try:
        for path, (data, ext) in zip(files, results):
            if data is None:
                skipped += 1
                log.warning("skipping unreadable image %s (%s)", path, ext)
                continue
            if writer is None:  # opens its first shard at once: only when there is an image for it
                writer = webdataset.ShardWriter(str(out / SHARD_NAME), maxcount=shard_size,
                                                maxsize=max_bytes or float("inf"), verbose=0, opener=opener,
                                                post=lambda fname: (counts.append(writer.count), finished(fname)),
                                                mtime=0.0)
            relative = path.relative_to(src)
            sample = {"__key__": f"{index:09d}", ext: data, "json": json.dumps({"path": relative.as_posix()})}
            if class_labels:
                sample["cls"] = str(labels[relative.parts[0]])
            writer.write(sample)
            index += 1
            total_bytes += len(data)
        if writer is not None:
            writer.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        for fname, stream in opened.items():  # left open only when writing failed
            stream.close()  # type: ignore[attr-defined]
            Path(fname + ".partial").unlink(missing_ok=True)
    if not written:
        raise VqtkError(f"{src}: none of the {len(files)} images could be read")
    (out / SIZES_FILE).write_text(json.dumps(dict(zip(written, counts)), indent=1) + "\n")
    if class_labels:
        (out / CLASSES_FILE).write_text("".join(f"{name}\n" for name in classes))
    return WriteReport(out=out, shards=written, counts=counts, skipped=skipped, classes=classes, bytes=total_bytes)
