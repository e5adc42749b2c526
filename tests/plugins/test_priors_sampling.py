"""Prior sampling: the shared pieces (filtering, guidance, draws, sliding windows) and the gpt prior's sampling."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from prior_patterns import PATTERNS, TINY, K, fit, pattern_share, seeded

from vqtk.interfaces import SamplingOptions
from vqtk_builtins.priors import GPTPrior, MaskGITPrior, PriorInputError
from vqtk_builtins.priors.sampling import draw, filter_logits, guide, window_context, window_origin

pytestmark = pytest.mark.usefixtures("one_thread")


# -- trained models, shared by the tests below -------------------------------------------


@pytest.fixture(scope="module")
def gpt_trained():
    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=1)
    losses = fit(prior, steps=150, lr=1e-2, batch=32)
    return prior, losses


@pytest.fixture(scope="module")
def gpt_conditional():
    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=1, num_classes=2, label_dropout=0.2)
    fit(prior, steps=150, lr=1e-2, batch=32, conditional=True)
    return prior


# -- sampling pieces -------------------------------------------------------------------------


def test_filter_logits_top_k_and_top_p_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15]]))
    inf = float("-inf")
    assert torch.equal(filter_logits(logits, top_k=2).isinf(), torch.tensor([[False, True, False, True]]))
    # nucleus: 0.5 < 0.7 so 0.3 joins; 0.8 >= 0.7 so 0.15 and 0.05 go
    kept = filter_logits(logits, top_p=0.7)
    assert torch.equal(kept.isinf(), torch.tensor([[False, True, False, True]]))
    assert torch.equal(kept[0, [0, 2]], logits[0, [0, 2]])
    assert torch.equal(filter_logits(logits, top_p=0.5).isinf(), torch.tensor([[False, True, True, True]]))
    assert torch.equal(filter_logits(logits, top_p=0.01).isinf(), torch.tensor([[False, True, True, True]]))
    assert torch.equal(filter_logits(logits, top_k=3, top_p=1.0), torch.tensor([[logits[0, 0], inf, logits[0, 2], logits[0, 3]]]))


def test_guidance_mixing():
    cond, uncond = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert torch.equal(guide(cond, uncond, 3.0), torch.tensor([[4.0, -2.0]]))
    assert torch.equal(guide(cond, uncond, 1.0), cond)
    assert torch.equal(guide(cond, uncond, 0.0), uncond)


def test_draw_follows_the_tempered_filtered_distribution_and_the_generator():
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])).expand(20000, 4)
    options = SamplingOptions(temperature=0.5)
    tokens = draw(logits, options, seeded(1)).tokens
    want = torch.tensor([0.1, 0.2, 0.3, 0.4]) ** 2
    assert torch.allclose(torch.bincount(tokens, minlength=4) / 20000, want / want.sum(), atol=0.015)
    assert torch.equal(tokens, draw(logits, options, seeded(1)).tokens)
    assert not torch.equal(tokens, draw(logits, options, seeded(2)).tokens)
    top2 = draw(logits, SamplingOptions(top_k=2), seeded(1))
    assert set(top2.tokens.unique().tolist()) == {2, 3}
    assert torch.allclose(top2.log_probs.exp(), torch.where(top2.tokens == 3, 4 / 7, 3 / 7))
    greedy = draw(logits[:3], SamplingOptions(temperature=0.0), None)
    assert greedy.tokens.tolist() == [3, 3, 3]


def test_single_draws_are_torch_multinomials():
    # the draw skips torch.multinomial's validity reductions but must pick the same index from the same stream
    from vqtk_builtins.priors.sampling import _multinomial

    for seed in range(50):
        probs = torch.randn(4, 100, generator=seeded(1000 + seed)).mul(3).softmax(dim=-1)
        want = torch.multinomial(probs, 1, generator=seeded(seed)).squeeze(-1)
        assert torch.equal(_multinomial(probs, seeded(seed)), want)
    logits = torch.zeros(2, 5)
    logits[1, 3] = float("nan")
    with pytest.raises(RuntimeError, match="cannot sample: the model's logits contain NaN"):
        draw(logits, SamplingOptions(top_k=2), seeded(0))


def test_sliding_window_positions_follow_taming():
    # taming's sample_conditional, 16-wide window: local = i for i <= 8, 16 - (H - i) near the end, else 8
    extent = 32
    for i in range(extent):
        local = i if i <= 8 else (16 - (extent - i) if extent - i < 8 else 8)
        assert window_origin(i, 16, extent) == i - local
    assert [window_origin(i, 4, 4) for i in range(4)] == [0, 0, 0, 0]
    grid = torch.arange(30).view(1, 5, 6)
    # window of width 3 at (1, 2): rows 1..2 full, then row 3 left of column 4
    assert window_context(grid, 3, 4, 1, 2, 3).tolist() == [[8, 9, 10, 14, 15, 16, 20, 21]]
    assert window_context(grid, 1, 2, 1, 2, 3).shape == (1, 0)


# -- gpt sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("rotary", [True, False])
@pytest.mark.parametrize(
    "options",
    [
        SamplingOptions(top_k=1),
        SamplingOptions(temperature=0.0),
        SamplingOptions(temperature=1.0),
        SamplingOptions(temperature=0.8, top_k=5, top_p=0.9),
        SamplingOptions(temperature=1.2, top_k=5),
    ],
    ids=["top_k1", "greedy", "t1", "t0.8-k5-p0.9", "t1.2-k5"],
)
def test_gpt_cached_and_uncached_sampling_give_identical_tokens(rotary, options):
    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=2, rotary=rotary)
    cached = prior.sample(6, options=options, generator=seeded(3))
    uncached = prior.sample(6, options=SamplingOptions(**{**_fields(options), "use_cache": False}), generator=seeded(3))
    assert cached.shape == (6, 4, 4) and cached.dtype == torch.long
    assert torch.equal(cached, uncached)
    if options.temperature > 0 and options.top_k != 1:  # random weights: different seeds differ
        assert not torch.equal(cached, prior.sample(6, options=options, generator=seeded(4)))


@pytest.mark.parametrize("rotary", [True, False], ids=["rotary", "abs-pos"])
def test_kv_decoder_logits_match_the_full_forward(rotary):
    from vqtk_builtins.priors.decode import KVDecoder

    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=2, rotary=rotary).eval()
    seq = torch.randint(0, K + 1, (3, 16))
    with torch.no_grad():
        full = prior.net(seq)
        dynamic, static = KVDecoder(prior.net, batch=3, length=16), KVDecoder(prior.net, batch=3, length=16)
        stepped = [dynamic.prefill(seq[:, :5])] + [dynamic.step(seq[:, i : i + 1], i) for i in range(5, 16)]
        fixed = [static.prefill(seq[:, :1])] + [static.step_static(seq[:, i : i + 1], torch.tensor(i))
                                                for i in range(1, 16)]
    torch.testing.assert_close(torch.stack(stepped, 1), full[:, 4:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.stack(fixed, 1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
def test_kv_decoder_in_other_precisions(dtype):
    from vqtk_builtins.priors.decode import KVDecoder

    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=2).eval().to(dtype)
    seq = torch.randint(0, K + 1, (3, 16))
    with torch.no_grad():
        full = prior.net(seq)
        decoder = KVDecoder(prior.net, batch=3, length=16)
        stepped = [decoder.prefill(seq[:, :5])] + [decoder.step(seq[:, i : i + 1], i) for i in range(5, 16)]
    stepped = torch.stack(stepped, 1)
    assert stepped.dtype == dtype
    if dtype == torch.float64:
        torch.testing.assert_close(stepped, full[:, 4:], rtol=1e-12, atol=1e-12)
    else:  # bfloat16: 8 bits of mantissa, summed in another order
        torch.testing.assert_close(stepped.float(), full[:, 4:].float(), rtol=0.05, atol=0.05)


def test_sampled_codes_train_the_prior_that_sampled_them():
    # sampling runs in inference mode; what it returns must still be an ordinary tensor
    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=1)
    for use_cache in (True, False):
        codes = prior.sample(2, options=SamplingOptions(use_cache=use_cache), generator=seeded(0))
        assert not codes.is_inference() and prior.training
        codes[0, 0, 0] = 0  # writable outside inference mode
        prior.loss(codes).loss.backward()
        assert all(p.grad is not None for p in prior.parameters() if p.requires_grad)


def _fields(options: SamplingOptions) -> dict:
    return attrs.asdict(options)


def test_gpt_greedy_samples_are_the_argmax_of_the_training_forward():
    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=2, num_classes=2)
    labels = torch.tensor([0, 1, 1])
    out = prior.sample(3, labels=labels, options=SamplingOptions(temperature=0.0)).reshape(3, -1)
    logits = prior.net(torch.cat((labels[:, None] + K, out[:, :-1]), dim=1))
    assert torch.equal(logits.argmax(-1), out)


def test_gpt_sampling_is_reproducible_and_leaves_the_mode_alone():
    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=1, dropout=0.1)
    prior.train()
    a = prior.sample(4, generator=seeded(7))
    assert prior.training
    assert torch.equal(a, prior.sample(4, generator=seeded(7)))
    torch.manual_seed(5)
    b = prior.sample(4)
    torch.manual_seed(5)
    assert torch.equal(b, prior.sample(4))  # no generator: the global RNG
    assert not a.requires_grad and ((0 <= a) & (a < K)).all()


def test_gpt_learns_two_patterns_and_samples_reproduce_them(gpt_trained):
    prior, losses = gpt_trained
    assert abs(losses[0] - math.log(K)) < 0.3
    # the best possible: ln 2 for the first code, nothing after, over 16 codes
    assert sum(losses[-5:]) / 5 < math.log(2) / 16 + 0.03
    share = pattern_share(prior.sample(128, generator=seeded(0)))
    assert share.sum() >= 0.9
    assert share.min() >= 0.25  # both modes


def test_gpt_sliding_window_sampling_of_larger_grids(gpt_trained):
    prior, _ = gpt_trained
    big = prior.sample(3, grid_size=(6, 7), generator=seeded(1))
    assert big.shape == (3, 6, 7) and big.dtype == torch.long
    assert ((0 <= big) & (big < K)).all()
    assert torch.equal(big, prior.sample(3, grid_size=(6, 7), generator=seeded(1)))
    uncached = prior.sample(3, grid_size=(6, 7), generator=seeded(1), options=SamplingOptions(use_cache=False))
    assert torch.equal(big, uncached)
    # rows whose window is still the top one reproduce normal sampling with the same seed
    normal = prior.sample(3, generator=seeded(2))
    tall = prior.sample(3, grid_size=(9, 4), generator=seeded(2))
    assert torch.equal(tall[:, :3], normal[:, :3])  # window rows 0..3 for rows 0..2 (h // 2 = 2)
    assert torch.equal(prior.sample(3, grid_size=(4, 4), generator=seeded(2)), normal)
    # wider grids: each window sees the row so far, so the learned constant rows carry on
    wide = prior.sample(32, grid_size=(4, 9), generator=seeded(3))
    constant_rows = (wide == wide[:, :, :1]).all(-1).all(-1)
    assert constant_rows.float().mean() >= 0.9
    widened = PATTERNS[:, :, :1].expand(2, 4, 9)
    assert (wide[:, None] == widened[None]).flatten(2).all(-1).any(-1).float().mean() >= 0.9


def test_gpt_smaller_grids_are_crops_of_a_training_size_sample():
    torch.manual_seed(0)
    prior = GPTPrior(**TINY, depth=1)
    full = prior.sample(2, generator=seeded(5))
    assert torch.equal(prior.sample(2, grid_size=(2, 3), generator=seeded(5)), full[:, :2, :3])
    assert torch.equal(prior.sample(2, grid_size=(4, 1), generator=seeded(5)), full[:, :, :1])


def test_gpt_class_conditioning_and_guidance(gpt_conditional):
    prior = gpt_conditional
    labels = torch.tensor([0] * 64 + [1] * 64)
    for scale in (1.0, 2.0):
        samples = prior.sample(128, labels=labels, options=SamplingOptions(cfg_scale=scale), generator=seeded(0))
        assert pattern_share(samples[:64])[0] >= 0.9, scale
        assert pattern_share(samples[64:])[1] >= 0.9, scale
    cached = prior.sample(8, labels=labels[12:20], options=SamplingOptions(cfg_scale=3.0), generator=seeded(1))
    uncached = prior.sample(
        8, labels=labels[12:20], options=SamplingOptions(cfg_scale=3.0, use_cache=False), generator=seeded(1)
    )
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("cls", [GPTPrior, MaskGITPrior])
def test_cfg_scale_needs_label_dropout(cls):
    prior = cls(**TINY, depth=1, num_classes=2)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"cfg_scale = 2.0 needs .* label_dropout > 0 .* built with label_dropout = 0.0"):
        prior.sample(2, labels=labels, options=SamplingOptions(cfg_scale=2.0))
    unconditional = cls(**TINY, depth=1)
    with pytest.raises(ValueError, match="cfg_scale = 1.5 needs .* it is unconditional"):
        unconditional.sample(2, options=SamplingOptions(cfg_scale=1.5))


@pytest.mark.parametrize(
    "options, message",
    [
        (SamplingOptions(temperature=-1.0), r"temperature must be >= 0"),
        (SamplingOptions(top_k=0), r"top_k must be an integer >= 1, got 0"),
        (SamplingOptions(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
        (SamplingOptions(steps=4), r"steps is for iterative"),
    ],
)
def test_gpt_rejects_bad_sampling_options(options, message):
    with pytest.raises(PriorInputError, match=message):
        GPTPrior(**TINY, depth=1).sample(1, options=options)
