"""The residual-depth prior ``rq``: shapes, gradients, a planted joint pattern, cached sampling, guidance."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from prior_patterns import fit, pattern_share, seeded

from vqtk.errors import VqtkError
from vqtk.interfaces import Prior, SamplingOptions, TokenLayout
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import PriorRef
from vqtk_builtins.priors import PriorInputError, RQPrior

pytestmark = pytest.mark.usefixtures("one_thread")

K, GRID, Q = 8, (3, 3), 3
TINY = {"codebook_size": K, "grid_size": GRID, "num_codebooks": Q, "dim": 32, "heads": 2, "depth": 1, "depth_layers": 1}

# two patterns: code (row r, depth q) = (r + q) % 4, plus 4 in the second pattern. The first code
# tells which; every later code follows from it, its position and its depth, so a prior must model
# the joint across positions (spatial) and within a position (depth)
BASE = (torch.arange(3)[:, None, None] + torch.arange(Q)[None, None, :]).remainder(4).expand(3, 3, Q)
PATTERNS = torch.stack([BASE, BASE + 4])  # (2, 3, 3, Q)


@pytest.fixture(scope="module")
def rq_trained():
    torch.manual_seed(0)
    prior = RQPrior(**TINY)
    return prior, fit(prior, steps=100, lr=1e-2, batch=32, patterns=PATTERNS)


@pytest.fixture(scope="module")
def rq_conditional():
    """Label c shows pattern c three times in four, so the class distribution is 75 / 25 and the null class's 50 / 50."""
    torch.manual_seed(0)
    prior = RQPrior(**TINY, num_classes=2, label_dropout=0.3)

    def labels_for(which):
        flip = torch.rand(which.shape) < 0.25
        return torch.where(flip, 1 - which, which)

    fit(prior, steps=160, lr=1e-2, batch=32, patterns=PATTERNS, labels_for=labels_for)
    return prior


# -- shapes, loss and gradients ------------------------------------------------------------------


def test_shapes_layout_and_loss_at_init():
    torch.manual_seed(0)
    prior = RQPrior(**TINY, num_classes=3, label_dropout=0.2)
    assert isinstance(prior, Prior) and RQPrior.layouts == ("depth",)
    assert prior.layout == TokenLayout.with_depth(Q)
    out = prior.loss(torch.randint(0, K, (5, *GRID, Q)), labels=torch.randint(0, 3, (5,)))
    assert out.loss.ndim == 0 and abs(out.loss.item() - math.log(K)) < 0.3
    assert out.metrics["bits_per_token"].item() == pytest.approx(out.loss.item() / math.log(2), rel=1e-6)
    out.loss.backward()
    assert [n for n, p in prior.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    labels = torch.tensor([0, 1, 2, 0])
    samples = prior.sample(4, labels=labels, generator=seeded(0))
    assert samples.shape == (4, *GRID, Q) and samples.dtype == torch.long
    assert ((0 <= samples) & (samples < K)).all()
    small = prior.sample(4, grid_size=(2, 1), labels=labels, generator=seeded(0))
    assert torch.equal(small, samples[:, :2, :1])  # a top-left crop of a training-size sample


def test_greedy_samples_are_the_argmax_of_the_training_forward():
    """Sampling and the loss read the same conditionals: spatial context of the previous positions, depth so far."""
    torch.manual_seed(0)
    prior = RQPrior(**TINY, num_classes=2).eval()
    labels = torch.tensor([0, 1, 1])
    out = prior.sample(3, labels=labels, options=SamplingOptions(temperature=0.0))
    codes = out.reshape(3, -1, Q)
    prefix = prior._prefix_row(labels[:, None] + Q * K)
    context = prior.spatial(torch.cat((prefix, prior._ids(codes[:, :-1])), dim=1))
    logits = prior._depth_logits(context.reshape(-1, 32), codes.reshape(-1, Q)[:, :-1])
    assert torch.equal(logits.argmax(-1).reshape(out.shape), out)
    # and the loss is the mean NLL of those logits
    nll = -logits.log_softmax(-1).gather(-1, codes.reshape(-1, Q, 1)).mean()
    assert prior.loss(out, labels).loss.item() == pytest.approx(nll.item(), rel=1e-5)


def test_input_checks():
    prior = RQPrior(**TINY)
    with pytest.raises(PriorInputError, match=r"^rq prior: indices must be \(B, h, w, 3\) \(3 codes per position\), "
                                              r"got shape \(2, 3, 3\)"):
        prior.loss(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(VqtkError, match="got shape \\(2, 3, 3, 2\\)"):
        prior.loss(torch.zeros(2, 3, 3, 2, dtype=torch.long))
    with pytest.raises(VqtkError, match="trained on a 3x3 grid"):
        prior.loss(torch.zeros(2, 3, 4, Q, dtype=torch.long))
    with pytest.raises(VqtkError, match=r"indices must lie in \[0, 8\)"):
        prior.loss(torch.full((2, 3, 3, Q), 8))
    with pytest.raises(PriorInputError, match="up to its training grid 3x3, asked for 4x3"):
        prior.sample(2, grid_size=(4, 3))
    with pytest.raises(PriorInputError, match="cfg_scale = 2.0 needs classifier-free guidance"):
        prior.sample(2, options=SamplingOptions(cfg_scale=2.0))


def test_recipe_table_takes_the_tokenizer_sizes(builtins_registry):
    table = {"type": "rq", "dim": 32, "heads": 2, "depth": 1, "depth_layers": 1}
    ref = RecipeConverter(builtins_registry).structure(table, PriorRef)
    spec = builtins_registry.get("prior", "rq")
    fields = attrs.fields_dict(spec.config)
    for provided in ("codebook_size", "num_codebooks", "grid_size"):
        assert fields[provided].default is None and fields[provided].metadata["vqtk_provided"]
    assert all(f.metadata["vqtk_doc"].strip() for f in attrs.fields(spec.config))
    prior = spec.create(attrs.evolve(ref.config, codebook_size=K, grid_size=GRID, num_codebooks=Q))
    assert isinstance(prior, RQPrior) and prior.layout == TokenLayout.with_depth(Q)


# -- learning and sampling -------------------------------------------------------------------------


def test_rq_learns_a_joint_pattern_across_positions_and_depth(rq_trained):
    prior, losses = rq_trained
    assert abs(losses[0] - math.log(K)) < 0.3
    # the best possible: ln 2 for the first code, nothing after, over 27 codes
    assert sum(losses[-5:]) / 5 < math.log(2) / 27 + 0.03
    share = pattern_share(prior.sample(64, generator=seeded(0)), PATTERNS)
    assert share.sum() >= 0.9 and share.min() >= 0.25  # both modes, whole patterns


@pytest.mark.parametrize(
    "options",
    [SamplingOptions(), SamplingOptions(temperature=0.0), SamplingOptions(temperature=0.8, top_k=5, top_p=0.9),
     SamplingOptions(temperature=1.3, top_k=3)],
    ids=["t1", "greedy", "t0.8-k5-p0.9", "t1.3-k3"],
)
def test_cached_and_uncached_sampling_give_identical_codes(options):
    torch.manual_seed(0)
    prior = RQPrior(**{**TINY, "depth": 2})
    cached = prior.sample(6, options=options, generator=seeded(3))
    uncached = prior.sample(6, options=attrs.evolve(options, use_cache=False), generator=seeded(3))
    assert torch.equal(cached, uncached)
    if options.temperature > 0:  # random weights: different seeds differ
        assert not torch.equal(cached, prior.sample(6, options=options, generator=seeded(4)))
    # sampling runs in inference mode; the codes it returns are ordinary tensors that train the prior
    assert not cached.is_inference() and prior.training
    cached[0, 0, 0, 0] = 0
    prior.loss(cached).loss.backward()


def test_class_conditioning_and_guidance_change_the_class_distribution(rq_conditional):
    prior = rq_conditional
    labels = torch.tensor([0] * 64 + [1] * 64)

    def own_pattern_share(scale: float) -> float:
        samples = prior.sample(128, labels=labels, options=SamplingOptions(cfg_scale=scale), generator=seeded(0))
        return float(pattern_share(samples[:64], PATTERNS)[0] + pattern_share(samples[64:], PATTERNS)[1]) / 2

    plain, guided = own_pattern_share(1.0), own_pattern_share(3.0)
    assert 0.55 <= plain <= 0.9  # about the data's 75 %
    assert guided >= plain + 0.1 and guided >= 0.85  # guidance pushes towards each class's own pattern
    options = SamplingOptions(cfg_scale=3.0, top_k=4)
    cached = prior.sample(8, labels=labels[60:68], options=options, generator=seeded(1))
    uncached = prior.sample(8, labels=labels[60:68], options=attrs.evolve(options, use_cache=False),
                            generator=seeded(1))
    assert torch.equal(cached, uncached)
