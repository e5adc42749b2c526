"""The maskgit prior: mask schedules, iterative decoding, and sampling after training on the toy patterns."""

from __future__ import annotations

import math

import pytest
import torch
from prior_patterns import TINY, K, fit, pattern_share, seeded

from vqtk.interfaces import SamplingOptions
from vqtk_builtins.priors import MaskGITPrior, PriorInputError
from vqtk_builtins.priors.schedule import mask_ratio, masked_counts

pytestmark = pytest.mark.usefixtures("one_thread")


# -- trained models, shared by the tests below -------------------------------------------


@pytest.fixture(scope="module")
def maskgit_trained():
    torch.manual_seed(0)
    prior = MaskGITPrior(**TINY, depth=1)
    losses = fit(prior, steps=200, lr=1e-2, batch=128)
    return prior, losses


@pytest.fixture(scope="module")
def maskgit_conditional():
    torch.manual_seed(0)
    prior = MaskGITPrior(**TINY, depth=1, num_classes=2, label_dropout=0.2)
    fit(prior, steps=200, lr=1e-2, batch=64, conditional=True)
    return prior


# -- maskgit ----------------------------------------------------------------------------------------


def test_mask_schedules():
    assert mask_ratio("cosine", 0.0) == 1.0 and mask_ratio("cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    assert mask_ratio("linear", 0.25) == 0.75
    cosine = [math.floor(16 * math.cos(math.pi / 2 * (t + 1) / 8)) for t in range(7)] + [0]
    assert cosine == [15, 14, 13, 11, 8, 6, 3, 0]
    assert masked_counts(16, 8, "cosine") == cosine
    assert masked_counts(16, 8, "linear") == [14, 12, 10, 8, 6, 4, 2, 0]
    # more steps than codes: at least one code fixed per step, done early
    assert masked_counts(4, 8, "cosine") == [3, 2, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="unknown schedule 'exp'"):
        mask_ratio("exp", 0.5)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_maskgit_decoding_follows_the_schedule(schedule):
    torch.manual_seed(0)
    prior = MaskGITPrior(**TINY, depth=1, schedule=schedule)
    tokens, history = prior.decode(3, generator=seeded(0))
    assert history.shape == (8, 3)
    assert torch.equal(history, torch.tensor(masked_counts(16, 8, schedule))[:, None].expand(8, 3))
    assert ((0 <= tokens) & (tokens < K)).all()  # nothing left masked
    tokens, history = prior.decode(2, options=SamplingOptions(steps=3), generator=seeded(0))
    assert history[:, 0].tolist() == masked_counts(16, 3, schedule)
    small = MaskGITPrior(codebook_size=K, grid_size=(2, 2), dim=32, depth=1, heads=2)
    _, history = small.decode(2, options=SamplingOptions(steps=8), generator=seeded(0))
    assert history[:, 0].tolist() == [3, 2, 1, 0]


def test_maskgit_sampling_is_reproducible_and_refuses_larger_grids():
    torch.manual_seed(0)
    prior = MaskGITPrior(**TINY, depth=1)
    a = prior.sample(3, generator=seeded(1), options=SamplingOptions(temperature=0.9, top_p=0.95))
    assert a.shape == (3, 4, 4) and torch.equal(a, prior.sample(3, generator=seeded(1), options=SamplingOptions(temperature=0.9, top_p=0.95)))
    assert torch.equal(prior.sample(3, grid_size=(2, 3), generator=seeded(1), options=SamplingOptions(temperature=0.9, top_p=0.95)), a[:, :2, :3])
    with pytest.raises(ValueError, match=r"maskgit prior samples grids up to its training grid 4x4, asked for 4x8; use the gpt prior"):
        prior.sample(1, grid_size=(4, 8))
    with pytest.raises(PriorInputError, match=r"steps must be an integer >= 1, got 0"):
        prior.sample(1, options=SamplingOptions(steps=0))


def test_maskgit_learns_two_patterns_and_samples_reproduce_them(maskgit_trained):
    prior, losses = maskgit_trained
    assert abs(losses[0] - math.log(K)) < 0.3
    assert sum(losses[-10:]) / 10 < 0.25 * sum(losses[:10]) / 10
    share = pattern_share(prior.sample(128, generator=seeded(0)))
    assert share.sum() >= 0.9
    assert share.min() >= 0.25


def test_maskgit_class_conditioning_and_guidance(maskgit_conditional):
    prior = maskgit_conditional
    labels = torch.tensor([0] * 64 + [1] * 64)
    for scale in (1.0, 2.0):
        samples = prior.sample(128, labels=labels, options=SamplingOptions(cfg_scale=scale), generator=seeded(0))
        assert pattern_share(samples[:64])[0] >= 0.9, scale
        assert pattern_share(samples[64:])[1] >= 0.9, scale
