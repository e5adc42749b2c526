"""The image_folder data source: items, augmentation, the train/eval split, folder errors and class labels."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from data_images import noise, photo_folder, solid, vqtk_warnings
from PIL import Image
from torch.utils.data import DataLoader

from vqtk.errors import VqtkError
from vqtk.interfaces import DataSource
from vqtk_builtins.data import ImageFolder
from vqtk_builtins.data.image_folder import list_images, split_by_hash


# -- image_folder: items -------------------------------------------------------------


def test_image_folder_items_shape_dtype_range(tmp_path):
    source = ImageFolder(path=str(photo_folder(tmp_path)), resolution=16, eval_fraction=0.3)
    assert isinstance(source, DataSource)
    assert (source.resolution, source.channels, source.num_classes) == (16, 3, 0)
    train, evals = source.train_set(), source.eval_set()
    assert len(train) + len(evals) == 6 and len(evals) >= 1
    for ds in (train, evals):
        for i in range(len(ds)):
            x = ds[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32
            assert x.min() >= -1 and x.max() <= 1
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert batch.shape == (2, 3, 16, 16)
    assert source.describe().startswith(f"image folder {tmp_path}: ")
    assert f"{len(train)} train, {len(evals)} eval" in source.describe()


def test_image_folder_colour_values_exact(tmp_path):
    solid(tmp_path / "red.png", (255, 0, 0))
    source = ImageFolder(path=str(tmp_path), resolution=16, eval_fraction=0.0)
    x = source.train_set()[0]
    assert torch.equal(x[0], torch.ones(16, 16))
    assert torch.equal(x[1:], -torch.ones(2, 16, 16))


def test_image_folder_resize_then_center_crop_matches_pil(tmp_path):
    path = noise(tmp_path / "a.png", seed=3, size=(40, 20))
    source = ImageFolder(path=str(tmp_path), resolution=10, crop="center", hflip=False, eval_fraction=0.0)
    x = source.train_set()[0]
    # by hand: shorter side 20 -> 10 (bicubic), width 40 -> 20, centre crop columns 5..15
    with Image.open(path) as im:
        want = np.asarray(im.convert("RGB").resize((20, 10), Image.Resampling.BICUBIC))[:, 5:15]
    want = torch.from_numpy(want.copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(x, want)


def test_image_folder_without_resize_crops_native_pixels(tmp_path):
    path = noise(tmp_path / "a.png", seed=4, size=(30, 20))
    source = ImageFolder(path=str(tmp_path), resolution=10, resize=False, crop="center", hflip=False, eval_fraction=0.0)
    x = source.train_set()[0]
    with Image.open(path) as im:
        want = np.asarray(im)[5:15, 10:20]
    assert torch.allclose(x, torch.from_numpy(want.copy()).permute(2, 0, 1).float() / 127.5 - 1)
    # an image smaller than resolution is scaled up to fit
    small = ImageFolder(path=str(tmp_path), resolution=32, resize=False, eval_fraction=0.0)
    assert small.train_set()[0].shape == (3, 32, 32)


def test_image_folder_train_randomness_follows_torch_seed(tmp_path):
    source = ImageFolder(path=str(photo_folder(tmp_path, 3)), resolution=12, eval_fraction=0.0)
    train = source.train_set()

    def run(seed):
        torch.manual_seed(seed)
        return torch.stack([train[i % 3] for i in range(12)])

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    # resuming from a saved RNG state replays the same items
    torch.manual_seed(5)
    first = [train[i % 3] for i in range(4)]
    state = torch.get_rng_state()
    rest = [train[i % 3] for i in range(4)]
    torch.set_rng_state(state)
    assert all(torch.equal(a, b) for a, b in zip(rest, [train[i % 3] for i in range(4)]))
    assert len(first) == 4


def test_image_folder_eval_is_deterministic_and_uses_no_rng(tmp_path):
    source = ImageFolder(path=str(photo_folder(tmp_path, 8)), resolution=12, eval_fraction=0.5)
    evals = source.eval_set()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = [evals[i] for i in range(len(evals))]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    b = [evals[i] for i in range(len(evals))]
    again = ImageFolder(path=str(tmp_path), resolution=12, eval_fraction=0.5).eval_set()
    c = [again[i] for i in range(len(again))]
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c))


def test_hflip_mirrors_half_the_time_in_train_only(tmp_path):
    noise(tmp_path / "a.png", 0, size=(16, 16))
    source = ImageFolder(path=str(tmp_path), resolution=16, crop="center", eval_fraction=0.0)
    plain = ImageFolder(path=str(tmp_path), resolution=16, hflip=False, eval_fraction=0.0).train_set()[0]
    torch.manual_seed(0)
    items = [source.train_set()[0] for _ in range(40)]
    flipped = sum(torch.equal(x, plain.flip(-1)) for x in items)
    assert sum(torch.equal(x, plain) for x in items) + flipped == 40
    assert 8 <= flipped <= 32
    with pytest.raises(ValueError, match="crop must be"):
        ImageFolder(path=str(tmp_path), crop="middle")


# -- image_folder: the split ---------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_stable(tmp_path):
    photo_folder(tmp_path, 20)
    files = list_images(tmp_path, ["png"])
    assert files == sorted(files)
    train, evals = split_by_hash(tmp_path, files, 0.25)
    assert set(train).isdisjoint(evals) and sorted(train + evals) == files
    assert (train, evals) == split_by_hash(tmp_path, files, 0.25)
    # adding files never moves an existing one between the sets
    noise(tmp_path / "zz_new.png", seed=99)
    train2, evals2 = split_by_hash(tmp_path, list_images(tmp_path, ["png"]), 0.25)
    assert set(evals) <= set(evals2) and set(train) <= set(train2)
    # tiny folders still get one file on each side
    two = files[:2]
    t, e = split_by_hash(tmp_path, two, 0.02)
    assert len(t) == len(e) == 1
    assert split_by_hash(tmp_path, files, 0.0) == (files, [])


def test_eval_path_is_a_separate_folder(tmp_path):
    photo_folder(tmp_path / "train", 3)
    photo_folder(tmp_path / "val", 2)
    source = ImageFolder(path=str(tmp_path / "train"), eval_path=str(tmp_path / "val"), resolution=8)
    assert (len(source.train_set()), len(source.eval_set())) == (3, 2)
    assert source.eval_set().files == list_images(tmp_path / "val", ["png"])


def test_extensions_recursive_and_hidden_files(tmp_path):
    noise(tmp_path / "a.PNG", 0)
    noise(tmp_path / "b.jpg", 1)
    noise(tmp_path / "sub" / "c.png", 2)
    noise(tmp_path / ".hidden.png", 3)
    (tmp_path / "notes.txt").write_text("hello")
    names = lambda files: [f.relative_to(tmp_path).as_posix() for f in files]  # noqa: E731
    assert names(list_images(tmp_path, ["png", "jpg"])) == ["a.PNG", "b.jpg", "sub/c.png"]
    assert names(list_images(tmp_path, [".png"], recursive=False)) == ["a.PNG"]


# -- image_folder: folder errors ------------------------------------------------------------


def test_missing_folder_message(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(VqtkError, match=rf"^data\.path: no such folder: {missing}$"):
        ImageFolder(path=str(missing))
    file = noise(tmp_path / "a.png", 0)
    with pytest.raises(VqtkError, match=r"^data\.path: not a folder: "):
        ImageFolder(path=str(file))
    with pytest.raises(VqtkError, match=r"^data\.eval_path: no such folder: "):
        ImageFolder(path=str(tmp_path), eval_path=str(missing))


def test_empty_folder_message(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(VqtkError) as info:
        ImageFolder(path=str(tmp_path))
    message = str(info.value)
    assert message == (
        f"data.path: no images found in {tmp_path} (extensions: jpg, jpeg, png, bmp, webp, tif, tiff, ppm, gif)"
    )
    assert "\n" not in message


# -- image_folder: class labels ----------------------------------------------------------------


def test_class_labels_from_sorted_subfolders(tmp_path, caplog):
    for i in range(3):
        solid(tmp_path / "zebra" / f"z{i}.png", (0, 0, 255))
        solid(tmp_path / "apple" / f"a{i}.png", (255, 0, 0))
    solid(tmp_path / "apple" / "nested" / "deep.png", (255, 0, 0))
    solid(tmp_path / "loose.png", (0, 255, 0))
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        source = ImageFolder(path=str(tmp_path), resolution=8, class_labels=True, eval_fraction=0.2)
    assert source.num_classes == 2 and source.classes == ["apple", "zebra"]
    assert any("loose" not in m and "1 images directly in" in m for m in vqtk_warnings(caplog))
    seen = 0
    for ds in (source.train_set(), source.eval_set()):
        for i in range(len(ds)):
            x, label = ds[i]
            assert x.shape == (3, 8, 8) and isinstance(label, int)
            # apple is red (label 0), zebra is blue (label 1)
            assert (x[0].mean() > 0) == (label == 0) and (x[2].mean() > 0) == (label == 1)
            seen += 1
    assert seen == 7
    images, labels = next(iter(DataLoader(source.train_set(), batch_size=2)))
    assert images.shape == (2, 3, 8, 8) and labels.dtype == torch.int64
    assert "2 classes" in source.describe()


def test_class_labels_eval_path_must_share_classes(tmp_path):
    solid(tmp_path / "train" / "cat" / "a.png")
    solid(tmp_path / "val" / "dog" / "b.png")
    with pytest.raises(VqtkError, match=r"^data\.eval_path: class folder 'dog' is not one of data\.path's classes \(cat\)$"):
        ImageFolder(path=str(tmp_path / "train"), eval_path=str(tmp_path / "val"), class_labels=True)
    solid(tmp_path / "flat" / "a.png")
    with pytest.raises(VqtkError, match=r"^data\.path: no images found in class subfolders of "):
        ImageFolder(path=str(tmp_path / "flat"), class_labels=True)
