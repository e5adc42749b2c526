"""Configs and build functions for the built-in data sources."""

from __future__ import annotations

from typing import Any, Literal, Optional

import attrs

from vqtk.config import each, in_range, non_empty, positive

# plain constants: these modules import torch and PIL, never scikit-image
from vqtk_builtins.data.image_folder import DEFAULT_EXTENSIONS
from vqtk_builtins.data.sample_photos import DEFAULT_EVAL, DEFAULT_TRAIN, PHOTOS
from vqtk_builtins.data.transforms import DEFAULT_MAX_PIXELS


def _known_photo(_inst: Any, _attr: Any, value: str) -> None:
    if value not in PHOTOS:
        raise ValueError(f'unknown photo "{value}"; valid names: {", ".join(PHOTOS)}')


def _held_out(inst: Any, _attr: Any, value: list[str]) -> None:
    # a field validator rather than __attrs_post_init__: attrs runs validators
    # once every field is set, and the loader reports them at this field's path
    shared = [name for name in value if name in inst.train_photos]
    if shared:
        raise ValueError(f"{', '.join(shared)} also in train_photos (held-out photos must not be trained on)")


def _scale_range(_inst: Any, _attr: Any, value: tuple[float, float]) -> None:
    lo, hi = value
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"need 0 < low <= high <= 1, got ({lo}, {hi})")


@attrs.define(kw_only=True)
class ImageFolderConfig:
    """Images from a folder (jpg, png, webp...), resized and cropped square; optional class subfolders."""

    #: folder to read images from (searched recursively unless recursive = false)
    path: str = attrs.field(validator=non_empty)
    #: side of the square images the model sees
    resolution: int = attrs.field(default=256, validator=positive)
    #: training crop; evaluation always uses a centre crop
    crop: Literal["random", "center"] = "random"
    #: scale the shorter side to `resolution` first (bicubic); false crops at native size
    resize: bool = True
    #: random left-right flips while training
    hflip: bool = True
    #: file extensions to include (case-insensitive)
    extensions: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_EXTENSIONS), validator=[non_empty, each(non_empty)]
    )
    recursive: bool = True
    #: share of the files held out for evaluation, chosen by a hash of each path
    eval_fraction: float = attrs.field(default=0.02, validator=in_range(0.0, 0.5))
    #: a separate folder of evaluation images (then every file under `path` trains)
    eval_path: Optional[str] = attrs.field(default=None, validator=non_empty)
    #: one subfolder per class: sorted subfolder names give labels 0, 1, ...
    class_labels: bool = False
    #: images with more pixels are skipped as possible decompression bombs
    max_pixels: int = attrs.field(default=DEFAULT_MAX_PIXELS, validator=positive)


def build_image_folder(config: ImageFolderConfig):
    """An :class:`~vqtk_builtins.data.image_folder.ImageFolder` from its config."""
    from vqtk_builtins.data.image_folder import ImageFolder

    return ImageFolder(**attrs.asdict(config))


@attrs.define(kw_only=True)
class SamplePhotosConfig:
    """Random crops of real photos shipped with scikit-image: no download needed."""

    #: side of the square crops
    resolution: int = attrs.field(default=64, validator=positive)
    #: photos to train on (see PHOTOS in vqtk_builtins.data.sample_photos)
    train_photos: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_TRAIN), validator=[non_empty, each(_known_photo)]
    )
    #: held-out photos for evaluation; must not overlap train_photos
    eval_photos: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_EVAL), validator=[each(_known_photo), _held_out]
    )
    #: virtual length of the training set
    samples_per_epoch: int = attrs.field(default=2048, validator=positive)
    #: side of a random crop as a fraction of the photo's shorter side (low, high)
    scale: tuple[float, float] = attrs.field(default=(0.15, 0.6), validator=_scale_range)
    hflip: bool = True
    #: fixed crops per eval photo, on a grid at the middle of `scale`
    eval_crops: int = attrs.field(default=8, validator=positive)


def build_sample_photos(config: SamplePhotosConfig):
    """A :class:`~vqtk_builtins.data.sample_photos.SamplePhotos` from its config."""
    from vqtk_builtins.data.sample_photos import SamplePhotos

    return SamplePhotos(**attrs.asdict(config))


def register_components(register) -> None:
    """Register the built-in data sources (kind ``"data"``)."""
    register("data", "image_folder", config=ImageFolderConfig, build=build_image_folder,
             doc=ImageFolderConfig.__doc__.splitlines()[0])
    register("data", "sample_photos", config=SamplePhotosConfig, build=build_sample_photos,
             doc=SamplePhotosConfig.__doc__.splitlines()[0])
