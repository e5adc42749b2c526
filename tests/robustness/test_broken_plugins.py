"""Broken plugins: one that fails to import (or calls sys.exit) never stops the others; broken
config classes are refused at registration; components that return the wrong shapes are caught
by ``vqtk check`` with a message naming the part."""

from __future__ import annotations

import importlib
import textwrap

import attrs
import pytest
import toy_plugin
from robust_helpers import TINY, assert_clean_failure
from toy_plugin import TOY_RECIPE, EncoderConfig, QuantizerConfig, ToyDecoder, ToyDiscriminator, ToyEncoder, ToyQuantizer

import vqtk_builtins
from vqtk import hookimpl
from vqtk.interfaces import QuantizerOutput
from vqtk.registry import Registry


# -- plugins that fail to import ------------------------------------------------------------------

@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Three installed (entry-point) plugins that cannot load, next to the real built-ins."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "raises_on_import.py").write_text("import math\nmath.inverse = 1 / 0\n")
    (site / "exits_on_import.py").write_text(textwrap.dedent("""
        import argparse
        argparse.ArgumentParser(prog="oops").parse_args(["--no-such-flag"])  # a script, not a plugin
    """))
    (site / "good_extra.py").write_text(textwrap.dedent("""
        import attrs
        from vqtk import hookimpl
        from vqtk.config import positive

        @attrs.define(kw_only=True)
        class Cfg:
            factor: int = attrs.field(default=2, validator=positive)

        @hookimpl
        def vqtk_register_components(register):
            register("loss", "extra_l1", config=Cfg, build=lambda c: None, doc="loads fine")
    """))
    dist = site / "hostile_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[vqtk]\nraises = raises_on_import\nexits = exits_on_import\nmissing = no_such_module_anywhere\n"
        "extra = good_extra\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    registry = Registry()
    registry.load_entry_points(only=["builtins", "raises", "exits", "missing", "extra"])
    return registry


def test_plugins_that_fail_to_import_are_reported_and_the_rest_load(installed, use_registry, cli, capsys):
    registry = installed
    errors = {p.name: p.error for p in registry.failures()}
    assert errors == {
        "raises": "failed to import: ZeroDivisionError: division by zero",
        "exits": "failed to import: SystemExit: 2",
        "missing": "failed to import: ModuleNotFoundError: No module named 'no_such_module_anywhere'",
    }
    assert registry.plugins["builtins"].error is None and "fsq" in registry.names("quantizer")
    assert registry.plugins["extra"].components == [("loss", "extra_l1")]
    assert registry.plugins["extra"].version == "1.0"

    use_registry(registry)
    result = cli("plugins")
    assert result.code == 0
    assert "raises 1.0  [entry point raises_on_import (hostile-plugins)]\n  FAILED: failed to import: " \
           "ZeroDivisionError: division by zero" in result.out
    listing = cli("list", "loss")
    assert listing.code == 0 and "warning: plugin 'exits' failed to import: SystemExit: 2" in listing.out


def test_unknown_component_error_mentions_the_plugins_that_failed(installed, use_registry, cli, tmp_path):
    use_registry(installed)
    recipe = tmp_path / "toy.toml"
    recipe.write_text(TINY.replace('type = "factorized"', 'type = "fancy"'))
    result = cli("show", recipe)
    assert_clean_failure(result)
    assert len(result.errors) == 1, result.errors
    (line,) = result.errors
    assert line.startswith("model.quantizer.type: unknown quantizer 'fancy' available: ema_vq, factorized, fsq, ")
    # each failed plugin with the pip distribution that installed it
    assert line.endswith("plugins that failed to load: raises from pip distribution hostile-plugins (failed to "
                         "import: ZeroDivisionError: division by zero); exits from pip distribution hostile-plugins "
                         "(failed to import: SystemExit: 2); missing from pip distribution hostile-plugins (failed "
                         "to import: ModuleNotFoundError: No module named 'no_such_module_anywhere')"), line


# -- plugins that register broken config classes -----------------------------------------------

class NotAttrs:
    size: int = 3


@attrs.define(kw_only=True)
class HasTypeField:
    type: str = "x"


@attrs.define(kw_only=True)
class Unreadable:
    """A field type no recipe value can become."""

    callback: object = attrs.field(factory=object)
    pair: "int | str" = 1


def _plugin(components: dict):
    class Plugin:
        @hookimpl
        def vqtk_register_components(self, register):
            for (kind, name), (config, build) in components.items():
                register(kind, name, config=config, build=build)

    return Plugin()


@pytest.mark.parametrize("components, error", [
    ({("quantizer", "q"): (NotAttrs, lambda c: None)},
     "failed to register: PluginError: plugin 'bad': quantizer 'q': config must be an attrs class, got "),
    ({("quantizer", "q"): (HasTypeField, lambda c: None)},
     "failed to register: PluginError: plugin 'bad': quantizer 'q': config may not have a field named 'type'"),
    ({("quantizer", "q"): (QuantizerConfig, "not callable")},
     "failed to register: PluginError: plugin 'bad': quantizer 'q': build must be callable"),
    ({("codec", "q"): (QuantizerConfig, lambda c: None)},
     "failed to register: PluginError: plugin 'bad': unknown component kind 'codec' (kinds: "),
    ({("quantizer", "my-q"): (QuantizerConfig, lambda c: None)},
     "failed to register: PluginError: plugin 'bad': quantizer name 'my-q' must be an identifier"),
    ({("quantizer", "toy"): (QuantizerConfig, lambda c: None)},
     "duplicate names: quantizer 'toy' is registered by both plugin 'toy' and plugin 'bad'"),
])
def test_broken_registrations_are_refused_whole(toy_registry, components, error):
    record = toy_registry.register_plugin(_plugin(components), "bad")
    assert record.error.startswith(error), record.error
    assert record.components == [] and toy_registry.plugins["toy"].error is None


def test_plugin_whose_hook_calls_sys_exit_is_a_failed_plugin(toy_registry):
    class Exits:
        @hookimpl
        def vqtk_register_components(self, register):
            raise SystemExit("bye")

    assert toy_registry.register_plugin(Exits(), "exits").error == "failed to register: SystemExit: bye"
    assert "toy" in toy_registry.names("quantizer")


def test_config_field_of_a_type_recipes_cannot_hold(toy_registry, use_registry, cli, tmp_path):
    toy_registry.register_plugin(_plugin({("quantizer", "odd"): (Unreadable, lambda c: None)}), "odd")
    use_registry(toy_registry)
    recipe = tmp_path / "toy.toml"
    recipe.write_text(TOY_RECIPE.replace('[model.quantizer]\ntype = "toy"\ncodebook_size = 8',
                                         '[model.quantizer]\ntype = "odd"\ncallback = 1\npair = "a"'))
    result = cli("show", recipe)
    assert_clean_failure(result)
    # every such field at once, each at its own path
    assert result.errors == [
        "model.quantizer.callback: the component's config has a field of type object, which a recipe cannot hold "
        "(a bug in the plugin that registered it)",
        "model.quantizer.pair: the component's config has a field of type int | str, which a recipe cannot hold "
        "(a bug in the plugin that registered it)",
    ], result.errors


# -- components that return the wrong shapes ---------------------------------------------------

class CroppingQuantizer(ToyQuantizer):
    def quantize(self, z):
        out = super().quantize(z)
        return QuantizerOutput(quantized=out.quantized[..., :-1], indices=out.indices, loss=out.loss)


class FloatIndexQuantizer(ToyQuantizer):
    def quantize(self, z):
        out = super().quantize(z)
        return QuantizerOutput(quantized=out.quantized, indices=out.indices.float(), loss=out.loss)


class VectorLossQuantizer(ToyQuantizer):
    def quantize(self, z):
        out = super().quantize(z)
        return QuantizerOutput(quantized=out.quantized, indices=out.indices, loss=out.loss.expand(3))


class BadLookupQuantizer(ToyQuantizer):
    def lookup(self, indices):
        return super().lookup(indices).transpose(-1, -2)[..., :1]


class TupleQuantizer(ToyQuantizer):
    def forward(self, z):
        out = super().forward(z)
        return out.quantized, out.indices


class ExtraChannelEncoder(ToyEncoder):
    def forward(self, x):
        z = super().forward(x)
        return z.new_zeros(z.shape[0], z.shape[1] + 1, *z.shape[2:])


class HalfSizeDecoder(ToyDecoder):
    def forward(self, z):
        return super().forward(z)[..., ::2, ::2]


class CrashingDecoder(ToyDecoder):
    def forward(self, z):
        return self.conv_out(z.flatten(2))  # a 3-d input this conv cannot take


class FlatDiscriminator(ToyDiscriminator):
    def forward(self, x):
        return super().forward(x).flatten()


def _q(cls):
    return lambda c: cls(dim=c.dim, codebook_size=c.codebook_size)


def _e(cls):
    return lambda c: cls(**attrs.asdict(c))


EVIL = {
    ("quantizer", "cropping"): (QuantizerConfig, _q(CroppingQuantizer)),
    ("quantizer", "float_index"): (QuantizerConfig, _q(FloatIndexQuantizer)),
    ("quantizer", "vector_loss"): (QuantizerConfig, _q(VectorLossQuantizer)),
    ("quantizer", "bad_lookup"): (QuantizerConfig, _q(BadLookupQuantizer)),
    ("quantizer", "tuple_out"): (QuantizerConfig, _q(TupleQuantizer)),
    ("encoder", "extra_channel"): (EncoderConfig, _e(ExtraChannelEncoder)),
    ("decoder", "half_size"): (EncoderConfig, _e(HalfSizeDecoder)),
    ("decoder", "crashing"): (EncoderConfig, _e(CrashingDecoder)),
    ("discriminator", "flat"): (toy_plugin.DiscConfig, lambda c: FlatDiscriminator(channels=c.channels)),
}


@pytest.fixture
def evil(toy_registry, use_registry, tmp_path):
    record = toy_registry.register_plugin(_plugin(EVIL), "evil")
    assert record.error is None, record.error
    use_registry(toy_registry)
    path = tmp_path / "toy.toml"
    path.write_text(TOY_RECIPE + '[model.discriminator]\ntype = "toy"\n')
    return path


@pytest.mark.parametrize("override, error", [
    ("model.quantizer.type=cropping", "model.quantizer (quantized): returned shape (1, 4, 4, 3), expected (1, 4, 4, 4)"),
    ("model.quantizer.type=float_index", "model.quantizer (indices): dtype torch.float32, expected an integer dtype"),
    ("model.quantizer.type=vector_loss", "model.quantizer (loss): got (3,), expected a scalar tensor"),
    ("model.quantizer.type=bad_lookup", "model.quantizer (lookup): returned shape (1, 4, 4, 1), expected (1, 4, 4, 4)"),
    ("model.quantizer.type=tuple_out", "model.quantizer: returned a tuple, expected a QuantizerOutput"),
    ("model.encoder.type=extra_channel", "model.encoder: returned shape (1, 5, 4, 4), expected (1, 4, 4, 4)"),
    ("model.decoder.type=half_size", "model.decoder: returned shape (1, 3, 8, 8), expected (1, 3, 16, 16)"),
    ("model.discriminator.type=flat", "model.discriminator: returned shape (64,), expected (batch, ...)"),
])
def test_check_names_the_part_with_the_wrong_shape(evil, cli, override, error):
    result = cli("check", evil, override)
    assert_clean_failure(result)
    assert len(result.errors) == 1 and result.errors[0].startswith(error), result.errors


def test_an_exception_inside_a_plugin_is_a_bug_with_its_traceback(evil, cli):
    """A plugin's forward that raises (any exception type) is exit 1, traceback kept, plugin named."""
    result = cli("check", evil, "model.decoder.type=crashing")
    assert result.code == 1, result.err
    assert "Traceback" in result.err and "RuntimeError" in result.err
    assert ("model.decoder: raised RuntimeError on a (1, 4, 4, 4) input: Given transposed=1, weight of size "
            "[4, 3, 4, 4], expected input[1, 1, 4, 16] to have 4 channels") in result.err
    assert "[bug in plugin 'evil']" in result.err
    assert "report it to its authors" in result.err


def test_run_names_the_part_with_the_wrong_shape_before_training(evil, cli, tmp_path):
    out = tmp_path / "run"
    result = cli("run", evil, "--out", out, "--no-progress", "model.decoder.type=half_size")
    assert_clean_failure(result)
    assert result.errors == ["model.decoder: returned shape (1, 3, 8, 8), expected (1, 3, 16, 16)"]
    assert not (out / "checkpoints").exists()


def test_builtins_registration_is_unaffected_by_a_broken_neighbour():
    registry = Registry()
    registry.register_plugin(_plugin({("quantizer", "q"): (NotAttrs, lambda c: None)}), "bad")
    registry.register_plugin(vqtk_builtins, "builtins")
    assert registry.plugins["builtins"].error is None and "q" not in registry.names("quantizer")
