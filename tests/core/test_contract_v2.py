"""Plugin contract v2 end to end: signature schemas, the step hook, component state, shared logits,
multi-scale discriminators, inference-only loading, and plugin bugs as bugs."""

from __future__ import annotations

import importlib
import json
import logging
import textwrap

import pytest
import stateful_plugin
import torch
from safetensors.torch import load_file

import vqtk
from vqtk import testing
from vqtk.errors import PluginError, RecipeError
from vqtk.recipe import merge
from vqtk.registry import Registry
from vqtk.io.checkpoint import load_checkpoint

STATEFUL = {
    "model": {"quantizer": {"type": "warmup_vq", "dim": 8, "codebook_size": 16, "warmup_steps": 2},
              "discriminator": {"type": "two_scale", "width": 4}},
    "loss": {"pixel": {"type": "ramped_l1", "ramp_steps": 3},
             "lecam": {"type": "lecam", "weight": 0.1}},
}


@pytest.fixture
def registry():
    return testing.registry_with(stateful_plugin)


# -- a signature is a schema ------------------------------------------------------------------------

def test_config_is_derived_from_the_signature(registry):
    spec = registry.get("quantizer", "warmup_vq")
    fields = {f.name: f for f in __import__("attrs").fields(spec.config)}
    assert list(fields) == ["dim", "codebook_size", "warmup_steps"]
    assert fields["codebook_size"].default == 16
    assert fields["dim"].metadata["vqtk_doc"] == "channels of the latents."
    assert spec.doc == "Nearest-code VQ whose commitment weight warms up over the first steps."
    ref = testing.structure_table(registry, "quantizer", "warmup_vq", {"dim": 4})
    assert ref.config.dim == 4 and ref.config.warmup_steps == 3


def test_signature_validators_and_types_report_every_problem(registry):
    with pytest.raises(RecipeError) as info:
        testing.structure_table(registry, "quantizer", "warmup_vq",
                                {"dim": 0, "codebook_size": "big", "warmup_steps": -1, "dims": 3})
    assert info.value.problems == [
        "dims: unknown key; did you mean 'dim'? (allowed: codebook_size, dim, warmup_steps)",
        'codebook_size: expected int, got "big"',
        "dim: must be > 0, got 0",
        "warmup_steps: must be >= 0, got -1",
    ]


@pytest.mark.parametrize("source, error", [
    ("def __init__(self, dim: int = 1): super().__init__()", "argument 'dim' of Bad must be keyword-only"),
    ("def __init__(self, *, dim=1): super().__init__()", "argument 'dim' has no type annotation"),
    ("def __init__(self, *, dim: int = 1, **extra: int): super().__init__()", "argument 'extra' of Bad must be"),
])
def test_signatures_that_cannot_be_schemas_are_refused_at_registration(source, error):
    namespace: dict = {}
    exec(textwrap.dedent(f"""
        from vqtk.interfaces import Quantizer
        class Bad(Quantizer):
            {source}
    """), namespace)

    class Plugin:
        @vqtk.hookimpl
        def vqtk_register_components(self, register):
            register("quantizer", "bad", namespace["Bad"])

    record = Registry().register_plugin(Plugin(), "bad")
    assert record.error and error in record.error, record.error


def test_component_and_explicit_config_are_exclusive():
    class Plugin:
        @vqtk.hookimpl
        def vqtk_register_components(self, register):
            register("quantizer", "q", stateful_plugin.WarmupQuantizer, config=object, build=print)

    record = Registry().register_plugin(Plugin(), "p")
    assert "give the component, or config= and build=, not both" in record.error


# -- the contract checks plugin authors use ---------------------------------------------------------

def test_testing_kit_checks_each_plugin_component(registry):
    testing.check_component(registry, "quantizer", "warmup_vq", {"dim": 8})
    disc = testing.check_component(registry, "discriminator", "two_scale", resolution=16)
    testing.check_component(registry, "loss", "ramped_l1")
    testing.check_component(registry, "loss", "lecam", discriminator=disc)


def test_testing_kit_catches_a_broken_contract(registry):
    q = stateful_plugin.WarmupQuantizer(dim=4, codebook_size=8)
    q.lookup = lambda indices: torch.zeros(1)  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match="quantizer: lookup returned shape"):
        testing.check_quantizer(q)


# -- lifecycle and state -----------------------------------------------------------------------------

def test_step_hook_sees_every_optimizer_step_once_with_gradient_accumulation(registry, tmp_path):
    recipe = testing.tiny_recipe(**merge(STATEFUL, {"train": {"steps": 3, "grad_accum": 2}}))
    trainer = testing.runs._trainer(recipe, tmp_path / "run", registry, resume=False)
    trainer.run()
    assert trainer.model.quantizer.seen_steps == [0, 1, 2]
    assert int(trainer.model.quantizer.training_calls) == 6  # two micro-batches per step
    pixel = next(e.loss for e in trainer.losses if e.name == "pixel")
    assert pixel.scale == 1.0 and pixel.updates == 6


def test_stateful_quantizer_discriminator_and_losses_resume_bit_exactly(registry, tmp_path):
    recipe = testing.tiny_recipe(**STATEFUL)
    tensors = testing.check_resume_exact(recipe, tmp_path, registry=registry, steps=4, stop_at=2)
    # the losses' own state is in the checkpoint next to the weights
    assert "loss.pixel.running_l1" in tensors
    assert {"loss.lecam.ema_real", "loss.lecam.ema_fake"} <= set(tensors)
    assert "discriminator.running_mean" in tensors
    ckpt = load_checkpoint(tmp_path / "resumed")
    assert ckpt.state_dict("model")["quantizer._extra_state"] == {"seen_steps": [0, 1, 2, 3]}
    assert ckpt.state_dict("loss.pixel")["_extra_state"] == {"updates": 4}


def test_a_fresh_start_differs_from_a_resume_without_state(registry, tmp_path):
    """Control: the loss's state matters, so the exact-resume test above would catch a lost buffer."""
    recipe = testing.tiny_recipe(**STATEFUL)
    trainer = testing.runs._trainer(recipe, tmp_path / "run", registry, resume=False)
    trainer.run()
    pixel = next(e.loss for e in trainer.losses if e.name == "pixel")
    assert not torch.equal(pixel.running_l1, torch.ones(()))


# -- shared logits and multi-scale discriminators ----------------------------------------------------

def test_discriminator_runs_once_per_phase_for_gan_and_lecam(registry, tmp_path):
    recipe = testing.tiny_recipe(**merge(STATEFUL, {"train": {"steps": 1}, "loss": {"gan": {"start_step": 0}}}))
    trainer = testing.runs._trainer(recipe, tmp_path / "run", registry, resume=False)
    calls: list[int] = []
    trainer.disc.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    batch = next(iter(trainer.data.train_set()))
    x = torch.stack([batch, batch]) if torch.is_tensor(batch) else torch.stack([batch[0], batch[0]])
    trainer.stream = None
    logs = trainer.train_step([x])
    assert len(calls) == 3  # generator phase: fake; discriminator phase: fake and real, shared by gan and lecam
    assert {"loss_d/gan", "loss_d/lecam", "lecam/ema_real"} <= set(logs)


def test_discriminator_side_regulariser_is_scaled_by_its_recipe_weight(registry, tmp_path):
    results = {}
    for weight in (0.0, 1000.0):
        recipe = testing.tiny_recipe(**merge(STATEFUL, {"train": {"steps": 2},
                                                        "loss": {"lecam": {"weight": weight}}}))
        trainer = testing.runs._trainer(recipe, tmp_path / f"w{weight}", registry, resume=False)
        trainer.run()
        results[weight] = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    assert any(not torch.equal(results[0.0][k], results[1000.0][k]) for k in results[0.0])


# -- inference needs only what inference builds -------------------------------------------------------

@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """``stateful_plugin`` installed as the pip distribution vqtk-stateful 1.0 (an entry point)."""
    site = tmp_path / "site"
    site.mkdir()
    dist = site / "vqtk_stateful-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vqtk-stateful\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[vqtk]\nstateful = stateful_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    registry = Registry()
    registry.load_entry_points(only=["builtins", "stateful"])
    assert registry.plugins["stateful"].distribution == "vqtk-stateful"
    return registry


def test_checkpoint_loads_without_its_training_only_plugin(installed_plugin, tmp_path, caplog):
    recipe = testing.tiny_recipe(loss={"pixel": {"type": "ramped_l1"}},
                                 model={"discriminator": {"type": "two_scale", "width": 4}},
                                 train={"steps": 1})
    trainer = testing.runs._trainer(recipe, tmp_path / "run", installed_plugin, resume=False)
    trainer.run()
    components = json.loads(load_checkpoint(tmp_path / "run").metadata["components"])
    assert components["loss.pixel"] == {"kind": "loss", "type": "ramped_l1", "plugin": "stateful",
                                        "distribution": "vqtk-stateful", "version": "1.0"}
    without = testing.registry_with()  # the plugin is uninstalled
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        model = vqtk.load(tmp_path / "run", device="cpu", registry=without)
    assert model.recipe.model.discriminator is None and "pixel" not in model.recipe.loss
    assert ("loss.pixel: loss 'ramped_l1' is not installed (plugin 'stateful' (pip install vqtk-stateful==1.0)); "
            "it is only needed for training, so it is left out") in caplog.text


def test_missing_inference_plugin_names_its_distribution(installed_plugin, tmp_path):
    recipe = testing.tiny_recipe(model={"quantizer": {"type": "warmup_vq", "dim": 8}}, train={"steps": 1})
    testing.runs._trainer(recipe, tmp_path / "run", installed_plugin, resume=False).run()
    with pytest.raises(vqtk.VqtkError) as info:
        vqtk.load(tmp_path / "run", device="cpu", registry=testing.registry_with())
    assert "model.quantizer.type: unknown quantizer 'warmup_vq'" in str(info.value)
    assert "(written with plugin 'stateful' (pip install vqtk-stateful==1.0))" in str(info.value)


# -- plugin bugs -----------------------------------------------------------------------------------

def test_exception_in_a_plugin_during_run_names_the_plugin(installed_plugin, use_registry, tmp_path, capsys):
    from vqtk.cli import main
    from vqtk.recipe import dump_toml

    use_registry(installed_plugin)
    recipe = tmp_path / "r.toml"
    recipe.write_text(dump_toml(testing.tiny_recipe(loss={"pixel": {"type": "ramped_l1"}}, train={"steps": 1})))
    stateful_plugin.FAIL_WITH = KeyError("oops")
    try:
        code = main(["run", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"])
    finally:
        stateful_plugin.FAIL_WITH = None
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and "KeyError: 'oops'" in err
    assert ("vqtk: internal error (the traceback above is a bug in plugin 'stateful' "
            "(pip distribution vqtk-stateful 1.0); report it to its authors)") in err


def test_a_loss_without_terms_is_a_plugin_bug(registry):
    class Empty(vqtk.Loss):
        """Does nothing."""

        def __init__(self):
            super().__init__()

    class Plugin:
        @vqtk.hookimpl
        def vqtk_register_components(self, register):
            register("loss", "empty", Empty)

    registry.register_plugin(Plugin(), "empty")
    from vqtk.build import build_losses
    from vqtk.errors import PluginBug
    from vqtk.recipe import recipe_from_dict

    recipe = recipe_from_dict(testing.tiny_recipe(loss={"x": {"type": "empty"}}), registry)
    with pytest.raises(PluginBug, match="loss.x: Empty overrides neither generator_loss nor discriminator_loss"):
        build_losses(recipe, registry)


def test_plugin_error_is_exported():
    assert issubclass(PluginError, vqtk.VqtkError)


# -- the assembler passes shared facts ----------------------------------------------------------------

def _prior_recipe(tmp_path, **prior):
    from vqtk.recipe import dump_toml

    recipe = testing.tiny_recipe(prior={"type": "gpt", "dim": 16, "depth": 1, "heads": 2, **prior},
                                 prior_train={"steps": 2, "batch_size": 2})
    path = tmp_path / "r.toml"
    path.write_text(dump_toml(recipe))
    return path


def test_prior_takes_codebook_and_grid_from_the_tokenizer(registry, use_registry, tmp_path, capsys):
    from vqtk.cli import main

    use_registry(registry)
    assert main(["check", str(_prior_recipe(tmp_path))]) == 0
    assert "prior (gpt): " in capsys.readouterr().out and "over (8, 8) grids of 32 codes"
    # repeating them consistently is fine
    assert main(["check", str(_prior_recipe(tmp_path, codebook_size=32, grid_size=[8, 8]))]) == 0


def test_prior_facts_that_disagree_name_both_places(registry, use_registry, tmp_path, capsys):
    from vqtk.cli import main

    use_registry(registry)
    capsys.readouterr()
    assert main(["check", str(_prior_recipe(tmp_path, codebook_size=64))]) == 2
    assert capsys.readouterr().err.strip() == (
        "vqtk: error: prior.codebook_size: 64 does not match the tokenizer's model.quantizer ('factorized') "
        "codebook_size (32); leave it out to take it from there")
    assert main(["check", str(_prior_recipe(tmp_path, grid_size=[4, 4]))]) == 2
    assert ("prior.grid_size: [4, 4] does not match the tokenizer's code grid for data.resolution 16 ([8, 8])"
            in capsys.readouterr().err)


# -- declared requirements -----------------------------------------------------------------------------

def test_a_data_source_without_resolution_is_refused_at_registration():
    from vqtk.interfaces import DataSource

    class NoResolution(DataSource):
        """Has no resolution argument."""

        def __init__(self, *, path: str = "x"):
            self.path = path

        def train_set(self):
            return []

        def eval_set(self):
            return []

    class Plugin:
        @vqtk.hookimpl
        def vqtk_register_components(self, register):
            register("data", "nores", NoResolution)

    record = Registry().register_plugin(Plugin(), "nores")
    assert "every data takes resolution; missing resolution" in record.error


def test_eval_data_path_uses_the_declared_folder_source(registry):
    from vqtk.evaluation.run import folder_source

    assert folder_source(registry) == "image_folder"
    with pytest.raises(vqtk.VqtkError, match="no installed data source reads a folder"):
        folder_source(Registry())


def test_a_quantizer_breaking_its_shape_only_in_training_is_named(registry, tmp_path):
    """The shape probe runs in eval mode; the contract is also checked on every call."""
    recipe = testing.tiny_recipe(model={"quantizer": {"type": "warmup_vq", "dim": 8}}, train={"steps": 1})
    trainer = testing.runs._trainer(recipe, tmp_path / "run", registry, resume=False)
    quantizer = trainer.model.quantizer
    honest = quantizer.quantize

    def cropped_in_training(z):
        out = honest(z)
        if quantizer.training:
            out.quantized = out.quantized[..., :-1]
        return out

    quantizer.quantize = cropped_in_training
    with pytest.raises(vqtk.VqtkError) as info:
        trainer.run()
    assert str(info.value) == ("model.quantizer (quantized): returned shape (2, 8, 8, 7), expected (2, 8, 8, 8) "
                               "(WarmupQuantizer.quantize in training mode)")
