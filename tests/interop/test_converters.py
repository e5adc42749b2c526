"""Converters are plugins: the registry's converter seam, ``vqtk convert NAME`` / listing, and ``vqtk.load``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import attrs
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import vqtk
from taming_fixtures import run_cli
from toy_converter import SUFFIX, ImportOnly, ToyConverter, converter_plugin, write_toyvq
from toy_plugin import TOY_RECIPE
from vqtk.build import build_vqgan
from vqtk.errors import PluginBug, PluginError, VqtkError
from vqtk.interfaces.converter import Converter, option, option_specs
from vqtk.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def toy_with_converter(toy_registry, use_registry):
    """The toy components plus the third-party ``toyvq`` converter, also as ``default_registry()``."""
    toy_registry.register_plugin(converter_plugin(ToyConverter(), ImportOnly()), "toyconv")
    return use_registry(toy_registry)


@pytest.fixture
def toy_file(tmp_path, toy_registry):
    """A ``.toyvq`` file of a randomly initialised toy tokenizer, and that model."""
    (tmp_path / "toy.toml").write_text(TOY_RECIPE)
    recipe, _ = load_recipe(tmp_path / "toy.toml", [], toy_registry)
    torch.manual_seed(0)
    model = build_vqgan(recipe, toy_registry)
    return write_toyvq(tmp_path / f"model{SUFFIX}", model, TOY_RECIPE), model


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


# -- the registry --------------------------------------------------------------------------


def test_builtin_taming_converter_is_registered(builtins_registry):
    assert [s.name for s in builtins_registry.converters()] == ["llamagen", "taming", "var"]
    spec = builtins_registry.converter("taming")
    assert (spec.name, spec.plugin, spec.converter.can_export) == ("taming", "builtins", True)
    assert spec.doc == "taming-transformers VQGAN (VQModel) checkpoints <-> vqtk checkpoints (same codes and pixels)."
    assert builtins_registry.converter("taming") is spec
    assert builtins_registry.plugins["builtins"].converters == ["taming", "llamagen", "var"]
    assert [o.flag for o in option_specs(spec.converter.import_options)] == ["--config", "--resolution"]
    assert [o.flag for o in option_specs(spec.converter.export_options)] == ["--config-out", "--no-discriminator"]


def test_unknown_converter_names_the_available_ones_and_the_closest(builtins_registry):
    with pytest.raises(VqtkError, match=r"^unknown converter 'tamin'; did you mean 'taming'\? available: llamagen, taming, var$"):
        builtins_registry.converter("tamin")


def test_duplicate_converter_name_is_refused_naming_both_plugins(builtins_registry):
    def components(register):
        register("loss", "other_l1", config=attrs.make_class("C", {}), build=lambda c: None)

    class Taming(ImportOnly):
        """Another taming."""

        name = "taming"

    record = builtins_registry.register_plugin(converter_plugin(Taming(), components=components), "other")
    assert record.error == "duplicate names: converter 'taming' is registered by both plugin 'builtins' and plugin 'other'"
    assert "other_l1" not in builtins_registry.names("loss")  # all or nothing
    with pytest.raises(PluginError, match="converter 'taming' is registered by both plugin 'builtins' and plugin 'other'"):
        builtins_registry.converter("taming")
    twice = builtins_registry.register_plugin(converter_plugin(ToyConverter(), ToyConverter()), "twice")
    assert twice.error == "duplicate names: converter 'toyvq' is registered by both plugin 'twice' and plugin 'twice'"
    assert [s.name for s in builtins_registry.converters()] == ["llamagen", "taming", "var"]


def test_failing_converter_hook_is_recorded_and_the_others_still_load(toy_registry):
    mod = converter_plugin()

    def boom(register):
        raise RuntimeError("kaboom")

    mod.vqtk_register_converters = vqtk.hookimpl(boom)
    record = toy_registry.register_plugin(mod, "broken")
    assert record.error == "failed to register: RuntimeError: kaboom"
    assert toy_registry.register_plugin(converter_plugin(ToyConverter()), "good").error is None
    assert [s.name for s in toy_registry.converters()] == ["toyvq"]
    with pytest.raises(VqtkError, match=r"available: toyvq; plugins that failed to load: broken \(failed to register"):
        toy_registry.converter("nope")


@attrs.frozen
class _ListOption:
    sizes: list = option(help="not a flag type")


@attrs.frozen
class _Undeclared:
    level: int = 1


@pytest.mark.parametrize("converter, message", [
    (object(), "converter <object object at"),
    (type("Upper", (ImportOnly,), {"name": "Bad"})(), "converter name 'Bad' must be lowercase letters"),
    (type("To", (ImportOnly,), {"name": "to-x"})(), "converter name 'to-x' must be lowercase letters"),
    (type("L", (ImportOnly,), {"name": "l", "import_options": _ListOption})(),
     "converter 'l': import_options: _ListOption.sizes: option type list is not supported"),
    (type("U", (ImportOnly,), {"name": "u", "export_options": _Undeclared})(),
     "converter 'u': export_options: _Undeclared.level: declare it with vqtk.interfaces.converter.option"),
])
def test_bad_converter_registrations_are_plugin_errors(toy_registry, converter, message):
    record = toy_registry.register_plugin(converter_plugin(converter), "bad")
    assert record.error.startswith("failed to register: PluginError: plugin 'bad': ")
    assert message in record.error
    assert toy_registry.converters() == []


def test_a_file_two_converters_recognise_is_refused(toy_registry, toy_file):
    class Greedy(ImportOnly):
        name = "greedy"

        def recognizes(self, path):
            return True

    toy_registry.register_plugin(converter_plugin(ToyConverter(), Greedy()), "two")
    path, _ = toy_file
    with pytest.raises(VqtkError, match=r"recognised by several converters \(greedy, toyvq\); convert it with"):
        vqtk.load(path, registry=toy_registry)


def test_a_converter_whose_recognizes_raises_is_a_plugin_bug(toy_registry, toy_file):
    class Broken(ImportOnly):
        name = "broken"

        def recognizes(self, path):
            raise KeyError("oops")

    toy_registry.register_plugin(converter_plugin(Broken()), "brk")
    with pytest.raises(PluginBug, match=r"converter 'broken': recognizes\(.*\) raised KeyError: 'oops' "
                                        r"\[bug in plugin 'brk'\]"):
        toy_registry.converter_for(toy_file[0])


# -- vqtk.load -----------------------------------------------------------------------------


def test_vqtk_load_reads_a_file_a_third_party_converter_recognises(toy_with_converter, toy_file):
    path, model = toy_file
    loaded = vqtk.load(path, device="cpu")
    assert not loaded.training and loaded.recipe.model.encoder.type == "toy"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_vqtk_load_of_a_file_no_converter_recognises_says_so(toy_with_converter, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(VqtkError, match=r"weights.bin: .*; no converter recognises this file either "
                                        r"\(converters: import_only, toyvq\)$"):
        vqtk.load(tmp_path / "weights.bin")


def test_the_core_imports_no_converter():
    code = ("import sys, vqtk, vqtk.cli, vqtk.cli.convert_cmd, vqtk.pretrained; "
            "print(sorted(m for m in sys.modules if m.startswith(('vqtk_builtins', 'vqtk.interop'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert not (ROOT / "vqtk" / "interop").exists()


# -- vqtk convert --------------------------------------------------------------------------


def test_convert_alone_or_with_list_lists_the_converters(toy_with_converter, capsys):
    for argv in (["convert"], ["convert", "--list"]):
        assert run_cli(argv) == 0
        assert _lines(capsys.readouterr().out) == [
            "import_only  toyconv  import_only      Imports nothing useful (test only).",
            "toyvq        toyconv  toyvq, to-toyvq  Toy safetensors tokenizers (.toyvq) <-> vqtk checkpoints "
            "(test only).",
        ]


def test_convert_list_shows_the_builtins_and_broken_plugins(builtins_registry, use_registry, capsys):
    mod = converter_plugin()
    mod.vqtk_register_converters = vqtk.hookimpl(lambda register: register("not a converter"))
    builtins_registry.register_plugin(mod, "broken")
    use_registry(builtins_registry)
    assert run_cli(["convert"]) == 0
    lines = _lines(capsys.readouterr().out)
    assert lines[0].startswith("llamagen  builtins  llamagen, to-llamagen  LlamaGen VQ tokenizer (VQ-16, VQ-8)")
    assert lines[1].startswith("taming    builtins  taming, to-taming      taming-transformers VQGAN (VQModel)")
    assert lines[2].startswith("var       builtins  var, to-var            VAR's multi-scale VQVAE checkpoints")
    assert lines[3].startswith("warning: plugin 'broken' failed to register: PluginError: plugin 'broken': converter")


def test_unknown_converter_is_one_line_exit_2(toy_with_converter, capsys):
    assert run_cli(["convert", "toyv", "x", "--out", "y"]) == 2
    assert _lines(capsys.readouterr().err) == [
        "vqtk: error: unknown converter 'toyv'; did you mean 'toyvq'? available: import_only, toyvq"]
    assert run_cli(["convert", "to-import_only", "x", "--out", "y"]) == 2
    assert _lines(capsys.readouterr().err) == [
        "vqtk: error: converter 'import_only' (plugin 'toyconv') only imports: there is no to-import_only"]


def test_third_party_converter_runs_through_vqtk_convert(toy_with_converter, toy_file, tmp_path, capsys):
    path, model = toy_file
    out = tmp_path / "conv"
    assert run_cli(["convert", "toyvq", str(path), "--scale", "2", "--note", "hi", "--out", str(out)]) == 0
    assert _lines(capsys.readouterr().out) == [f"toyvq: {path.name}", f"-> {out / 'checkpoints' / 'step_000000'}"]
    loaded = vqtk.load(out, device="cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value * 2), key

    back = tmp_path / f"back{SUFFIX}"
    assert run_cli(["convert", "to-toyvq", str(out), "--half", "--tag", "b", "--out", str(back)]) == 0
    assert _lines(capsys.readouterr().out)[0].startswith(f"-> {back} (")
    tensors = load_file(str(back))
    assert tensors["net/encoder.conv.weight"].dtype == torch.float16
    with safe_open(str(back), framework="pt") as f:
        assert f.metadata()["tag"] == "b"

    assert run_cli(["convert", "from-toyvq", str(path), "--scale", "0", "--out", str(tmp_path / "z")]) == 2
    assert _lines(capsys.readouterr().err) == ["vqtk: error: --scale: must be > 0, got 0.0"]
    assert run_cli(["convert", "to-toyvq", str(out), "--tag", "c", "--out", str(back)]) == 2
    assert "argument --tag: invalid choice: 'c'" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_declared_options_become_flags():
    @attrs.frozen
    class Options:
        out_dir: Path = option(attrs.NOTHING, metavar="DIR", help="required")
        fast: bool = option(False, help="go fast")
        keep: bool = option(True, help="drop it")
        mode: Literal["a", "b"] = option("a", help="a or b")

    specs = {o.name: o for o in option_specs(Options)}
    assert (specs["out_dir"].flag, specs["out_dir"].type, specs["out_dir"].required) == ("--out-dir", Path, True)
    assert (specs["fast"].flag, specs["keep"].flag) == ("--fast", "--no-keep")
    assert (specs["mode"].type, specs["mode"].choices) == (str, ("a", "b"))
    assert isinstance(ToyConverter(), Converter) and ImportOnly().can_export is False
