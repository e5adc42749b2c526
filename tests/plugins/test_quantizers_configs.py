"""The built-in quantizers' configs, derived from their signatures: the registry, defaults, recipe tables,
validation messages and cross-field checks."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import typing

import attrs
import pytest
import torch
from quantizer_cases import CASES, NAMES, config, create, spec

from vqtk.errors import VqtkError
from vqtk.interfaces import Quantizer
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import QuantizerRef
from vqtk.registry.signature import field_doc

pytestmark = pytest.mark.usefixtures("one_thread")


# -- registry ----------------------------------------------------------------------------


def test_every_quantizer_is_registered_and_builds_through_the_registry(builtins_registry):
    assert set(NAMES) <= set(builtins_registry.names("quantizer"))
    for case, (name, options, size, q_count) in CASES.items():
        spec = builtins_registry.get("quantizer", name)
        assert spec.target is not None and spec.doc, name  # the signature is the schema
        q = spec.create(spec.config(**options))
        assert isinstance(q, Quantizer), case
        dim = options.get("dim") or (len(options["levels"]) if name == "fsq" else int(math.log2(size)))
        assert (q.dim, q.codebook_size, q.num_codebooks) == (dim, size, q_count)


def test_registering_does_not_import_the_quantizer_library():
    """``vqtk list`` imports every quantizer module; vector_quantize_pytorch (+1.4 s) waits for a build."""
    code = (
        "import sys, vqtk_builtins\n"
        "from vqtk.registry import Registry\n"
        "r = Registry(); r.register_plugin(vqtk_builtins, 'builtins')\n"
        "assert not r.failures(), r.failures()\n"
        "assert 'gumbel' in r.names('quantizer')\n"
        "print('vector_quantize_pytorch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_default_configs_build():
    # Defaults only (LFQ needs a size or a number of bits).
    for name in NAMES:
        options = {"codebook_size": 1024} if name == "lfq" else {}
        assert create(name, **options).codebook_size >= 2
    factorized = config("factorized")
    assert (factorized.codebook_size, factorized.codebook_dim) == (16384, 8)
    assert factorized.use_cosine_sim and factorized.threshold_ema_dead_code == 2.0
    vq = config("vq")
    assert (vq.dim, vq.codebook_size, vq.beta, vq.threshold_ema_dead_code) == (256, 1024, 0.25, 0.0)
    assert not vq.use_cosine_sim and vq.codebook_dim is None
    assert config("fsq").levels == (8, 5, 5, 5)
    assert config("ema_vq").num_quantizers == 1 and config("residual").num_quantizers == 4
    assert (config("ema_vq").decay, config("ema_vq").threshold_ema_dead_code) == (0.99, 2.0)


def test_variants_share_one_signature_with_their_own_defaults():
    """factorized and residual are partials of vq's and ema_vq's classes: the same fields, other defaults."""
    for variant, base in (("factorized", "vq"), ("residual", "ema_vq")):
        fields = [f.name for f in attrs.fields(spec(variant).config)]
        assert fields == [f.name for f in attrs.fields(spec(base).config)]
        assert spec(variant).doc != spec(base).doc
    assert type(create("factorized", dim=8, codebook_size=16)) is type(create("vq", dim=8, codebook_size=16))


def test_every_field_has_a_doc_from_the_docstring():
    for name in NAMES:
        for field in attrs.fields(spec(name).config):
            assert field_doc(field), (name, field.name)


def test_recipe_table_structures_into_config(builtins_registry):
    converter = RecipeConverter(builtins_registry)
    fsq = spec("fsq").config
    assert converter.structure({"levels": [4, 4, 4], "dim": 16}, fsq) == fsq(levels=(4, 4, 4), dim=16)
    with pytest.raises(VqtkError, match=r"levels: \[0\] must be >= 2, got 1"):
        converter.structure({"levels": [1, 5]}, fsq)


@pytest.mark.parametrize(
    "table,message",
    [
        ({"type": "vq", "dim": 8, "codebook_dim": 16},
         r"^\(recipe\): codebook_dim \(16\) must be <= dim \(8\): the codebook is a low-dimensional"),
        ({"type": "factorized", "dim": 4}, r"^\(recipe\): codebook_dim \(8\) must be <= dim \(4\)"),
        ({"type": "fsq", "levels": [2, 5]}, r"^\(recipe\): levels of 2 need preserve_symmetry = true"),
        ({"type": "lfq"}, r"^\(recipe\): set codebook_size \(a power of two\) or dim"),
        ({"type": "gumbel", "temperature": 0.4}, r"^\(recipe\): min_temperature \(0.5\) must be <= temperature"),
        # a field's own validator first: the cross-field check waits for valid fields
        ({"type": "vq", "dim": 0, "codebook_dim": 16}, r"^dim: must be > 0, got 0$"),
    ],
)
def test_cross_field_checks_are_recipe_errors(builtins_registry, table, message):
    with pytest.raises(VqtkError, match=message) as info:
        RecipeConverter(builtins_registry).structure(table, QuantizerRef)
    assert len(info.value.problems) == 1, info.value.problems


# -- config validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("vq", dict(codebook_size=0), "must be > 0, got 0"),
        ("vq", dict(dim=-1), "must be > 0, got -1"),
        ("vq", dict(beta=-0.1), "must be >= 0, got -0.1"),
        ("vq", dict(dim=8, codebook_dim=16), r"codebook_dim \(16\) must be <= dim \(8\)"),
        ("vq", dict(kmeans_iters=0), "must be > 0"),
        ("vq", dict(dead_code_decay=1.0), "strictly between 0 and 1, got 1.0"),
        ("ema_vq", dict(decay=1.0), "strictly between 0 and 1, got 1.0"),
        ("ema_vq", dict(decay=0.0), "strictly between 0 and 1"),
        ("ema_vq", dict(eps=0.0), "must be > 0"),
        ("ema_vq", dict(threshold_ema_dead_code=-1.0), "must be >= 0"),
        ("ema_vq", dict(dim=8, codebook_dim=16), r"codebook_dim \(16\) must be <= dim \(8\)"),
        ("factorized", dict(dim=4), r"codebook_dim \(8\) must be <= dim \(4\)"),
        ("factorized", dict(entropy_temperature=0.0), "must be > 0"),
        ("residual", dict(num_quantizers=0), "must be > 0"),
        ("residual", dict(dim=4, codebook_dim=8), r"codebook_dim \(8\) must be <= dim \(4\)"),
        ("fsq", dict(levels=()), "must not be empty"),
        ("fsq", dict(levels=(8, 1)), r"\[1\] must be >= 2, got 1"),
        ("fsq", dict(levels=(2, 5)), "levels of 2 need preserve_symmetry = true"),
        ("fsq", dict(levels=(8,) * 7), "2097152 codes, more than the 1048576 supported"),
        ("lfq", dict(codebook_size=1000), r"power of two >= 2, got 1000 \(e.g. 1024\)"),
        ("lfq", dict(codebook_size=1), "power of two >= 2"),
        ("lfq", dict(), "set codebook_size .* or dim"),
        ("lfq", dict(dim=32), r"2 \*\* dim \(32 bits\) is more than"),
        ("lfq", dict(codebook_size=2**21), r"codebook_size is more than the 1048576 codes supported"),
        ("lfq", dict(codebook_size=16, entropy_loss_weight=-1.0), "must be >= 0"),
        ("simvq", dict(frozen_codebook_dim=0), "must be > 0"),
        ("gumbel", dict(temperature=0.0), "must be > 0, got 0.0"),
        ("gumbel", dict(min_temperature=-1.0), "must be > 0"),
        ("gumbel", dict(anneal_rate=-1e-3), "must be >= 0"),
        ("gumbel", dict(kl_weight=-1.0), "must be >= 0"),
        ("gumbel", dict(temperature=1.0, min_temperature=2.0), r"min_temperature \(2.0\) must be <= temperature"),
    ],
)
def test_config_errors_have_messages(name, options, message):
    with pytest.raises(ValueError, match=message):
        config(name, **options)


def test_configs_are_toml_friendly_and_never_name_a_field_type():
    for name in NAMES:
        cls = spec(name).config
        assert cls.__doc__.strip(), name
        for field in attrs.fields(cls):
            assert field.name != "type"
            t = field.type
            if typing.get_origin(t) is typing.Literal:  # a choice among strings (entropy_penalty)
                assert all(isinstance(a, str) for a in typing.get_args(t)), (name, field.name, t)
                continue
            text = t if isinstance(t, str) else repr(t)
            assert any(k in text for k in ("int", "float", "bool", "str")), (name, field.name, text)


@pytest.mark.parametrize("name", ["ema_vq", "residual", "vq"])
def test_sync_codebook_without_distributed_is_dropped_with_a_warning(name, caplog):
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        q = create(name, dim=4, codebook_size=8, sync_codebook=True)
    assert "sync_codebook = true ignored" in caplog.text
    codebooks = [layer._codebook for layer in q.rvq.layers] if name == "residual" else [q.vq._codebook]
    assert all(cb.use_ddp is False for cb in codebooks)
    q(torch.randn(1, 4, 2, 2))  # runs without touching torch.distributed
    assert math.isfinite(q(torch.randn(1, 4, 2, 2)).loss.item())
