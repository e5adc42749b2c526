"""The sample_photos data source, and both data sources' recipe configs and registry entries."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import attrs
import pytest
import torch
from data_images import photo_folder

import vqtk_builtins
from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import DataSource
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import DataRef
from vqtk.registry import Registry
from vqtk_builtins.data import PHOTOS, ImageFolder, SamplePhotos
from vqtk_builtins.data.sample_photos import grid_position


def registry() -> Registry:
    reg = Registry()
    record = reg.register_plugin(vqtk_builtins, "builtins")
    assert record.error is None, record.error
    return reg


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
    sample_photos_config = registry().get("data", "sample_photos").config
    with pytest.raises(ValueError, match="unknown photo"):
        sample_photos_config(eval_photos=["lena"])
    with pytest.raises(ValueError, match="chelsea also in train_photos"):
        sample_photos_config(train_photos=["chelsea"], eval_photos=["chelsea"])


def test_build_through_registry(tmp_path):
    reg = registry()
    photo_folder(tmp_path, 4)
    image_folder = reg.get("data", "image_folder")
    folder = image_folder.create(image_folder.config(path=str(tmp_path), resolution=8))
    assert isinstance(folder, ImageFolder) and folder.train_set()[0].shape == (3, 8, 8)
    ref = RecipeConverter(reg).structure({"type": "sample_photos", "resolution": 8, "eval_crops": 2}, DataRef)
    photos = reg.get("data", "sample_photos").create(ref.config)
    assert isinstance(photos, SamplePhotos) and photos.eval_set()[0].shape == (3, 8, 8)
    assert len(photos.train_set()) == 2048 and photos.scale == (0.15, 0.6)
    assert reg.get("data", "sample_photos").doc.startswith("Random crops of real photos")


def test_configs_are_the_signatures_and_every_field_has_a_doc(builtins_registry):
    for name, cls in (("image_folder", ImageFolder), ("sample_photos", SamplePhotos)):
        spec = builtins_registry.get("data", name)
        assert spec.target is cls and spec.doc
        for field in attrs.fields(spec.config):
            assert field.metadata["vqtk_doc"].strip(), f"data {name}: {field.name} has no doc"
    photos = builtins_registry.get("data", "sample_photos").config()
    assert (photos.resolution, photos.scale, photos.eval_photos) == (64, (0.15, 0.6), ("chelsea", "coffee"))


def test_registering_imports_neither_scikit_image_nor_x_transformers():
    code = (
        "import sys, vqtk_builtins\n"
        "from vqtk.registry import Registry\n"
        "assert Registry().register_plugin(vqtk_builtins, 'b').error is None\n"
        "print(sorted(m for m in ('skimage', 'x_transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
