"""Every built-in component passes the same contract checks that plugin authors run (vqtk.testing)."""

from __future__ import annotations

import pytest

from vqtk import testing

ARCH = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8], "z_channels": 8,
        "resolution": 16}
PRIOR = {"codebook_size": 16, "grid_size": [4, 4], "dim": 32, "depth": 1, "heads": 2}

CASES = [
    ("encoder", "taming", ARCH, {"resolution": 16}),
    ("decoder", "taming", ARCH, {"grid": (8, 8)}),
    ("quantizer", "vq", {"dim": 8, "codebook_size": 16}, {}),
    ("quantizer", "ema_vq", {"dim": 8, "codebook_size": 16}, {}),
    ("quantizer", "factorized", {"dim": 8, "codebook_size": 32, "codebook_dim": 4}, {}),
    ("quantizer", "residual", {"dim": 8, "codebook_size": 16, "num_quantizers": 2}, {}),
    ("quantizer", "fsq", {"levels": [5, 5, 5]}, {}),
    ("quantizer", "lfq", {"dim": 4}, {}),
    ("quantizer", "simvq", {"dim": 8, "codebook_size": 16}, {}),
    ("quantizer", "gumbel", {"dim": 8, "codebook_size": 16}, {}),
    ("quantizer", "ibq", {"dim": 8, "codebook_size": 16}, {}),
    ("quantizer", "msvq", {"dim": 8, "codebook_size": 16, "scales": [1, 2, 4]}, {}),
    ("discriminator", "patchgan", {"ndf": 8, "n_layers": 2}, {"resolution": 32}),
    ("discriminator", "multiscale_patchgan", {"ndf": 8, "n_layers": 1, "num_scales": 2}, {"resolution": 32}),
    ("discriminator", "stylegan", {"resolution": 16, "channels": 8, "max_channels": 16}, {"resolution": 16}),
    ("loss", "l1", {}, {}),
    ("loss", "l2", {}, {}),
    ("loss", "quantizer", {}, {}),
    ("loss", "lpips", {"pretrained_backbone": False}, {}),
    ("prior", "gpt", PRIOR, {}),
    ("prior", "maskgit", PRIOR, {}),
    ("prior", "rq", {**PRIOR, "num_codebooks": 2, "depth_layers": 1}, {}),
    ("prior", "var", {**PRIOR, "scales": [[1, 1], [2, 2], [4, 4]]}, {}),
]


@pytest.mark.parametrize("kind, name, table, options", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_builtin_passes_the_contract(builtins_registry, kind, name, table, options):
    testing.check_component(builtins_registry, kind, name, table, **options)


@pytest.mark.parametrize("name, table", [("gan", {"start_step": 0}), ("gan", {"r1_gamma": 1.0}), ("lecam", {})])
@pytest.mark.parametrize("disc", ["patchgan", "multiscale_patchgan"])
def test_builtin_discriminator_losses_pass_the_contract(builtins_registry, name, table, disc):
    d = testing.check_component(builtins_registry, "discriminator", disc, {"ndf": 8, "n_layers": 1}, resolution=16)
    testing.check_component(builtins_registry, "loss", name, table, discriminator=d)


def test_every_builtin_is_covered(builtins_registry):
    covered = {(k, n) for k, n, _, _ in CASES} | {("loss", "gan"), ("loss", "lecam")}
    registered = {(s.kind, s.name) for s in builtins_registry.components() if s.kind != "data"}
    assert registered == covered
