"""Built-in stage-2 priors: gpt (autoregressive) and maskgit (iterative masked decoding)."""

from __future__ import annotations

import math

import attrs
import pytest
import torch

import vqtk_builtins
from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import Prior, SamplingOptions
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import PriorRef
from vqtk.registry import Registry
from vqtk_builtins.priors import GPTPrior, MaskGITPrior, PriorInputError
from vqtk_builtins.priors.builders import GPTConfig, MaskGITConfig, build_gpt, build_maskgit
from vqtk_builtins.priors.conditioning import ClassTokens
from vqtk_builtins.priors.sampling import draw, filter_logits, guide, window_context, window_origin
from vqtk_builtins.priors.schedule import mask_ratio, masked_counts

K = 8  # codebook size
GRID = (4, 4)
TINY = dict(codebook_size=K, grid_size=GRID, dim=32, heads=2)

# two patterns of constant rows: the first visible code tells which, and where
# it sits tells the rest, so a prior must model the joint (not just marginals)
ROW_VALUES = torch.arange(4)[:, None].expand(4, 4)
PATTERNS = torch.stack([ROW_VALUES, ROW_VALUES + 4])  # (2, 4, 4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (two threads thrash on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fit(prior: Prior, *, steps: int, lr: float, batch: int, conditional: bool = False) -> list[float]:
    """Adam on batches of PATTERNS (labels = pattern index when conditional); returns the losses."""
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    losses = []
    prior.train()
    for _ in range(steps):
        which = torch.randint(0, 2, (batch,))
        out = prior.loss(PATTERNS[which], labels=which if conditional else None)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
        losses.append(out.loss.item())
    return losses


def pattern_share(samples: torch.Tensor) -> torch.Tensor:
    """Fraction of sampled grids equal to each pattern: ``(2,)``."""
    equal = (samples[:, None] == PATTERNS[None]).flatten(2).all(-1)
    return equal.float().mean(0)


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
    ],
    ids=["top_k1", "greedy", "t1", "t0.8-k5-p0.9"],
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


# -- configs and registry -------------------------------------------------------------------------


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"dim \(32\) must be divisible by heads \(3\)"):
        GPTConfig(dim=32, heads=3)
    with pytest.raises(ValueError, match="label_dropout > 0 needs num_classes > 0"):
        MaskGITConfig(label_dropout=0.1)
    with pytest.raises(ValueError, match=r"must be >= 0 and < 1, got 1.0"):
        GPTConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"\[1\] must be > 0, got 0"):
        GPTConfig(grid_size=(4, 0))
    with pytest.raises(ValueError, match=r"grid_size must be \(rows, columns\)"):
        MaskGITConfig(grid_size=(4, 4, 4))
    with pytest.raises(ValueError, match=r"must be > 0, got 0"):
        MaskGITConfig(steps=0)
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
    ref = converter.structure({"type": "gpt", "codebook_size": 8, "grid_size": [4, 4], "dim": 32, "heads": 2, "depth": 1}, PriorRef)
    assert ref.config.grid_size == (4, 4)


def test_build_through_the_registry():
    registry = Registry()
    registry.register_plugin(vqtk_builtins, "builtins")
    assert {"gpt", "maskgit"} <= set(registry.names("prior"))
    gpt = registry.get("prior", "gpt").create(GPTConfig(codebook_size=8, grid_size=(4, 4), dim=32, depth=1, heads=2, num_classes=2, label_dropout=0.1, rotary=False))
    assert isinstance(gpt, GPTPrior) and isinstance(gpt, Prior)
    assert (gpt.codebook_size, gpt.grid_size, gpt.num_classes) == (8, (4, 4), 2)
    maskgit = registry.get("prior", "maskgit").create(MaskGITConfig(codebook_size=8, grid_size=(4, 4), dim=32, depth=1, heads=2, steps=4))
    assert isinstance(maskgit, MaskGITPrior) and maskgit.steps == 4 and maskgit.mask_id == 8
    assert registry.get("prior", "gpt").doc.startswith("autoregressive transformer")
    assert build_gpt(GPTConfig(codebook_size=8, grid_size=(4, 4), dim=32, depth=1, heads=2)).sample(1).shape == (1, 4, 4)
    assert build_maskgit(MaskGITConfig(codebook_size=8, grid_size=(4, 4), dim=32, depth=1, heads=2)).sample(1).shape == (1, 4, 4)
