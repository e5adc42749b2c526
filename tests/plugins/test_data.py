"""Built-in data sources: image_folder and sample_photos."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import vqtk_builtins
from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import DataSource
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import DataRef
from vqtk.registry import Registry
from vqtk_builtins.data import PHOTOS, ImageFolder, SamplePhotos
from vqtk_builtins.data.builders import ImageFolderConfig, SamplePhotosConfig
from vqtk_builtins.data.image_folder import list_images, split_by_hash
from vqtk_builtins.data.sample_photos import grid_position
from vqtk_builtins.data.transforms import open_rgb, to_rgb

W, H = 24, 20  # test images are 24 wide, 20 high


# -- helpers -------------------------------------------------------------------------


def solid(path: Path, color=(255, 0, 0), mode="RGB", size=(W, H), **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **save)
    return path


def noise(path: Path, seed: int, size=(W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def photo_folder(root: Path, n: int = 6) -> Path:
    for i in range(n):
        noise(root / f"img{i:02d}.png", seed=i)
    return root


def vqtk_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "vqtk" and r.levelno == logging.WARNING]


def registry() -> Registry:
    reg = Registry()
    record = reg.register_plugin(vqtk_builtins, "builtins")
    assert record.error is None, record.error
    return reg


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


# -- sample_photos ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos() -> SamplePhotos:
    return SamplePhotos(resolution=16, samples_per_epoch=40, eval_crops=4)


def test_sample_photos_items(photos):
    assert isinstance(photos, DataSource)
    assert (photos.resolution, photos.channels, photos.num_classes) == (16, 3, 0)
    train, evals = photos.train_set(), photos.eval_set()
    assert len(train) == 40 and len(evals) == 2 * 4
    torch.manual_seed(0)
    for ds in (train, evals):
        for i in range(len(ds)):
            x = ds[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32
            assert -1 <= x.min() and x.max() <= 1
    with pytest.raises(IndexError):
        train[40]
    assert photos.train_set() is train and photos.eval_set() is evals
    assert photos.describe().startswith("sample photos (scikit-image): 6 train photos")


def test_sample_photos_train_follows_torch_seed(photos):
    train = photos.train_set()

    def run(seed):
        torch.manual_seed(seed)
        return torch.stack([train[i] for i in range(12)])

    a, b = run(7), run(7)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(8))
    # crops vary: no two items of one photo are the same
    assert not torch.equal(a[0], a[6])
    torch.manual_seed(1)
    train[0]
    state = torch.get_rng_state()
    x = train[3]
    torch.set_rng_state(state)
    assert torch.equal(train[3], x)


def test_sample_photos_eval_identical_across_calls_and_seeds(photos):
    evals = photos.eval_set()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = torch.stack([evals[i] for i in range(len(evals))])
    assert torch.equal(torch.get_rng_state(), state)  # no randomness drawn
    torch.manual_seed(99)
    fresh = SamplePhotos(resolution=16, eval_crops=4).eval_set()
    b = torch.stack([fresh[i] for i in range(len(fresh))])
    assert torch.equal(a, b)
    assert len({tuple(x.flatten()[:32].tolist()) for x in a}) == len(a)  # distinct crops


def test_held_out_photos_never_in_train(photos):
    train_pixels = [levels[0] for levels in photos.train_set().photos]
    for levels in photos.eval_set().photos:
        assert all(levels[0].shape != p.shape or not torch.equal(levels[0], p) for p in train_pixels)
    assert set(photos.train_photos).isdisjoint(photos.eval_photos)
    with pytest.raises(VqtkError, match=r"^data\.eval_photos: chelsea also in train_photos"):
        SamplePhotos(train_photos=["chelsea", "rocket"], eval_photos=["chelsea"])


def test_grid_positions_cover_the_photo():
    positions = [grid_position(i, 8, 300, 451, 100) for i in range(8)]
    assert positions == [(0, 0), (0, 117), (0, 234), (0, 351), (200, 0), (200, 117), (200, 234), (200, 351)]
    assert grid_position(0, 1, 300, 451, 100) == (100, 175)  # a single crop is centred


def test_sample_photos_crop_is_a_resized_region():
    source = SamplePhotos(resolution=8, train_photos=["astronaut"], eval_photos=[], scale=(1.0, 1.0), hflip=False)
    x = source.train_set()[0]  # the whole 512x512 photo shrunk to 8x8
    full = source.photo("astronaut")[0].float().unsqueeze(0)
    want = torch.nn.functional.interpolate(full, size=(8, 8), mode="bicubic", antialias=True)[0]
    want = (want / 127.5 - 1).clamp(-1, 1)
    # close to one bicubic shrink of the full photo (the crop goes through a 2x-oversampled pyramid level)
    assert (x - want).abs().mean() < 0.05
    assert len(source.eval_set()) == 0


def test_sample_photos_train_item_is_fast():
    source = SamplePhotos(resolution=64)
    train = source.train_set()
    torch.manual_seed(0)
    times = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # then CPU time of this thread is the item's cost, whatever else runs
    try:
        for i in range(60):
            start = time.thread_time()
            train[i]
            times.append(time.thread_time() - start)
    finally:
        torch.set_num_threads(threads)
    assert statistics.median(times) < 0.005


def test_every_listed_photo_loads_offline():
    from vqtk_builtins.data.sample_photos import load_photo

    for name in PHOTOS:
        x = load_photo(name)
        assert x.dtype == torch.uint8 and x.dim() == 3 and x.shape[0] == 3 and min(x.shape[1:]) >= 300


# -- configs and the registry ----------------------------------------------------------------------


def test_config_validation_messages(tmp_path):
    converter = RecipeConverter(registry())

    def problems(table):
        with pytest.raises(RecipeError) as info:
            converter.structure(table, DataRef)
        return info.value.problems

    (line,) = problems({"type": "sample_photos", "train_photos": ["astronaut", "lena"]})
    assert line.startswith('train_photos: [1] unknown photo "lena"; valid names: astronaut, chelsea, coffee')
    assert problems({"type": "sample_photos", "eval_photos": ["astronaut"]}) == [
        "eval_photos: astronaut also in train_photos (held-out photos must not be trained on)"
    ]
    assert problems({"type": "sample_photos", "scale": [0.7, 0.2], "resolution": 0}) == [
        "resolution: must be > 0, got 0",
        "scale: need 0 < low <= high <= 1, got (0.7, 0.2)",
    ]
    assert problems({"type": "image_folder"}) == ["path: required field missing"]
    assert problems({"type": "image_folder", "path": "x", "eval_fraction": 0.9, "extensions": []}) == [
        "extensions: must not be empty",
        "eval_fraction: must be between 0.0 and 0.5, got 0.9",
    ]
    (line,) = problems({"type": "image_folder", "path": "x", "crop": "middle"})
    assert line == 'crop: expected one of "random", "center", got "middle"'
    with pytest.raises(ValueError, match="unknown photo"):
        SamplePhotosConfig(eval_photos=["lena"])


def test_build_through_registry(tmp_path):
    reg = registry()
    photo_folder(tmp_path, 4)
    folder = reg.get("data", "image_folder").create(ImageFolderConfig(path=str(tmp_path), resolution=8))
    assert isinstance(folder, ImageFolder) and folder.train_set()[0].shape == (3, 8, 8)
    ref = RecipeConverter(reg).structure({"type": "sample_photos", "resolution": 8, "eval_crops": 2}, DataRef)
    photos = reg.get("data", "sample_photos").create(ref.config)
    assert isinstance(photos, SamplePhotos) and photos.eval_set()[0].shape == (3, 8, 8)
    assert len(photos.train_set()) == 2048 and photos.scale == (0.15, 0.6)
    assert reg.get("data", "sample_photos").doc.startswith("Random crops of real photos")


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
