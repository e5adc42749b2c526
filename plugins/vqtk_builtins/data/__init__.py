"""Built-in data sources: image folders on disk and the embedded scikit-image photos.

Items are float32 ``(3, R, R)`` tensors in ``[-1, 1]`` (or ``(image, label)``
with class labels). All randomness comes from torch's global RNG, so a resumed
run replays the same crops once ``torch.set_rng_state`` is restored.
"""

from vqtk_builtins.data.image_folder import ImageFolder, ImageFolderDataset
from vqtk_builtins.data.sample_photos import PHOTOS, PhotoCrops, PhotoGrid, SamplePhotos

__all__ = ["PHOTOS", "ImageFolder", "ImageFolderDataset", "PhotoCrops", "PhotoGrid", "SamplePhotos"]


def register_components(register) -> None:
    """Register this family's components (transitional: still through builders.py)."""
    from . import builders

    builders.register_components(register)
