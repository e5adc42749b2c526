"""The built-in quantizers' test cases: names, builders, tiny configs, and a build/latents helper
(a plain module: the test_quantizers_* files import it by name)."""

from __future__ import annotations

import torch

from vqtk.interfaces import Quantizer
from vqtk_builtins.quantizers import builders as qb


NAMES = ("vq", "ema_vq", "factorized", "residual", "fsq", "lfq", "simvq")
BUILD = {
    "vq": qb.build_vq,
    "ema_vq": qb.build_ema_vq,
    "factorized": qb.build_factorized,
    "residual": qb.build_residual,
    "fsq": qb.build_fsq,
    "lfq": qb.build_lfq,
    "simvq": qb.build_simvq,
}

# (registered name, tiny config, expected codebook_size, expected num_codebooks)
CASES = {
    "vq": ("vq", qb.VQConfig(dim=8, codebook_size=16), 16, 1),
    "vq-factorised-cosine": (
        "vq",
        qb.VQConfig(dim=8, codebook_size=16, codebook_dim=4, use_cosine_sim=True, rotation_trick=True),
        16,
        1,
    ),
    "vq-kmeans-deadcode": (
        "vq",
        qb.VQConfig(dim=8, codebook_size=16, kmeans_init=True, kmeans_iters=2, threshold_ema_dead_code=1.0),
        16,
        1,
    ),
    "ema_vq": ("ema_vq", qb.EMAVQConfig(dim=8, codebook_size=16), 16, 1),
    "ema_vq-factorised-cosine-kmeans": (
        "ema_vq",
        qb.EMAVQConfig(dim=8, codebook_size=16, codebook_dim=4, use_cosine_sim=True, kmeans_init=True),
        16,
        1,
    ),
    "factorized": ("factorized", qb.FactorizedConfig(dim=8, codebook_size=16, codebook_dim=4), 16, 1),
    "factorized-entropy": (
        "factorized",
        qb.FactorizedConfig(dim=8, codebook_size=16, codebook_dim=4, entropy_loss_weight=0.1),
        16,
        1,
    ),
    "residual": ("residual", qb.ResidualConfig(dim=8, codebook_size=16, num_quantizers=3), 16, 3),
    "residual-factorised": (
        "residual",
        qb.ResidualConfig(dim=8, codebook_size=16, num_quantizers=2, codebook_dim=4),
        16,
        2,
    ),
    "fsq": ("fsq", qb.FSQConfig(levels=(3, 5), dim=8), 15, 1),
    "fsq-noproj-symmetric": ("fsq", qb.FSQConfig(levels=(2, 4, 4), preserve_symmetry=True), 32, 1),
    "lfq": ("lfq", qb.LFQConfig(dim=8, codebook_size=16), 16, 1),
    "lfq-bits": ("lfq", qb.LFQConfig(dim=5), 32, 1),
    "simvq": ("simvq", qb.SimVQConfig(dim=8, codebook_size=16), 16, 1),
    "simvq-straight-through": (
        "simvq",
        qb.SimVQConfig(dim=8, codebook_size=16, rotation_trick=False, frozen_codebook_dim=4),
        16,
        1,
    ),
}


def build(case: str, seed: int = 0) -> Quantizer:
    name, config, _, _ = CASES[case]
    torch.manual_seed(seed)
    return BUILD[name](config)


def latents(q: Quantizer, batch: int = 2, h: int = 4, w: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, q.dim, h, w, generator=g)
