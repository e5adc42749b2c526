"""Real photos shipped inside scikit-image's wheel: a dataset that needs no download.

Training items are random resized crops (random side, position and flip) of a
handful of photos; the eval set is a fixed grid of crops of other photos.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Any, Sequence

import torch
from torch.utils.data import Dataset

from vqtk.config import constraint, each, non_empty, positive
from vqtk.errors import VqtkError
from vqtk.interfaces import DataSource
from vqtk_builtins.data.transforms import halve, resize_tensor

#: Photos in ``skimage.data`` that load offline (checked with scikit-image 0.26),
#: with their size (height x width). Others (eagle, lily, skin...) are fetched
#: with pooch and fail offline. ``cat`` is left out: it is ``chelsea`` again.
PHOTOS: dict[str, str] = {
    "astronaut": "512x512 RGB, portrait of astronaut Eileen Collins",
    "chelsea": "300x451 RGB, a cat",
    "coffee": "400x600 RGB, a cup of coffee",
    "rocket": "427x640 RGB, a rocket on its launch pad",
    "hubble_deep_field": "872x1000 RGB, galaxies",
    "retina": "1411x1411 RGB, a retina fundus photo",
    "immunohistochemistry": "512x512 RGB, stained tissue under a microscope",
    "stereo_motorcycle": "500x741 RGB, a motorcycle (left stereo view)",
    "colorwheel": "370x371 RGB, a synthetic colour wheel",
    "camera": "512x512 grayscale, a cameraman",
    "moon": "512x512 grayscale, the lunar surface",
    "coins": "303x384 grayscale, coins",
    "brick": "512x512 grayscale, a brick wall texture",
    "grass": "512x512 grayscale, a grass texture",
    "gravel": "512x512 grayscale, a gravel texture",
}

DEFAULT_TRAIN = ("astronaut", "rocket", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry", "retina")
DEFAULT_EVAL = ("chelsea", "coffee")


# -- recipe validators (messages without the field name: the recipe loader adds its path) --


@constraint("a name in PHOTOS")
def known_photo(_inst: Any, _attr: Any, value: str) -> None:
    """Validator: a name in :data:`PHOTOS`."""
    if value not in PHOTOS:
        raise ValueError(f'unknown photo "{value}"; valid names: {", ".join(PHOTOS)}')


@constraint("none in train_photos")
def held_out(inst: Any, _attr: Any, value: Sequence[str]) -> None:
    """Validator of ``eval_photos``: none of them in ``train_photos``.

    A field validator rather than a cross-field ``check``: validators run once
    every field is set (``inst`` holds the table's values), and the recipe
    loader reports the problem at this field's path (``data.eval_photos``).
    """
    shared = [name for name in value if name in inst.train_photos]
    if shared:
        raise ValueError(f"{', '.join(shared)} also in train_photos (held-out photos must not be trained on)")


@constraint("0 < low <= high <= 1")
def scale_range(_inst: Any, _attr: Any, value: tuple[float, float]) -> None:
    """Validator: ``(low, high)`` with ``0 < low <= high <= 1``."""
    lo, hi = value
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"need 0 < low <= high <= 1, got ({lo}, {hi})")


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> torch.Tensor:
    """One photo as a uint8 ``(3, H, W)`` tensor (grayscale repeated), read from the wheel once."""
    if name not in PHOTOS:
        raise VqtkError(f"data: unknown photo {name!r}; valid names: {', '.join(PHOTOS)}")
    try:
        import numpy as np
        import skimage.data
    except ImportError as exc:
        raise VqtkError(f"data: sample_photos needs scikit-image ({exc})") from None
    try:
        image = getattr(skimage.data, name)()
    except Exception as exc:  # noqa: BLE001 - e.g. a scikit-image that wants a download
        raise VqtkError(f"data: photo {name!r} could not be loaded from scikit-image: {exc}") from None
    if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
        image = image[0]
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8:
        raise VqtkError(f"data: photo {name!r} is {image.dtype}, expected uint8")
    x = torch.from_numpy(image)
    x = x.unsqueeze(0).expand(3, -1, -1) if x.dim() == 2 else x[..., :3].permute(2, 0, 1)
    return x.contiguous()


def pyramid(photo: torch.Tensor, smallest: int) -> list[torch.Tensor]:
    """The photo and antialiased halvings of it while the shorter side stays >= ``2 * smallest``."""
    levels = [photo]
    while min(levels[-1].shape[-2:]) // 2 >= 2 * smallest:
        levels.append(halve(levels[-1]))
    return levels


def crop_resized(levels: Sequence[torch.Tensor], top: int, left: int, side: int, size: int) -> torch.Tensor:
    """Square crop of the full-size photo (``top``, ``left``, ``side`` in its pixels), resized to ``size``.

    Reads from the smallest pyramid level where the crop still spans at least
    ``2 * size`` pixels (so the final antialiased bicubic shrink sets the
    quality), and each crop costs about the same whatever its side.
    """
    k = 0
    while k + 1 < len(levels) and side >> (k + 1) >= 2 * size:
        k += 1
    level = levels[k]
    h, w = level.shape[-2:]
    s = max(1, min(round(side / 2**k), h, w))
    y = min(round(top / 2**k), h - s)
    x = min(round(left / 2**k), w - s)
    return resize_tensor(level[:, y : y + s, x : x + s], size)


class PhotoCrops(Dataset):
    """``length`` random resized crops cycling over photos (torch RNG for side, position, flip)."""

    def __init__(
        self,
        *,
        photos: Sequence[Sequence[torch.Tensor]],
        resolution: int,
        length: int,
        scale: tuple[float, float],
        hflip: bool,
    ):
        self.photos = list(photos)
        self.resolution = resolution
        self.length = length
        self.scale = scale
        self.hflip = hflip
        self.skipped = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        """Crop of photo ``index % len(photos)``: float32 ``(3, R, R)`` in ``[-1, 1]``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        levels = self.photos[index % len(self.photos)]
        h, w = levels[0].shape[-2:]
        lo, hi = self.scale
        fraction = lo + (hi - lo) * torch.rand(()).item()
        side = max(1, min(round(fraction * min(h, w)), h, w))
        top = int(torch.randint(0, h - side + 1, ()).item())
        left = int(torch.randint(0, w - side + 1, ()).item())
        x = crop_resized(levels, top, left, side, self.resolution)
        if self.hflip and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        return x


class PhotoGrid(Dataset):
    """``crops`` fixed crops per photo on an even grid, all at one scale: no randomness."""

    def __init__(self, *, photos: Sequence[Sequence[torch.Tensor]], resolution: int, crops: int, scale: float):
        self.photos = list(photos)
        self.resolution = resolution
        self.crops = crops
        self.scale = scale
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.photos) * self.crops

    def __getitem__(self, index: int) -> torch.Tensor:
        """Crop ``index % crops`` of photo ``index // crops``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} eval crops")
        levels = self.photos[index // self.crops]
        h, w = levels[0].shape[-2:]
        side = max(1, min(round(self.scale * min(h, w)), h, w))
        top, left = grid_position(index % self.crops, self.crops, h, w, side)
        return crop_resized(levels, top, left, side, self.resolution)


def grid_position(i: int, n: int, h: int, w: int, side: int) -> tuple[int, int]:
    """Top-left corner of crop ``i`` of ``n`` laid out on a grid shaped like the photo."""
    rows = max(1, min(n, round(math.sqrt(n * h / w))))
    cols = math.ceil(n / rows)
    r, c = divmod(i, cols)
    rows = math.ceil(n / cols)

    def spread(k: int, count: int, room: int) -> int:
        return room // 2 if count == 1 else round(k * room / (count - 1))

    return spread(r, rows, h - side), spread(c, cols, w - side)


class SamplePhotos(DataSource):
    """Random resized crops of real photos from scikit-image; held-out photos for evaluation.

    Needs no download. The train set has a virtual length of
    ``samples_per_epoch``; each item is a square crop whose side is a random
    fraction (``scale``) of the photo's shorter side, resized to ``resolution``.
    Eval items are ``eval_crops`` crops per held-out photo at the middle scale.

    Args:
        resolution: side of the square crops.
        train_photos: photos to train on (see PHOTOS in vqtk_builtins.data.sample_photos).
        eval_photos: held-out photos for evaluation; must not overlap train_photos.
        samples_per_epoch: virtual length of the training set.
        scale: side of a random crop as a fraction of the photo's shorter side (low, high).
        hflip: random left-right flips of the training crops.
        eval_crops: fixed crops per eval photo, on a grid at the middle of `scale`.
    """

    def __init__(
        self,
        *,
        resolution: Annotated[int, positive] = 64,
        train_photos: Annotated[tuple[str, ...], non_empty, each(known_photo)] = DEFAULT_TRAIN,
        eval_photos: Annotated[tuple[str, ...], each(known_photo), held_out] = DEFAULT_EVAL,
        samples_per_epoch: Annotated[int, positive] = 2048,
        scale: Annotated[tuple[float, float], scale_range] = (0.15, 0.6),
        hflip: bool = True,
        eval_crops: Annotated[int, positive] = 8,
    ):
        if not train_photos:
            raise VqtkError("data.train_photos: must not be empty")
        for field, names in (("train_photos", train_photos), ("eval_photos", eval_photos)):
            unknown = [n for n in names if n not in PHOTOS]
            if unknown:
                raise VqtkError(
                    f"data.{field}: unknown photo {unknown[0]!r}; valid names: {', '.join(PHOTOS)}"
                )
        shared = sorted(set(train_photos) & set(eval_photos))
        if shared:
            raise VqtkError(f"data.eval_photos: {', '.join(shared)} also in train_photos (held-out photos must not be trained on)")
        lo, hi = scale
        if not 0 < lo <= hi <= 1:
            raise VqtkError(f"data.scale: need 0 < low <= high <= 1, got ({lo}, {hi})")
        self.resolution = resolution
        self.train_photos = list(train_photos)
        self.eval_photos = list(eval_photos)
        self.samples_per_epoch = samples_per_epoch
        self.scale = (float(lo), float(hi))
        self.hflip = hflip
        self.eval_crops = eval_crops
        self._levels: dict[str, list[torch.Tensor]] = {}
        self._train = None
        self._eval = None

    def photo(self, name: str) -> list[torch.Tensor]:
        """A photo's pyramid (uint8), loaded on first use and kept."""
        if name not in self._levels:
            self._levels[name] = pyramid(load_photo(name), self.resolution)
        return self._levels[name]

    @property
    def skipped(self) -> int:
        """Always 0: the photos ship with scikit-image."""
        return 0

    def train_set(self) -> PhotoCrops:
        """``samples_per_epoch`` random resized crops of the training photos."""
        if self._train is None:
            self._train = PhotoCrops(
                photos=[self.photo(n) for n in self.train_photos],
                resolution=self.resolution,
                length=self.samples_per_epoch,
                scale=self.scale,
                hflip=self.hflip,
            )
        return self._train

    def eval_set(self) -> PhotoGrid:
        """``eval_crops`` fixed crops of each held-out photo, at the middle of ``scale``."""
        if self._eval is None:
            self._eval = PhotoGrid(
                photos=[self.photo(n) for n in self.eval_photos],
                resolution=self.resolution,
                crops=self.eval_crops,
                scale=sum(self.scale) / 2,
            )
        return self._eval

    def describe(self) -> str:
        """E.g. ``sample photos (scikit-image): 6 train photos x 2048 crops, 2 eval photos x 8 crops, 64px``."""
        return (
            f"sample photos (scikit-image): {len(self.train_photos)} train photos "
            f"({', '.join(self.train_photos)}) x {self.samples_per_epoch} random crops, "
            f"{len(self.eval_photos)} eval photos ({', '.join(self.eval_photos)}) x {self.eval_crops} crops, "
            f"{self.resolution}px"
        )
