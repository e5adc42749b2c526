"""Image files for the data tests: solid and noise images, a photo folder, the vqtk warnings logged
(a plain module: the test_data_* files import it by name)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image


W, H = 24, 20  # test images are 24 wide, 20 high


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
