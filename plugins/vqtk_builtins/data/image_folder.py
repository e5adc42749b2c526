"""Images from a folder on disk (optionally one subfolder per class)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Annotated, Iterable, Literal, Optional, Sequence

import torch
from torch.utils.data import Dataset

from vqtk.config import each, in_range, non_empty, positive
from vqtk.errors import VqtkError
from vqtk.interfaces import FolderDataSource
from vqtk_builtins.data.transforms import (
    DEFAULT_MAX_PIXELS,
    crop_square,
    open_rgb,
    pil_to_tensor,
    random_hflip,
    resize_shorter,
)

log = logging.getLogger("vqtk")

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "ppm", "gif")


def list_images(root: Path, extensions: Iterable[str], recursive: bool = True) -> list[Path]:
    """Image files under ``root``, sorted by relative path (hidden files and folders skipped).

    Symlinked folders are followed once each (a link cycle cannot loop).
    """
    wanted = {e.lower().lstrip(".") for e in extensions}
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            if not name.startswith(".") and name.rsplit(".", 1)[-1].lower() in wanted and "." in name:
                found.append(Path(dirpath, name))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def eval_score(relative: str) -> float:
    """A stable pseudo-random number in ``[0, 1)`` for a file, from its relative path."""
    digest = hashlib.sha1(relative.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_by_hash(root: Path, files: Sequence[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic train / eval split: a file is held out when its path hash is below ``fraction``.

    Membership depends only on the file's own relative path, so adding images
    never moves old ones between sets. With ``fraction > 0`` and two or more
    files, each set gets at least one file.
    """
    if fraction <= 0 or len(files) < 2:
        return list(files), []
    scores = [eval_score(f.relative_to(root).as_posix()) for f in files]
    held = [s < fraction for s in scores]
    if not any(held):
        held[min(range(len(files)), key=scores.__getitem__)] = True
    if all(held):
        held[max(range(len(files)), key=scores.__getitem__)] = False
    train = [f for f, h in zip(files, held) if not h]
    evals = [f for f, h in zip(files, held) if h]
    return train, evals


class ImageFolderDataset(Dataset):
    """Decoded, resized and cropped images from a list of files.

    Unreadable files (corrupt, truncated, not an image, too many pixels,
    deleted since listing) are logged once (per process: each DataLoader worker
    keeps its own record) on logger ``"vqtk"`` and skipped:
    the item comes from the next readable file (wrapping around). Randomness
    (crop position, flip) comes from torch's global RNG only.
    """

    def __init__(
        self,
        *,
        files: Sequence[Path],
        root: Path,
        resolution: int,
        random_crop: bool,
        resize: bool,
        hflip: bool,
        labels: Optional[Sequence[int]] = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        where: str = "data.path",
    ):
        self.files = list(files)
        self.root = root
        self.resolution = resolution
        self.random_crop = random_crop
        self.resize = resize
        self.hflip = hflip
        self.labels = None if labels is None else list(labels)
        self.max_pixels = max_pixels
        self.where = where
        self._bad: set[int] = set()

    @property
    def skipped(self) -> int:
        """How many files this dataset (in this process) found unreadable and skipped."""
        return len(self._bad)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        """Image ``(3, R, R)`` in ``[-1, 1]``, or ``(image, label)`` with class labels."""
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for step in range(n):
            j = (index + step) % n
            if j in self._bad:
                continue
            image = self._read(j)
            if image is None:
                continue
            x = self.transform(image)
            return x if self.labels is None else (x, self.labels[j])
        raise VqtkError(f"{self.where}: none of the {n} images in {self.root} could be read")

    def _read(self, j: int):
        path = self.files[j]
        # decode at reduced size when the image will be shrunk anyway (JPEG only)
        draft = 2 * self.resolution if self.resize else None
        try:
            return open_rgb(path, max_pixels=self.max_pixels, draft_size=draft)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, not fatal
            self._bad.add(j)
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("data: skipping unreadable image %s (%s)", path, reason)
            return None

    def transform(self, image) -> torch.Tensor:
        """RGB PIL image -> cropped (and maybe flipped) tensor."""
        size = self.resolution
        if self.resize or min(image.size) < size:
            image = resize_shorter(image, size)
        image = crop_square(image, size, random=self.random_crop)
        x = pil_to_tensor(image)
        return random_hflip(x) if self.hflip else x


class ImageFolder(FolderDataSource):
    """A folder of images: shorter side resized to ``resolution``, then cropped square.

    The eval set is either a hash-chosen ``eval_fraction`` of the files or a
    separate ``eval_path``; it always uses a centre crop and no flips. With
    ``class_labels`` each immediate subfolder is a class (sorted names give
    labels 0, 1, ...) and items are ``(image, label)``.

    Args:
        path: folder to read images from (searched recursively unless recursive = false).
        resolution: side of the square images the model sees.
        crop: training crop; evaluation always uses a centre crop.
        resize: scale the shorter side to `resolution` first (bicubic); false crops at native size.
        hflip: random left-right flips while training.
        extensions: file extensions to include (case-insensitive).
        recursive: search subfolders of `path` (and of `eval_path`) too; false reads only the
            folder itself.
        eval_fraction: share of the files held out for evaluation, chosen by a hash of each path.
        eval_path: a separate folder of evaluation images (then every file under `path` trains).
        class_labels: one subfolder per class: sorted subfolder names give labels 0, 1, ...
        max_pixels: images with more pixels are skipped as possible decompression bombs.
    """

    def __init__(
        self,
        *,
        path: Annotated[str, non_empty],
        resolution: Annotated[int, positive] = 256,
        crop: Literal["random", "center"] = "random",
        resize: bool = True,
        hflip: bool = True,
        extensions: Annotated[tuple[str, ...], non_empty, each(non_empty)] = DEFAULT_EXTENSIONS,
        recursive: bool = True,
        eval_fraction: Annotated[float, in_range(0.0, 0.5)] = 0.02,
        eval_path: Annotated[Optional[str], non_empty] = None,
        class_labels: bool = False,
        max_pixels: Annotated[int, positive] = DEFAULT_MAX_PIXELS,
    ):
        if crop not in ("random", "center"):
            raise ValueError(f'crop must be "random" or "center", got {crop!r}')
        self.resolution = resolution
        self.crop = crop
        self.resize = resize
        self.hflip = hflip
        self.extensions = tuple(e.lower().lstrip(".") for e in extensions)
        self.recursive = recursive
        self.class_labels = class_labels
        self.max_pixels = max_pixels
        self.root = _folder(path, "data.path")
        self.eval_root = None if eval_path is None else _folder(eval_path, "data.eval_path")

        self.classes: list[str] = []
        train_files = self._scan(self.root, "data.path")
        if self.class_labels:
            self.classes = sorted({f.relative_to(self.root).parts[0] for f in train_files})
        if self.eval_root is not None:
            eval_files = self._scan(self.eval_root, "data.eval_path")
            eval_root = self.eval_root
        else:
            train_files, eval_files = split_by_hash(self.root, train_files, eval_fraction)
            eval_root = self.root
            if not eval_files and eval_fraction > 0:
                log.warning("data: no held-out images (only %d file in %s)", len(train_files), self.root)
        self.num_classes = len(self.classes)
        self._train = self._dataset(train_files, self.root, train=True, where="data.path")
        self._eval = self._dataset(eval_files, eval_root, train=False,
                                   where="data.path" if self.eval_root is None else "data.eval_path")

    def _scan(self, root: Path, where: str) -> list[Path]:
        files = list_images(root, self.extensions, self.recursive)
        if self.class_labels:
            loose = [f for f in files if len(f.relative_to(root).parts) == 1]
            if loose:
                log.warning("data: %d images directly in %s ignored (class_labels uses one subfolder per class)",
                            len(loose), root)
            files = [f for f in files if len(f.relative_to(root).parts) > 1]
        if not files:
            extra = " class subfolders of" if self.class_labels else ""
            raise VqtkError(
                f"{where}: no images found in{extra} {root} (extensions: {', '.join(self.extensions)})"
            )
        return files

    def _dataset(self, files: list[Path], root: Path, *, train: bool, where: str) -> ImageFolderDataset:
        labels = None
        if self.class_labels:
            index = {name: i for i, name in enumerate(self.classes)}
            labels = []
            for f in files:
                name = f.relative_to(root).parts[0]
                if name not in index:
                    raise VqtkError(
                        f"data.eval_path: class folder {name!r} is not one of data.path's classes "
                        f"({', '.join(self.classes)})"
                    )
                labels.append(index[name])
        return ImageFolderDataset(
            files=files,
            root=root,
            resolution=self.resolution,
            random_crop=train and self.crop == "random",
            resize=self.resize,
            hflip=train and self.hflip,
            labels=labels,
            max_pixels=self.max_pixels,
            where=where,
        )

    @property
    def skipped(self) -> int:
        """Unreadable files skipped so far by both sets (in this process)."""
        return self._train.skipped + self._eval.skipped

    def skipped_files(self) -> int:
        """:attr:`skipped`, as :class:`vqtk.interfaces.DataSource` declares it."""
        return self.skipped

    def train_set(self) -> ImageFolderDataset:
        """Training images: random or centre crops, optional flips (torch RNG)."""
        return self._train

    def eval_set(self) -> ImageFolderDataset:
        """Held-out images: centre crops, no flips, no randomness."""
        return self._eval

    def describe(self) -> str:
        """E.g. ``image folder /data/x: 1200 train, 25 eval, 256px random crop, 10 classes``."""
        parts = [f"{len(self._train)} train", f"{len(self._eval)} eval", f"{self.resolution}px {self.crop} crop"]
        if self.hflip:
            parts.append("hflip")
        if self.class_labels:
            parts.append(f"{self.num_classes} classes")
        source = f"{self.root}" + ("" if self.eval_root is None else f" (eval {self.eval_root})")
        return f"image folder {source}: " + ", ".join(parts)


def _folder(path: str, where: str) -> Path:
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        if folder.exists():
            raise VqtkError(f"{where}: not a folder: {path}")
        raise VqtkError(f"{where}: no such folder: {path}")
    return folder
