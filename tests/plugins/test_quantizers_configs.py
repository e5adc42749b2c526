"""The built-in quantizers' configs: the registry, defaults, recipe tables and validation messages."""

from __future__ import annotations

import logging
import math

import attrs
import pytest
import torch
from quantizer_cases import BUILD, CASES, NAMES

import vqtk_builtins
from vqtk.errors import VqtkError
from vqtk.interfaces import Quantizer
from vqtk.recipe.converter import RecipeConverter
from vqtk.registry import Registry
from vqtk_builtins.quantizers import builders as qb

pytestmark = pytest.mark.usefixtures("one_thread")


# -- registry ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry()
    reg.register_plugin(vqtk_builtins, "builtins")
    return reg


def test_every_quantizer_is_registered_and_builds_through_the_registry(registry):
    assert set(NAMES) <= set(registry.names("quantizer"))
    for case, (name, config, size, q_count) in CASES.items():
        spec = registry.get("quantizer", name)
        assert spec.config is type(config)
        assert spec.doc, name
        q = spec.create(config)
        assert isinstance(q, Quantizer), case
        dim = config.dim or (len(config.levels) if name == "fsq" else int(math.log2(size)))
        assert (q.dim, q.codebook_size, q.num_codebooks) == (dim, size, q_count)


def test_default_configs_build():
    # Defaults only (LFQ needs a size or a number of bits).
    for name in NAMES:
        config = qb.LFQConfig(codebook_size=1024) if name == "lfq" else type(CASES[name][1])()
        assert BUILD[name](config).codebook_size >= 2
    assert qb.FactorizedConfig().codebook_size == 16384 and qb.FactorizedConfig().codebook_dim == 8
    assert qb.VQConfig().beta == 0.25 and qb.FSQConfig().levels == (8, 5, 5, 5)


def test_recipe_table_structures_into_config(registry):
    converter = RecipeConverter(registry)
    config = converter.structure({"levels": [4, 4, 4], "dim": 16}, qb.FSQConfig)
    assert config == qb.FSQConfig(levels=(4, 4, 4), dim=16)
    with pytest.raises(VqtkError, match=r"levels: \[0\] must be >= 2, got 1"):
        converter.structure({"levels": [1, 5]}, qb.FSQConfig)


# -- config validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: qb.VQConfig(codebook_size=0), "must be > 0, got 0"),
        (lambda: qb.VQConfig(dim=-1), "must be > 0, got -1"),
        (lambda: qb.VQConfig(beta=-0.1), "must be >= 0, got -0.1"),
        (lambda: qb.VQConfig(dim=8, codebook_dim=16), r"codebook_dim \(16\) must be <= dim \(8\)"),
        (lambda: qb.VQConfig(kmeans_iters=0), "must be > 0"),
        (lambda: qb.EMAVQConfig(decay=1.0), "strictly between 0 and 1, got 1.0"),
        (lambda: qb.EMAVQConfig(decay=0.0), "strictly between 0 and 1"),
        (lambda: qb.EMAVQConfig(eps=0.0), "must be > 0"),
        (lambda: qb.EMAVQConfig(threshold_ema_dead_code=-1.0), "must be >= 0"),
        (lambda: qb.FactorizedConfig(dim=4), r"codebook_dim \(8\) must be <= dim \(4\)"),
        (lambda: qb.FactorizedConfig(entropy_temperature=0.0), "must be > 0"),
        (lambda: qb.ResidualConfig(num_quantizers=0), "must be > 0"),
        (lambda: qb.FSQConfig(levels=()), "must not be empty"),
        (lambda: qb.FSQConfig(levels=(8, 1)), r"\[1\] must be >= 2, got 1"),
        (lambda: qb.FSQConfig(levels=(2, 5)), "levels of 2 need preserve_symmetry = true"),
        (lambda: qb.FSQConfig(levels=(8,) * 7), "2097152 codes, more than the 1048576 supported"),
        (lambda: qb.LFQConfig(codebook_size=1000), r"power of two >= 2, got 1000 \(e.g. 1024\)"),
        (lambda: qb.LFQConfig(codebook_size=1), "power of two >= 2"),
        (lambda: qb.LFQConfig(), "set codebook_size .* or dim"),
        (lambda: qb.LFQConfig(dim=32), r"2 \*\* dim \(32 bits\) is more than"),
        (lambda: qb.LFQConfig(codebook_size=16, entropy_loss_weight=-1.0), "must be >= 0"),
        (lambda: qb.SimVQConfig(frozen_codebook_dim=0), "must be > 0"),
    ],
)
def test_config_errors_have_messages(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_configs_are_toml_friendly_and_never_name_a_field_type():
    for name in NAMES:
        cls = type(CASES[name][1])
        assert cls.__doc__.strip(), name
        for field in attrs.fields(cls):
            assert field.name != "type"
            t = field.type
            text = t if isinstance(t, str) else repr(t)
            assert any(k in text for k in ("int", "float", "bool", "str")), (name, field.name, text)


def test_sync_codebook_without_distributed_is_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        q = qb.build_ema_vq(qb.EMAVQConfig(dim=4, codebook_size=8, sync_codebook=True))
    assert "sync_codebook = true ignored" in caplog.text
    assert q.vq._codebook.use_ddp is False
    q(torch.randn(1, 4, 2, 2))  # runs without touching torch.distributed
    assert math.isfinite(q(torch.randn(1, 4, 2, 2)).loss.item())
