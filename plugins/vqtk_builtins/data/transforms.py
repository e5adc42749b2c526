"""Image helpers shared by the data sources: decoding to RGB, resizing, cropping, flipping.

Tensors follow the :class:`~vqtk.interfaces.DataSource` contract: float32
``(C, H, W)`` in ``[-1, 1]``. Every random choice draws from torch's global RNG
(``torch.randint`` / ``torch.rand``), so restoring ``torch.get_rng_state()``
replays the same crops and flips.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

#: PIL's own hard limit (it raises above twice ``Image.MAX_IMAGE_PIXELS``).
DEFAULT_MAX_PIXELS = 178_956_970

_ORIENTATION = 0x0112  # EXIF tag
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def open_rgb(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: Optional[int] = None) -> Image.Image:
    """Decode one image file to an 8-bit RGB PIL image, closing the file.

    ``draft_size`` lets JPEG decoding shrink by 2/4/8 in the DCT domain while
    both sides stay at least ``draft_size`` (a large speed-up for big photos).
    Raises whatever PIL raises for unreadable files, and ``ValueError`` for
    images over ``max_pixels`` (decompression bombs).
    """
    with warnings.catch_warnings(), _pil_limit_at_least(max_pixels):
        # vqtk applies its own max_pixels guard below; PIL's warning would be noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise ValueError(f"{width}x{height} pixels is over max_pixels ({max_pixels}), a possible decompression bomb")
            if draft_size is not None:
                im.draft(None, (draft_size, draft_size))
            im.load()
            im = _apply_orientation(im)
            return to_rgb(im)


@contextlib.contextmanager
def _pil_limit_at_least(max_pixels: int):
    """Let ``max_pixels`` above PIL's own hard limit (2 x ``Image.MAX_IMAGE_PIXELS``) take effect.

    PIL refuses such images in ``Image.open``, before vqtk's own check could
    allow them; the limit is raised only while opening, and only when asked for.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or max_pixels <= 2 * limit:
        yield
        return
    Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _apply_orientation(im: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says (phone photos); a broken tag is ignored."""
    try:
        if im.getexif().get(_ORIENTATION, 1) in (1, None):
            return im
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not lose the picture
        return im


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB.

    Transparent images are composited over white (their hidden colour is often
    garbage), 16-bit grayscale is scaled (PIL's ``convert`` would clip it at
    255), CMYK, palette, grayscale and the rest go through ``convert("RGB")``.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _SIXTEEN_BIT:
        values = np.asarray(im).astype(np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(im, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def resize_shorter(im: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is ``size`` (bicubic, antialiased), keeping the aspect ratio."""
    width, height = im.size
    short = min(width, height)
    if short == size:
        return im
    new_w = max(size, round(width * size / short))
    new_h = max(size, round(height * size / short))
    return im.resize((new_w, new_h), Image.Resampling.BICUBIC)


def random_offset(length: int, size: int) -> int:
    """A uniform crop start in ``[0, length - size]`` from torch's RNG."""
    return int(torch.randint(0, length - size + 1, ()).item())


def center_offset(length: int, size: int) -> int:
    """The crop start that centres ``size`` in ``length``."""
    return (length - size) // 2


def crop_square(im: Image.Image, size: int, *, random: bool) -> Image.Image:
    """A ``size`` x ``size`` crop, random (torch RNG) or centred."""
    width, height = im.size
    pick = random_offset if random else center_offset
    left, top = pick(width, size), pick(height, size)
    return im.crop((left, top, left + size, top + size))


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image to float32 ``(3, H, W)`` in ``[-1, 1]``."""
    array = np.asarray(im, dtype=np.uint8)
    return uint8_to_unit(torch.from_numpy(array.copy()).permute(2, 0, 1))


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` to float32 ``[-1, 1]``."""
    return x.to(torch.float32).div_(127.5).sub_(1.0)


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror left-right with probability 1/2 (torch RNG)."""
    if torch.rand(()).item() < 0.5:
        return x.flip(-1)
    return x


def resize_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 ``(C, h, w)`` crop to float32 ``(C, size, size)`` in ``[-1, 1]``.

    Bicubic with antialiasing (so shrinking does not alias); the overshoot of
    the cubic kernel is clipped.
    """
    x = x.to(torch.float32).unsqueeze(0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.squeeze(0).div_(127.5).sub_(1.0).clamp_(-1.0, 1.0)


def halve(x: torch.Tensor) -> torch.Tensor:
    """Half-size copy of a uint8 ``(C, H, W)`` image (antialiased), for crop pyramids."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    y = F.interpolate(x.unsqueeze(0).to(torch.float32), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return y.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)


def fit_square(im: Image.Image, size: int, *, resize: bool, random_crop: bool, hflip: bool) -> torch.Tensor:
    """The image sources' crop policy: RGB PIL image -> float32 ``(3, size, size)`` in ``[-1, 1]``.

    The shorter side is scaled to ``size`` when ``resize`` (and always when it
    is shorter than ``size``), then a random (torch RNG) or centred square is
    cropped and, with ``hflip``, mirrored with probability 1/2.
    """
    if resize or min(im.size) < size:
        im = resize_shorter(im, size)
    x = pil_to_tensor(crop_square(im, size, random=random_crop))
    return random_hflip(x) if hflip else x
