"""The built-in quantizers' test cases: names, tiny recipe tables, and build/latents helpers
(a plain module: the test_quantizer* files import it by name).

Configs come from the registry, derived from each quantizer's signature, as a recipe gets them.
"""

from __future__ import annotations

from typing import Any

import torch

import vqtk_builtins
from vqtk.interfaces import Quantizer
from vqtk.registry import ComponentSpec, Registry

NAMES = ("vq", "ema_vq", "factorized", "residual", "fsq", "lfq", "simvq", "gumbel", "ibq")

#: the built-in plugin alone, registered once for the module (the parametrisations need it at collection)
REGISTRY = Registry()
REGISTRY.register_plugin(vqtk_builtins, "builtins")


def spec(name: str) -> ComponentSpec:
    return REGISTRY.get("quantizer", name)


def config(name: str, **options: Any) -> Any:
    """The structured config of quantizer ``name`` (its signature's defaults, then ``options``)."""
    return spec(name).config(**options)


def create(name: str, **options: Any) -> Quantizer:
    """Build quantizer ``name`` through the registry, as a recipe's ``[model.quantizer]`` does."""
    return spec(name).create(config(name, **options))


# (registered name, tiny recipe table, expected codebook_size, expected num_codebooks)
CASES = {
    "vq": ("vq", dict(dim=8, codebook_size=16), 16, 1),
    "vq-factorised-cosine": (
        "vq", dict(dim=8, codebook_size=16, codebook_dim=4, use_cosine_sim=True, rotation_trick=True), 16, 1
    ),
    "vq-kmeans-deadcode": (
        "vq", dict(dim=8, codebook_size=16, kmeans_init=True, kmeans_iters=2, threshold_ema_dead_code=1.0), 16, 1
    ),
    "ema_vq": ("ema_vq", dict(dim=8, codebook_size=16), 16, 1),
    "ema_vq-factorised-cosine-kmeans": (
        "ema_vq", dict(dim=8, codebook_size=16, codebook_dim=4, use_cosine_sim=True, kmeans_init=True), 16, 1
    ),
    "factorized": ("factorized", dict(dim=8, codebook_size=16, codebook_dim=4), 16, 1),
    "factorized-entropy": (
        "factorized", dict(dim=8, codebook_size=16, codebook_dim=4, entropy_loss_weight=0.1), 16, 1
    ),
    "factorized-llamagen-entropy": (
        "factorized",
        dict(dim=8, codebook_size=16, codebook_dim=4, entropy_loss_weight=0.1, entropy_penalty="llamagen",
             sample_entropy_weight=0.5),
        16, 1,
    ),
    "ema_vq-rotation": ("ema_vq", dict(dim=8, codebook_size=16, rotation_trick=True), 16, 1),
    "residual-rotation-cosine": (
        "residual", dict(dim=8, codebook_size=16, num_quantizers=2, rotation_trick=True, use_cosine_sim=True), 16, 2
    ),
    "residual": ("residual", dict(dim=8, codebook_size=16, num_quantizers=3), 16, 3),
    "residual-factorised": ("residual", dict(dim=8, codebook_size=16, num_quantizers=2, codebook_dim=4), 16, 2),
    "fsq": ("fsq", dict(levels=(3, 5), dim=8), 15, 1),
    "fsq-noproj-symmetric": ("fsq", dict(levels=(2, 4, 4), preserve_symmetry=True), 32, 1),
    "lfq": ("lfq", dict(dim=8, codebook_size=16), 16, 1),
    "lfq-bits": ("lfq", dict(dim=5), 32, 1),
    "simvq": ("simvq", dict(dim=8, codebook_size=16), 16, 1),
    "simvq-straight-through": (
        "simvq", dict(dim=8, codebook_size=16, rotation_trick=False, frozen_codebook_dim=4), 16, 1
    ),
    "simvq-factorised-cosine": ("simvq", dict(dim=8, codebook_size=16, codebook_dim=4, use_cosine_sim=True), 16, 1),
    "gumbel": ("gumbel", dict(dim=8, codebook_size=16), 16, 1),
    "gumbel-soft": ("gumbel", dict(dim=8, codebook_size=16, straight_through=False, temperature=0.5), 16, 1),
    "ibq": ("ibq", dict(dim=8, codebook_size=16), 16, 1),
    "ibq-factorised-cosine": (
        "ibq", dict(dim=8, codebook_size=16, codebook_dim=4, use_cosine_sim=True, entropy_loss_weight=0.0), 16, 1
    ),
}


def build(case: str, seed: int = 0) -> Quantizer:
    name, options, _, _ = CASES[case]
    torch.manual_seed(seed)
    return create(name, **options)


def latents(q: Quantizer, batch: int = 2, h: int = 4, w: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, q.dim, h, w, generator=g)
