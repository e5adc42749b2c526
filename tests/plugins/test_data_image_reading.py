"""Reading image files for image_folder: modes to RGB, palettes, 16 bits, EXIF, and unreadable files skipped."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from data_images import H, W, noise, photo_folder, solid, vqtk_warnings
from PIL import Image

from vqtk.errors import VqtkError
from vqtk_builtins.data import ImageFolder
from vqtk_builtins.data.transforms import open_rgb, to_rgb


# -- image_folder: image modes -------------------------------------------------------------


@pytest.mark.parametrize(
    "name, mode, color, save, want",
    [
        ("gray.jpg", "L", 255, {"quality": 100}, (255, 255, 255)),
        ("gray.png", "L", 0, {}, (0, 0, 0)),
        ("bw.png", "1", 1, {}, (255, 255, 255)),
        ("rgba.png", "RGBA", (0, 0, 255, 255), {}, (0, 0, 255)),
        ("clear.png", "RGBA", (0, 0, 0, 0), {}, (255, 255, 255)),  # transparent -> white
        ("la.png", "LA", (0, 255), {}, (0, 0, 0)),
        ("cmyk.jpg", "CMYK", (0, 0, 0, 0), {"quality": 100}, (255, 255, 255)),
        ("cmyk_cyan.tif", "CMYK", (255, 0, 0, 0), {}, (0, 255, 255)),
        ("rgb.webp", "RGB", (0, 255, 0), {"lossless": True}, (0, 255, 0)),
        ("rgb.bmp", "RGB", (10, 20, 30), {}, (10, 20, 30)),
        ("rgb.gif", "RGB", (255, 0, 0), {}, (255, 0, 0)),
    ],
)
def test_image_modes_become_rgb(tmp_path, name, mode, color, save, want):
    path = solid(tmp_path / name, color, mode=mode, **save)
    rgb = open_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (W, H)
    got = np.asarray(rgb).reshape(-1, 3)
    assert np.abs(got.astype(int) - np.array(want)).max() <= 2, (name, got[0])
    x = ImageFolder(path=str(tmp_path), resolution=8, eval_fraction=0.0).train_set()[0]
    assert x.shape == (3, 8, 8)


def test_palette_image_keeps_its_colours(tmp_path):
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[:, : W // 2] = (200, 10, 10)
    rgb[:, W // 2 :] = (10, 10, 200)
    path = tmp_path / "pal.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(path)
    with Image.open(path) as im:
        assert im.mode == "P"
    assert np.array_equal(np.asarray(open_rgb(path)), rgb)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.full((H, W), 32896, dtype=np.uint16)  # 128 * 257
    values[0, 0] = 65535
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    rgb = np.asarray(open_rgb(path))
    assert rgb.shape == (H, W, 3)
    assert (rgb[1:, 1:] == 128).all() and (rgb[0, 0] == 255).all()
    assert to_rgb(Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32))).getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (W, H), (0, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif)
    assert open_rgb(path).size == (H, W)


# -- image_folder: unreadable files --------------------------------------------------


def test_corrupt_files_are_skipped_with_one_warning_each(tmp_path, caplog):
    noise(tmp_path / "a_good.png", 0)
    good = noise(tmp_path / "d_good.png", 1)
    truncated = tmp_path / "b_truncated.png"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    (tmp_path / "c_empty.jpg").write_bytes(b"")
    (tmp_path / "c_text.png").write_text("this is not an image\n")
    source = ImageFolder(path=str(tmp_path), resolution=8, eval_fraction=0.0, hflip=False, crop="center")
    train = source.train_set()
    assert len(train) == 5
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        first = [train[i] for i in range(5)]
        second = [train[i] for i in range(5)]
    messages = vqtk_warnings(caplog)
    assert len(messages) == 3
    for name in ("b_truncated.png", "c_empty.jpg", "c_text.png"):
        assert sum(name in m for m in messages) == 1
    assert train.skipped == source.skipped == 3
    # a bad index gives the next readable file's image (d_good.png, index 4)
    for i in (1, 2, 3):
        assert torch.equal(first[i], first[4]) and torch.equal(second[i], first[4])
    assert not torch.equal(first[0], first[4])


def test_skipping_is_deterministic_and_wraps(tmp_path, caplog):
    noise(tmp_path / "a.png", 0)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n")
    source = ImageFolder(path=str(tmp_path), resolution=8, eval_fraction=0.0, hflip=False, crop="center")
    train = source.train_set()
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        assert torch.equal(train[1], train[0])  # wraps around to index 0


def test_file_deleted_after_listing_is_skipped(tmp_path, caplog):
    photo_folder(tmp_path, 3)
    source = ImageFolder(path=str(tmp_path), resolution=8, eval_fraction=0.0)
    (tmp_path / "img01.png").unlink()
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        items = [source.train_set()[i] for i in range(3)]
    assert all(x.shape == (3, 8, 8) for x in items)
    (message,) = vqtk_warnings(caplog)
    assert "img01.png" in message and "FileNotFoundError" in message


def test_decompression_bomb_guard(tmp_path, caplog):
    noise(tmp_path / "big.png", 0, size=(40, 40))
    noise(tmp_path / "small.png", 1, size=(10, 10))
    source = ImageFolder(path=str(tmp_path), resolution=8, eval_fraction=0.0, max_pixels=500)
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        source.train_set()[0]
    (message,) = vqtk_warnings(caplog)
    assert "big.png" in message and "decompression bomb" in message


def test_every_file_unreadable_names_the_folder(tmp_path, caplog):
    for i in range(3):
        (tmp_path / f"x{i}.png").write_text("nope")
    source = ImageFolder(path=str(tmp_path), resolution=8, eval_fraction=0.0)
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        with pytest.raises(VqtkError, match=rf"^data\.path: none of the 3 images in {tmp_path} could be read$"):
            source.train_set()[1]
    assert len(vqtk_warnings(caplog)) == 3
