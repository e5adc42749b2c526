"""Built-in data sources: image folders on disk, WebDataset tar shards and the embedded scikit-image photos.

Items are float32 ``(3, R, R)`` tensors in ``[-1, 1]`` (or ``(image, label)``
with class labels). All randomness comes from torch's global RNG, so a resumed
run replays the same crops once ``torch.set_rng_state`` is restored. Each
source's keyword-only signature is its recipe schema; scikit-image is imported
only when a photo is first loaded.
"""

from vqtk_builtins.data.image_folder import ImageFolder, ImageFolderDataset
from vqtk_builtins.data.sample_photos import PHOTOS, PhotoCrops, PhotoGrid, SamplePhotos
from vqtk_builtins.data.shards import Shards

__all__ = ["PHOTOS", "ImageFolder", "ImageFolderDataset", "PhotoCrops", "PhotoGrid", "SamplePhotos", "Shards"]


def register_components(register) -> None:
    """Register the built-in data sources (kind ``"data"``)."""
    register("data", "image_folder", ImageFolder,
             doc="Images from a folder (jpg, png, webp...), resized and cropped square; optional class subfolders.")
    register("data", "sample_photos", SamplePhotos,
             doc="Random crops of real photos shipped with scikit-image: no download needed.")
    register("data", "shards", Shards,
             doc="WebDataset tar shards (KEY.jpg + KEY.cls), streamed: disjoint shards per process and worker.")
