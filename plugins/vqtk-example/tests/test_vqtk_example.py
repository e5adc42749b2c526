"""The example plugin's own tests: vqtk's contract checks, the way a third-party plugin writes them."""

import pytest
import torch

from vqtk import testing
from vqtk.errors import RecipeError


def test_charbonnier_contract(registry):
    terms = testing.check_component(registry, "loss", "charbonnier", {"eps": 0.5})
    assert terms is not None


def test_charbonnier_rejects_a_bad_eps(registry):
    with pytest.raises(RecipeError, match="eps: must be > 0, got 0.0"):
        testing.structure_table(registry, "loss", "charbonnier", {"eps": 0.0})


def test_drift_contract_reads_the_shared_logits(registry):
    disc = testing.check_component(registry, "discriminator", "patchgan", {"ndf": 8, "n_layers": 1}, resolution=16)
    calls = []
    disc.register_forward_hook(lambda *args: calls.append(1))
    testing.check_component(registry, "loss", "drift", discriminator=disc)
    assert len(calls) == 1  # the real images only: the fake ones are not needed by this term


def test_drift_ramps_in_with_the_step(registry):
    drift = testing.structure_table(registry, "loss", "drift", {"warmup_steps": 4})
    loss = registry.get("loss", "drift").create(drift.config)
    loss.on_step(1, 10)
    assert loss.strength == 0.25
    loss.on_step(8, 10)
    assert loss.strength == 1.0


def test_run_with_drift_and_a_gan_resumes_exactly(registry, tmp_path):
    recipe = testing.tiny_recipe(loss={"drift": {"type": "drift", "weight": 0.001, "warmup_steps": 2},
                                       "pixel": {"type": "charbonnier"}})
    tensors = testing.check_resume_exact(recipe, tmp_path, registry=registry, steps=4, stop_at=2)
    assert "loss.drift.mean_real_logit" in tensors
    assert tensors["loss.drift.mean_real_logit"] != torch.zeros(())
