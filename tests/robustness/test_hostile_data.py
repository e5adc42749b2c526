"""Broken image folders during real (tiny) training runs: unreadable files are skipped with one
warning each, odd-but-valid formats train, and data that cannot be read at all (or vanishes
mid-run) stops the run with one clean line while the last checkpoint stays loadable."""

from __future__ import annotations

import logging
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from robust_helpers import assert_clean_failure
from PIL import Image

from vqtk.io.checkpoint import load_checkpoint

FOLDER = ["data.type=image_folder", "data.resolution=16", "data.eval_fraction=0.2"]
QUICK = ["--no-progress", "train.image_every=1000", "train.checkpoint_every=2", "train.eval_batches=1"]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A PNG whose header claims width x height pixels (400 M by default), with one row of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * 3 * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", row)
                     + _png_chunk(b"IEND", b""))
    return path


def noise_image(seed: int, size=(24, 20)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def good_files(folder: Path) -> list[Path]:
    """Valid images in every mode a photo folder tends to hold."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(4):
        noise_image(i).save(folder / f"rgb{i}.png")
        made.append(folder / f"rgb{i}.png")
    noise_image(10).save(folder / "photo.jpg", quality=90)
    noise_image(11).convert("L").save(folder / "gray.png")
    noise_image(12).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.full((20, 24), 40_000, dtype=np.uint16)).save(folder / "sixteen.png")  # I;16
    noise_image(13).convert("RGBA").save(folder / "alpha.png")
    noise_image(14).convert("P").save(folder / "palette.gif")
    made += [folder / n for n in ("photo.jpg", "gray.png", "cmyk.jpg", "sixteen.png", "alpha.png", "palette.gif")]
    return made


def bad_files(folder: Path) -> list[Path]:
    """Files with image extensions that cannot be decoded (or must not be)."""
    full = folder / "rgb0.png"
    jpeg = folder / "photo.jpg"
    (folder / "truncated.png").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    (folder / "truncated.jpg").write_bytes(jpeg.read_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image\n")
    bomb_png(folder / "bomb.png")
    return [folder / n for n in ("truncated.png", "truncated.jpg", "empty.png", "notes.jpg", "bomb.png")]


def skipped(caplog) -> dict[str, str]:
    """file -> reason of every "skipping unreadable image" warning."""
    out = {}
    for r in caplog.records:
        msg = r.getMessage()
        if r.name == "vqtk" and msg.startswith("data: skipping unreadable image "):
            path, _, reason = msg[len("data: skipping unreadable image "):].partition(" (")
            assert path not in out, f"{path} warned twice"
            out[path] = reason
    return out


def test_mixed_folder_trains_skipping_only_the_unreadable_files(tiny, cli, tmp_path, caplog):
    folder = tmp_path / "imgs"
    good = good_files(folder)
    bad = bad_files(folder)
    (folder / "readme.txt").write_text("not an image extension: never listed")
    out = tmp_path / "run"
    caplog.set_level(logging.WARNING, logger="vqtk")
    result = cli("run", tiny, "--out", out, *QUICK, *FOLDER, f"data.path={folder}", "train.steps=8")
    assert result.code == 0, result.err
    warned = skipped(caplog)
    assert set(warned) <= {str(p) for p in bad}, set(warned) - {str(p) for p in bad}
    assert not set(warned) & {str(p) for p in good}  # grayscale, CMYK, 16-bit, alpha, palette all train
    assert len(warned) >= 3, warned  # 8 steps x 4 images over 15 files meet most of the bad ones
    if str(folder / "bomb.png") in warned:
        # PIL's own limit (2 x Image.MAX_IMAGE_PIXELS) or vqtk's max_pixels: refused before decoding
        assert "exceeds limit" in warned[str(folder / "bomb.png")] or "over max_pixels" in warned[str(folder / "bomb.png")]
    assert load_checkpoint(out).step == 8


def test_every_bad_file_is_skipped_by_the_dataset_the_run_uses(tmp_path, builtins_registry, caplog):
    from vqtk_builtins.data.image_folder import ImageFolder

    folder = tmp_path / "imgs"
    good = good_files(folder)
    bad = bad_files(folder)
    data = ImageFolder(path=str(folder), resolution=16, eval_fraction=0.0)
    caplog.set_level(logging.WARNING, logger="vqtk")
    items = [data.train_set()[i] for i in range(len(data.train_set()))]
    assert all(x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1 for x in items)
    assert set(skipped(caplog)) == {str(p) for p in bad}
    assert data.skipped == len(bad) and len(items) == len(good) + len(bad)
    # odd modes decode to the right colours (centre crop of a resized image, so compare means)
    sixteen = data.train_set()[data.train_set().files.index(folder / "sixteen.png")]
    assert float(sixteen.mean()) == pytest.approx(round(40_000 / 257) / 127.5 - 1, abs=1e-6)


def test_empty_folder_is_a_clean_error_and_leaves_no_checkpoints(tiny, cli, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    out = tmp_path / "run"
    result = cli("run", tiny, "--out", out, *QUICK, *FOLDER, f"data.path={folder}")
    assert_clean_failure(result)
    assert result.errors == [f"data.path: no images found in {folder} (extensions: jpg, jpeg, png, bmp, "
                             "webp, tif, tiff, ppm, gif)"]
    assert not (out / "checkpoints").exists()
    missing = cli("check", tiny, *FOLDER, f"data.path={tmp_path / 'nope'}")
    assert missing.errors == [f"data.path: no such folder: {tmp_path / 'nope'}"]


@pytest.mark.parametrize("workers", [0, 1])
def test_folder_of_only_unreadable_files_stops_with_one_line(tiny, cli, tmp_path, workers):
    train, held_out = tmp_path / "train", tmp_path / "eval"
    train.mkdir()
    for i in range(6):
        (train / f"img{i}.jpg").write_bytes(b"\xff\xd8\xff garbage " * i)
    good_files(held_out)
    out = tmp_path / "run"
    result = cli("run", tiny, "--out", out, *QUICK, *FOLDER, f"data.path={train}", f"data.eval_path={held_out}",
                 f"train.num_workers={workers}")
    # with a loader worker the error crosses a process boundary: still one line, no worker traceback
    assert_clean_failure(result)
    assert result.errors == [f"data.path: none of the 6 images in {train} could be read"]


def _delete_after(monkeypatch, steps: int, delete) -> None:
    from vqtk.train.stage1 import Stage1Trainer

    real = Stage1Trainer.train_step
    calls = {"n": 0}

    def train_step(self, batches):
        calls["n"] += 1
        if calls["n"] == steps + 1:
            delete()
        return real(self, batches)

    monkeypatch.setattr(Stage1Trainer, "train_step", train_step)


def test_files_deleted_mid_run_are_skipped_and_the_run_finishes(tiny, cli, tmp_path, monkeypatch, caplog):
    from vqtk_builtins.data.image_folder import DEFAULT_EXTENSIONS, list_images, split_by_hash

    folder = tmp_path / "imgs"
    good_files(folder)
    train, _ = split_by_hash(folder, list_images(folder, DEFAULT_EXTENSIONS), 0.2)
    gone = train[::2]  # half the training images; the held-out ones stay
    _delete_after(monkeypatch, 2, lambda: [p.unlink() for p in gone])
    caplog.set_level(logging.WARNING, logger="vqtk")
    out = tmp_path / "run"
    result = cli("run", tiny, "--out", out, *QUICK, *FOLDER, f"data.path={folder}", "train.steps=8")
    assert result.code == 0, result.err
    warned = skipped(caplog)
    assert warned and set(warned) <= {str(p) for p in gone}
    assert all(reason.startswith("FileNotFoundError") for reason in warned.values())
    assert load_checkpoint(out).step == 8


def test_folder_vanishing_mid_run_stops_cleanly_keeping_the_last_checkpoint(tiny, cli, tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    good_files(folder)
    _delete_after(monkeypatch, 4, lambda: shutil.rmtree(folder))
    out = tmp_path / "run"
    result = cli("run", tiny, "--out", out, *QUICK, *FOLDER, f"data.path={folder}", "train.steps=8")
    assert_clean_failure(result)
    assert len(result.errors) == 1
    assert result.errors[0].startswith("data.path: none of the ") and result.errors[0].endswith(
        f" images in {folder} could be read")
    ckpt = load_checkpoint(out, with_train_state=True)
    assert ckpt.step == 4 and ckpt.train_state["step"] == 4


def test_held_out_images_vanishing_do_not_cost_the_final_checkpoint(tiny, cli, tmp_path, monkeypatch):
    from vqtk_builtins.data.image_folder import DEFAULT_EXTENSIONS, list_images, split_by_hash

    folder = tmp_path / "imgs"
    good_files(folder)
    _, held_out = split_by_hash(folder, list_images(folder, DEFAULT_EXTENSIONS), 0.2)
    _delete_after(monkeypatch, 7, lambda: [p.unlink() for p in held_out])
    out = tmp_path / "run"
    result = cli("run", tiny, "--out", out, *QUICK, *FOLDER, f"data.path={folder}", "train.steps=8")
    if result.code != 0:
        assert_clean_failure(result)
    assert load_checkpoint(out).step == 8


def test_max_pixels_is_vqtks_limit_in_both_directions(tmp_path):
    """A lower max_pixels refuses a small image; a higher one than PIL's own hard limit lets
    a big header through to decoding (this one then fails as truncated, not as a bomb)."""
    from PIL import Image as PILImage

    from vqtk_builtins.data.transforms import DEFAULT_MAX_PIXELS, open_rgb

    small = tmp_path / "small.png"
    noise_image(1, size=(40, 30)).save(small)
    with pytest.raises(ValueError, match=r"40x30 pixels is over max_pixels \(1000\)"):
        open_rgb(small, max_pixels=1000)
    assert open_rgb(small, max_pixels=1200).size == (40, 30)

    big = bomb_png(tmp_path / "big.png")  # 400 M pixels claimed
    with pytest.raises(PILImage.DecompressionBombError):
        open_rgb(big)  # the default: PIL's own limit
    before = PILImage.MAX_IMAGE_PIXELS
    with pytest.raises(OSError) as info:
        open_rgb(big, max_pixels=500_000_000)
    assert not isinstance(info.value, PILImage.DecompressionBombError)
    assert PILImage.MAX_IMAGE_PIXELS == before  # PIL's global is restored
    assert DEFAULT_MAX_PIXELS == 2 * before
