"""Benchmark sizes: the GPU-sized default, ``--small`` (2 CPU cores, minutes) and ``--smoke`` (CI, seconds).

Every model is built from a shipped recipe (``recipes/``) plus ``key=value``
overrides, so any row of a report can be rebuilt with ``vqtk check RECIPE
key=value ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: the repository's recipe folder
RECIPES = Path(__file__).resolve().parents[1] / "recipes"

#: applied to every benchmark recipe: the GAN runs from the first step (a step is timed
#: as it is once the discriminator has started), and LPIPS needs no downloaded weights
#: (an untrained backbone costs the same)
COMMON_OVERRIDES = ("loss.gan.start_step=0", "loss.perceptual.pretrained_backbone=false")


@dataclass(frozen=True)
class Preset:
    """Sizes and repeat counts of one benchmark run.

    Attributes:
        name: "full", "small" or "smoke".
        recipe: the tokenizer recipe every stage-1 and codec measurement starts from (in ``recipes/``).
        overrides: extra overrides on it (the smoke preset shrinks the model with them).
        stylegan: overrides added for the StyleGAN-discriminator variant (besides its recipe's tables).
        batch: stage-1 batch size; None takes the recipe's ``train.batch_size``.
        warmup, repeats: untimed and timed calls per side and measurement.
        codec_batch: images per encode / decode call.
        prior_overrides: applied to both prior recipes (GPT and MaskGIT share every setting).
        prior_batch: grids sampled per call.
        quantizer_codes, quantizer_dim, quantizer_grid, quantizer_batch: the quantizer-alone sizes.
        data_batch: items each data-loading call decodes and augments.
    """

    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    stylegan: tuple[str, ...] = ()
    batch: int | None = None
    warmup: int = 2
    repeats: int = 5
    codec_batch: int = 8
    prior_overrides: tuple[str, ...] = ()
    prior_batch: int = 8
    quantizer_codes: int = 1024
    quantizer_dim: int = 64
    quantizer_grid: int = 16
    quantizer_batch: int = 8
    data_batch: int = 16

    @property
    def recipe_path(self) -> Path:
        return RECIPES / self.recipe


FULL = Preset(
    name="full",
    recipe="vqgan_f16.toml",  # taming's ImageNet f16-16384, batch 12 at 256x256
    stylegan=("model.discriminator.channels=64", "model.discriminator.max_channels=512"),
    warmup=3,
    repeats=10,
    codec_batch=32,
    prior_overrides=("prior.codebook_size=16384", "prior.grid_size=[16, 16]", "prior.dim=1024",
                     "prior.depth=16", "prior.heads=16"),
    prior_batch=32,
    quantizer_codes=16384,
    quantizer_dim=256,
    quantizer_grid=16,
    quantizer_batch=32,
)

SMALL = Preset(
    name="small",
    recipe="small_f8.toml",  # the quick start's 3 M-parameter f8 tokenizer, batch 8 at 64x64
    warmup=1,
    repeats=4,
    codec_batch=8,
    prior_batch=8,  # the quick start's prior: 8x8 grid, 256 codes, dim 128, depth 4
    quantizer_codes=1024,
    quantizer_dim=64,
    quantizer_grid=16,
    quantizer_batch=8,
)

_TINY_AE = ("ch=32", "ch_mult=[1, 2]", "num_res_blocks=1", "attn_resolutions=[]", "z_channels=8", "resolution=32")

SMOKE = Preset(
    name="smoke",
    recipe="small_f8.toml",
    overrides=(
        *(f"model.encoder.{kv}" for kv in _TINY_AE),
        *(f"model.decoder.{kv}" for kv in _TINY_AE),
        "model.quantizer.dim=8",
        "model.quantizer.codebook_size=32",
        "model.discriminator.ndf=8",
        "model.discriminator.n_layers=1",
        "data.resolution=32",
    ),
    stylegan=("model.discriminator.channels=8", "model.discriminator.max_channels=16"),
    batch=2,
    warmup=1,
    repeats=2,
    codec_batch=2,
    prior_overrides=("prior.codebook_size=32", "prior.grid_size=[4, 4]", "prior.dim=32", "prior.depth=1",
                     "prior.heads=2"),
    prior_batch=2,
    quantizer_codes=32,
    quantizer_dim=8,
    quantizer_grid=4,
    quantizer_batch=2,
    data_batch=4,
)

PRESETS = {p.name: p for p in (FULL, SMALL, SMOKE)}
