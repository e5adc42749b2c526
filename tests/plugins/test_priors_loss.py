"""Built-in stage-2 priors (gpt, maskgit): the training loss, input and label checks, configs and the registry."""

from __future__ import annotations

import inspect
import math

import attrs
import pytest
import torch
from prior_patterns import GRID, TINY, K

import vqtk_builtins
from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import Prior
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import PriorRef
from vqtk.registry import Registry
from vqtk_builtins.priors import GPTPrior, MaskGITPrior, PriorInputError
from vqtk_builtins.priors.conditioning import ClassTokens, ConditionalPrior

pytestmark = pytest.mark.usefixtures("one_thread")


# -- loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GPTPrior, MaskGITPrior])
def test_loss_at_init_is_about_log_codebook_size_and_trains_every_weight(cls):
    torch.manual_seed(0)
    prior = cls(**TINY, depth=2, num_classes=3, label_dropout=0.2)
    indices = torch.randint(0, K, (8, *GRID))
    out = prior.loss(indices, labels=torch.randint(0, 3, (8,)))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert abs(out.loss.item() - math.log(K)) < 0.3
    assert out.metrics["bits_per_token"].item() == pytest.approx(out.loss.item() / math.log(2), rel=1e-6)
    assert 0 <= out.metrics["accuracy"].item() <= 1
    out.loss.backward()
    no_grad = [n for n, p in prior.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_gpt_loss_is_the_mean_next_code_nll():
    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=1).eval()
    indices = torch.randint(0, K, (3, *GRID))
    tokens = indices.reshape(3, -1)
    start = torch.full((3, 1), K)  # the learned start token of an unconditional prior
    logits = prior.net(torch.cat((start, tokens[:, :-1]), dim=1))
    nll = -logits.log_softmax(-1).gather(-1, tokens[..., None]).mean()
    assert prior.loss(indices).loss.item() == pytest.approx(nll.item(), rel=1e-5)


def test_maskgit_loss_counts_masked_positions_only():
    torch.manual_seed(0)
    prior = MaskGITPrior(**TINY, depth=1).eval()
    ratios = [prior.loss(torch.randint(0, K, (64, *GRID))).metrics["mask_ratio"].item() for _ in range(20)]
    # E[cos(pi/2 u)] = 2/pi, plus the ceil to whole tokens (at least one masked)
    assert 0.6 < sum(ratios) / len(ratios) < 0.72
    # a network that is sure of every visible code and uniform on masked ones scores
    # exactly log K: only the masked positions count
    class Oracle(torch.nn.Module):
        def forward(self, seq):
            visible = seq < K
            return torch.nn.functional.one_hot(seq.clamp(max=K - 1), K) * 100.0 * visible[..., None]

    prior.net = Oracle()
    out = prior.loss(torch.randint(1, K, (4, *GRID)))
    assert out.loss.item() == pytest.approx(math.log(K), abs=1e-6)
    assert out.metrics["accuracy"].item() == 0.0  # uniform logits pick code 0, absent from the data


@pytest.mark.parametrize("cls", [GPTPrior, MaskGITPrior])
def test_loss_refuses_multi_index_codes_and_bad_grids(cls):
    prior = cls(**TINY, depth=1)
    name = "gpt" if cls is GPTPrior else "maskgit"
    with pytest.raises(ValueError, match=rf"^{name} prior models one index per position; quantizer gives Q = 3 "):
        prior.loss(torch.zeros(2, 4, 4, 3, dtype=torch.long))
    with pytest.raises(VqtkError, match=r"trained on a 4x4 grid, got indices of shape \(2, 4, 5\)"):
        prior.loss(torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 8\), got values in \[0, 8\]"):
        prior.loss(torch.stack([torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), 8)]))
    with pytest.raises(ValueError, match="indices must be integers"):
        prior.loss(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="unconditional .* but labels were given"):
        prior.loss(torch.zeros(2, 4, 4, dtype=torch.long), labels=torch.zeros(2, dtype=torch.long))


def test_conditional_priors_check_labels():
    prior = GPTPrior(**TINY, depth=1, num_classes=2)
    indices = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(PriorInputError, match=r"class-conditional \(num_classes = 2\): give labels"):
        prior.loss(indices)
    with pytest.raises(PriorInputError, match=r"labels must lie in \[0, 2\), got values in \[0, 2\]"):
        prior.loss(indices, labels=torch.tensor([0, 2]))
    with pytest.raises(PriorInputError, match=r"labels must have shape \(3,\), got \(2,\)"):
        prior.sample(3, labels=torch.tensor([0, 1]))


def test_label_dropout_replaces_labels_by_the_null_class_in_training_only():
    tokens = ClassTokens(first_id=8, num_classes=3, label_dropout=0.25, always_prefix=True)
    assert tokens.num_tokens == 4 and tokens.null_id == 11
    torch.manual_seed(0)
    prefix = tokens.prefix(torch.full((4000,), 2), 4000, torch.device("cpu"))
    assert prefix.shape == (4000, 1) and (prefix == 10).all()
    dropped = tokens.drop(prefix)
    assert set(dropped.unique().tolist()) == {10, 11}
    assert (dropped == 11).float().mean().item() == pytest.approx(0.25, abs=0.03)
    # unconditional gpt: one learned start token; unconditional maskgit: no prefix
    start = ClassTokens(first_id=8, num_classes=0, label_dropout=0.0, always_prefix=True)
    assert start.num_tokens == 1 and start.prefix(None, 2, torch.device("cpu")).tolist() == [[8], [8]]
    none = ClassTokens(first_id=9, num_classes=0, label_dropout=0.0, always_prefix=False)
    assert none.num_tokens == 0 and none.prefix(None, 2, torch.device("cpu")) is None


# -- configs and registry -------------------------------------------------------------------------


@pytest.fixture
def configs(builtins_registry):
    """The gpt and maskgit recipe config classes, derived from the priors' signatures."""
    return builtins_registry.get("prior", "gpt").config, builtins_registry.get("prior", "maskgit").config


def test_config_validation_messages(configs):
    gpt_config, maskgit_config = configs
    with pytest.raises(ValueError, match=r"dim \(32\) must be divisible by heads \(3\)"):
        gpt_config(dim=32, heads=3)
    with pytest.raises(ValueError, match="label_dropout > 0 needs num_classes > 0"):
        maskgit_config(label_dropout=0.1)
    with pytest.raises(ValueError, match=r"must be >= 0 and < 1, got 1.0"):
        gpt_config(dropout=1.0)
    with pytest.raises(ValueError, match=r"\[1\] must be > 0, got 0"):
        gpt_config(grid_size=(4, 0))
    with pytest.raises(ValueError, match=r"grid_size must be \(rows, columns\)"):
        maskgit_config(grid_size=(4, 4, 4))
    with pytest.raises(ValueError, match=r"must be > 0, got 0"):
        maskgit_config(steps=0)
    with pytest.raises(ValueError, match=r"must be > 0, got 0"):
        gpt_config(codebook_size=0)
    with pytest.raises(ValueError, match="divisible by heads"):
        GPTPrior(codebook_size=8, grid_size=(4, 4), dim=30, heads=4)


def test_recipe_tables_are_checked_strictly(builtins_registry):
    converter = RecipeConverter(builtins_registry)

    def problems(table):
        with pytest.raises(RecipeError) as info:
            converter.structure(table, PriorRef)
        return info.value.problems

    assert any("schedule" in line for line in problems({"type": "maskgit", "schedule": "exp"}))
    assert any("grid_size" in line for line in problems({"type": "gpt", "grid_size": [4, 4, 4]}))
    assert any("heads" in line for line in problems({"type": "gpt", "dim": 32, "heads": 3}))
    assert any("codebook_size: must be > 0" in line for line in problems({"type": "gpt", "codebook_size": 0}))
    ref = converter.structure({"type": "gpt", "codebook_size": 8, "grid_size": [4, 4], "dim": 32, "heads": 2, "depth": 1}, PriorRef)
    assert ref.config.grid_size == (4, 4)


@pytest.mark.parametrize("name", ["gpt", "maskgit"])
def test_tables_without_the_tokenizer_sizes_validate(builtins_registry, name):
    """codebook_size and grid_size come from the tokenizer the prior models: a recipe may leave them out."""
    table = {"type": name, "dim": 32, "heads": 2, "depth": 1, "num_classes": 2, "label_dropout": 0.1}
    ref = RecipeConverter(builtins_registry).structure(table, PriorRef)
    assert (ref.config.codebook_size, ref.config.grid_size) == (None, None)
    fields = attrs.fields_dict(builtins_registry.get("prior", name).config)
    for provided in ("codebook_size", "grid_size"):
        assert fields[provided].default is None and fields[provided].metadata["vqtk_provided"]
    # the cross-field checks still run without them
    with pytest.raises(RecipeError, match=r"dim \(32\) must be divisible by heads \(3\)"):
        RecipeConverter(builtins_registry).structure({**table, "heads": 3}, PriorRef)
    # the assembler fills them in before building
    spec = builtins_registry.get("prior", name)
    prior = spec.create(attrs.evolve(ref.config, codebook_size=K, grid_size=GRID))
    assert (prior.codebook_size, prior.grid_size, prior.num_classes) == (K, GRID, 2)


def test_every_field_has_a_doc_and_shared_fields_are_declared_once(builtins_registry):
    shared = list(inspect.signature(ConditionalPrior).parameters)
    for name, cls, own in (("gpt", GPTPrior, ["rotary"]), ("maskgit", MaskGITPrior, ["steps", "schedule", "choice_temperature"])):
        spec = builtins_registry.get("prior", name)
        assert spec.target is cls and spec.doc
        fields = attrs.fields(spec.config)
        assert [f.name for f in fields] == shared + own
        for field in fields:
            assert field.metadata["vqtk_doc"].strip(), f"prior {name}: {field.name} has no doc"
    assert attrs.fields_dict(builtins_registry.get("prior", "maskgit").config)["dim"].default == 512
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'grid_size'"):
        GPTPrior(codebook_size=8)


def test_build_through_the_registry(configs):
    gpt_config, maskgit_config = configs
    registry = Registry()
    registry.register_plugin(vqtk_builtins, "builtins")
    assert {"gpt", "maskgit"} <= set(registry.names("prior"))
    gpt = registry.get("prior", "gpt").create(gpt_config(codebook_size=8, grid_size=(4, 4), dim=32, depth=1, heads=2, num_classes=2, label_dropout=0.1, rotary=False))
    assert isinstance(gpt, GPTPrior) and isinstance(gpt, Prior)
    assert (gpt.codebook_size, gpt.grid_size, gpt.num_classes) == (8, (4, 4), 2)
    maskgit = registry.get("prior", "maskgit").create(maskgit_config(codebook_size=8, grid_size=(4, 4), dim=32, depth=1, heads=2, steps=4))
    assert isinstance(maskgit, MaskGITPrior) and maskgit.steps == 4 and maskgit.mask_id == 8
    # class tokens follow the codes (gpt) or the codes and the mask token (maskgit)
    assert (gpt.classes.first_id, gpt.classes.null_id, maskgit.classes.first_id) == (8, 10, 9)
    assert registry.get("prior", "gpt").doc.startswith("autoregressive transformer")
    for name, config in (("gpt", gpt_config), ("maskgit", maskgit_config)):
        prior = registry.get("prior", name).create(config(codebook_size=8, grid_size=(4, 4), dim=32, depth=1, heads=2))
        assert prior.sample(1).shape == (1, 4, 4)
