"""The ``gumbel`` quantizer: Gumbel-softmax sampling in training, argmax in eval, the KL loss, and its
temperature annealed through the StepAware hook; its config derived from its signature."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F
from quantizer_cases import create, spec
from torch import nn

from vqtk.errors import RecipeError
from vqtk.interfaces import StepAware, step_aware_parts
from vqtk.recipe.loader import load_recipe
from vqtk.registry.signature import argument_docs, field_doc
from vqtk_builtins.quantizers.gumbel import GumbelQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]


def gumbel(**options) -> GumbelQuantizer:
    torch.manual_seed(0)
    return create("gumbel", **{"dim": 6, "codebook_size": 10, **options})


def z_of(q, batch=2, h=3, w=4, seed=1) -> torch.Tensor:
    return torch.randn(batch, q.dim, h, w, generator=torch.Generator().manual_seed(seed))


# -- quantization ------------------------------------------------------------------------------


def test_shapes_dtypes_and_metrics():
    q = gumbel()
    out = q(z_of(q))
    assert out.quantized.shape == (2, 6, 3, 4) and out.quantized.dtype == torch.float32
    assert out.indices.shape == (2, 3, 4) and out.indices.dtype == torch.int64
    assert 0 <= int(out.indices.min()) and int(out.indices.max()) < 10
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert set(out.metrics) >= {"temperature", "kl", "perplexity", "usage"}
    assert out.metrics["temperature"].item() == pytest.approx(1.0)
    assert q.lookup(out.indices).shape == out.quantized.shape


@pytest.mark.parametrize("straight_through", [True, False])
def test_gradients_reach_the_encoder_input_and_the_codebook(straight_through):
    q = gumbel(straight_through=straight_through)
    z = z_of(q).requires_grad_()
    out = q(z)
    (out.quantized * torch.randn_like(out.quantized)).sum().backward()
    for grad in (z.grad, q.embed.weight.grad, q.proj.weight.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_straight_through_gives_exact_codes_forward_and_soft_mixes_without_it():
    hard = gumbel(straight_through=True)
    out = hard(z_of(hard))
    torch.testing.assert_close(out.quantized, hard.lookup(out.indices))  # one-hot forward
    soft = gumbel(straight_through=False)
    out = soft(z_of(soft))
    assert not torch.allclose(out.quantized, soft.lookup(out.indices))  # a mix of codes


def test_eval_is_the_deterministic_argmax_of_the_logits():
    q = gumbel().eval()
    z = z_of(q)
    with torch.no_grad():
        first, second = q(z), q(z)
        want = q.proj(z).argmax(dim=1)
    assert torch.equal(first.indices, want) and torch.equal(second.indices, want)
    assert torch.equal(first.quantized, second.quantized)
    torch.testing.assert_close(first.quantized, q.embed.weight[want].permute(0, 3, 1, 2))
    q.train()  # training samples: noise changes some codes
    assert any(not torch.equal(q(z).indices, want) for _ in range(5))


def test_loss_is_kl_weight_times_kl_to_the_uniform_prior():
    q = gumbel(kl_weight=0.3)
    z = z_of(q)
    out = q(z)
    probs = F.softmax(q.proj(z), dim=1)
    kl = (probs * torch.log(probs * q.codebook_size)).sum(dim=1).mean()  # taming's formula, without its 1e-10
    assert out.metrics["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(0.3 * kl.item(), rel=1e-5)
    with torch.no_grad():  # uniform logits: no KL
        q.proj.weight.zero_()
        q.proj.bias.zero_()
    assert q(z).loss.item() == pytest.approx(0.0, abs=1e-6)


# -- the temperature schedule (StepAware) -------------------------------------------------------


def test_on_step_anneals_the_temperature_per_the_schedule_and_reports_it():
    q = gumbel(temperature=2.0, min_temperature=0.25, anneal_rate=1e-3)
    assert isinstance(q, StepAware)
    z = z_of(q)
    for step in (0, 1, 10, 500, 2000, 2079, 2080, 10_000):
        q.on_step(step, 10_000)
        want = max(0.25, 2.0 * math.exp(-1e-3 * step))
        assert q.current_temperature == pytest.approx(want, rel=1e-12)
        assert q(z).metrics["temperature"].item() == pytest.approx(want, rel=1e-6)
    assert q.current_temperature == 0.25  # floored: 2 * exp(-2.08) < 0.25
    q.on_step(0, 10_000)  # the step alone sets it: back to the start
    assert q.current_temperature == 2.0


def test_sampling_uses_the_scheduled_temperature():
    q = gumbel(straight_through=False, temperature=1.5, min_temperature=0.1, anneal_rate=1e-2)
    z = z_of(q)
    for step in (0, 150):
        q.on_step(step, 200)
        tau = max(0.1, 1.5 * math.exp(-1e-2 * step))
        torch.manual_seed(7)
        out = q(z)
        torch.manual_seed(7)
        soft = F.gumbel_softmax(q.proj(z), tau=tau, hard=False, dim=1)
        want = torch.einsum("bnhw,nd->bdhw", soft, q.embed.weight)
        torch.testing.assert_close(out.quantized, want)


def test_temperature_is_not_saved_and_resumes_exactly_from_the_step():
    q = gumbel(anneal_rate=1e-2)
    q.on_step(120, 200)
    assert not any("temperature" in k for k in q.state_dict())
    resumed = gumbel(anneal_rate=1e-2)
    resumed.load_state_dict(q.state_dict())
    resumed.on_step(120, 200)  # the trainer's first call after --resume carries the resumed step
    assert resumed.current_temperature == q.current_temperature
    z = z_of(q)
    torch.manual_seed(3)
    a = q(z)
    torch.manual_seed(3)
    b = resumed(z)
    assert torch.equal(a.quantized, b.quantized) and torch.equal(a.metrics["temperature"], b.metrics["temperature"])


def test_the_trainer_finds_it_inside_a_model():
    q = gumbel()
    model = nn.ModuleDict({"encoder": nn.Conv2d(3, 6, 1), "quantizer": q})
    assert step_aware_parts(model) == [q]


# -- its config is its signature ------------------------------------------------------------------


def test_config_is_derived_from_the_signature():
    s = spec("gumbel")
    assert s.target is GumbelQuantizer
    fields = {f.name: f for f in attrs.fields(s.config)}
    defaults = {name: f.default for name, f in fields.items()}
    assert defaults == {"dim": 256, "codebook_size": 1024, "temperature": 1.0, "min_temperature": 0.5,
                        "anneal_rate": 1e-4, "kl_weight": 5e-4, "straight_through": True}
    summary, docs = argument_docs(GumbelQuantizer)
    assert s.doc == summary and set(docs) == set(fields)
    for name, field in fields.items():
        assert field_doc(field) == docs[name] and field_doc(field), name
    built = s.create(s.config(dim=4, codebook_size=8, temperature=0.7, straight_through=False))
    assert (built.dim, built.codebook_size, built.temperature, built.straight_through) == (4, 8, 0.7, False)


def test_bad_values_are_recipe_errors_with_their_paths(builtins_registry):
    recipe = ROOT / "recipes" / "small_f8.toml"
    gumbel_table = ["model.quantizer.type=gumbel", "model.quantizer.dim=64"]
    parsed, _ = load_recipe(recipe, gumbel_table, registry=builtins_registry)
    assert parsed.model.quantizer.type == "gumbel" and parsed.model.quantizer.config.dim == 64
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, [*gumbel_table, "model.quantizer.temperature=0", "model.quantizer.kl_weight=-1.0"],
                    registry=builtins_registry)
    assert info.value.problems == ["model.quantizer.temperature: must be > 0, got 0.0",
                                   "model.quantizer.kl_weight: must be >= 0, got -1.0"]
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, [*gumbel_table, "model.quantizer.min_temperature=2.0"], registry=builtins_registry)
    assert info.value.problems == ["model.quantizer: min_temperature (2.0) must be <= temperature (1.0)"]
