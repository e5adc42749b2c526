"""The ``var`` next-scale prior on synthetic multi-scale codes: loss, block-causal attention, sampling, CFG, cache."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest
import torch
from prior_patterns import PATTERNS as GRID_PATTERNS
from prior_patterns import fit, seeded

from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import SamplingOptions, TokenLayout
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import PriorRef
from vqtk_builtins.priors import GPTPrior, PriorInputError, VARPrior
from vqtk_builtins.priors.sampling import guide
from vqtk_builtins.priors.var_attention import ScaleCache, block_causal_mask

pytestmark = pytest.mark.usefixtures("one_thread")

K = 8
SCALES = [[1, 1], [2, 2], [4, 4]]
L = 1 + 4 + 16
LAYOUT = TokenLayout.multiscale(SCALES)
TINY = dict(codebook_size=K, grid_size=(4, 4), scales=SCALES, dim=32, heads=2)

# two multi-scale patterns over prior_patterns' two grids: the 1x1 code (0 or 4: the grid's
# first code) decides the 2x2 and the 4x4 scales, so a prior must carry the coarse choice to
# the finer scales through its inputs and attention


def on_scales(grids: torch.Tensor) -> torch.Tensor:
    """Multi-scale codes ``(B, L)`` whose last scale is ``grids (B, 4, 4)``."""
    coarse = grids[:, :1, :1]
    return LAYOUT.join([coarse, (coarse + torch.tensor([[1, 2], [3, 1]])) % K, grids])


PATTERNS = on_scales(GRID_PATTERNS)  # (2, L)


class OnScales(torch.nn.Module):
    """prior_patterns' ``fit`` trains on grids: this hands the prior their multi-scale codes."""

    def __init__(self, prior: VARPrior):
        super().__init__()
        self.prior = prior

    def loss(self, grids: torch.Tensor, labels=None):
        return self.prior.loss(on_scales(grids), labels)


def train(prior: VARPrior, *, conditional: bool = False) -> list[float]:
    return fit(OnScales(prior), steps=120, lr=1e-2, batch=32, conditional=conditional)


def share(samples: torch.Tensor) -> torch.Tensor:
    """Fraction of sampled sequences equal to each pattern: ``(2,)``."""
    return (samples[:, None] == PATTERNS[None]).all(-1).float().mean(0)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=1)
    return prior, train(prior)


@pytest.fixture(scope="module")
def conditional():
    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=1, num_classes=2, label_dropout=0.3)
    train(prior, conditional=True)
    return prior


def _options(options: SamplingOptions, **changes) -> SamplingOptions:
    return attrs.evolve(options, **changes)


# -- the sequence and the mask ----------------------------------------------------------------


def test_block_causal_mask_by_hand():
    mask = block_causal_mask([(1, 1), (2, 2)])
    want = torch.tensor([[1, 0, 0, 0, 0]] + [[1, 1, 1, 1, 1]] * 4, dtype=torch.bool)
    assert torch.equal(mask, want)
    assert block_causal_mask([(1, 1), (2, 2), (4, 4)]).shape == (L, L)


def test_loss_shapes_metrics_and_every_weight_trains():
    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=2, num_classes=3, label_dropout=0.2)
    assert prior.layouts == ("scales",) and prior.layout == LAYOUT and prior.scales == ((1, 1), (2, 2), (4, 4))
    out = prior.loss(torch.randint(0, K, (16, L)), labels=torch.randint(0, 3, (16,)))
    assert out.loss.ndim == 0 and abs(out.loss.item() - math.log(K)) < 0.3
    assert out.metrics["bits_per_token"].item() == pytest.approx(out.loss.item() / math.log(2), rel=1e-6)
    assert 0 <= out.metrics["accuracy"].item() <= 1 and out.metrics["last_scale_loss"].ndim == 0
    out.loss.backward()
    assert [n for n, p in prior.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    assert not any(k in prior.state_dict() for k in ("mask", "levels"))  # derived from scales, not stored


def test_loss_is_the_mean_cross_entropy_over_all_tokens():
    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=1).eval()
    tokens = torch.randint(0, K, (3, L))
    logits = prior.logits(tokens, torch.full((3, 1), K))  # the unconditional start token
    assert logits.shape == (3, L, K)
    nll = -logits.log_softmax(-1).gather(-1, tokens[..., None]).mean()
    assert prior.loss(tokens).loss.item() == pytest.approx(nll.item(), rel=1e-5)


def test_attention_is_block_causal_over_scales():
    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=2, num_classes=2).eval()
    prefix = torch.tensor([[K], [K + 1]])
    tokens = torch.randint(0, K, (2, L))
    base = prior.logits(tokens, prefix)
    for k, (start, end) in enumerate([(0, 1), (1, 5), (5, L)]):
        changed = tokens.clone()
        changed[:, start:end] = (changed[:, start:end] + 1) % K
        after = prior.logits(changed, prefix)
        # this scale and coarser ones are predicted without it; finer ones see it
        torch.testing.assert_close(after[:, :end], base[:, :end])
        if end < L:
            assert (after[:, end:] - base[:, end:]).abs().amax() > 1e-4, k
    # the class conditions every scale
    other = prior.logits(tokens, prefix.flip(0))
    assert ((other - base).abs().amax(-1) > 1e-6).all()


@pytest.mark.parametrize("qk_norm", [False, True])
def test_scale_cache_gives_the_full_forward_logits(qk_norm):
    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=2, num_classes=2, qk_norm=qk_norm).eval()
    prefix = torch.tensor([[K], [K + 1], [K]])
    tokens = torch.randint(0, K, (3, L))
    with torch.no_grad():
        full = prior.logits(tokens, prefix)
        condition = prior._condition(prefix)
        inputs = prior._teacher_inputs(tokens, condition)
        cache = ScaleCache(prior.net)
        stepped = torch.cat([prior.head(cache(inputs[:, s:e], condition)) for s, e in [(0, 1), (1, 5), (5, L)]], 1)
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-5)
    with pytest.raises(NotImplementedError, match="var prior's x-transformers encoder only"):
        ScaleCache(GPTPrior(codebook_size=K, grid_size=(4, 4), dim=32, heads=2, depth=1).net.attn_layers)


def test_blocks_recompute_exactly_under_activation_checkpointing():
    import copy

    from vqtk.train.fsdp import checkpoint_blocks

    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=2, num_classes=2).eval()
    recomputing = copy.deepcopy(prior)
    checkpoint_blocks(recomputing.blocks())
    assert len(prior.blocks()) == 4  # attention and feed-forward of each of the 2 layers
    tokens, labels = torch.randint(0, K, (3, L)), torch.tensor([0, 1, 1])
    for model in (prior, recomputing):
        model.loss(tokens, labels).loss.backward()
    for (name, a), b in zip(prior.named_parameters(), recomputing.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


# -- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        SamplingOptions(),
        SamplingOptions(temperature=0.0),
        SamplingOptions(temperature=0.8, top_k=5, top_p=0.9),
        SamplingOptions(temperature=1.3, top_k=3),
        SamplingOptions(cfg_scale=2.5),
    ],
    ids=["t1", "greedy", "t0.8-k5-p0.9", "t1.3-k3", "cfg2.5"],
)
@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_cached_and_uncached_sampling_give_identical_codes(options, schedule):
    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=2, num_classes=3, label_dropout=0.1, cfg_schedule=schedule)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    cached = prior.sample(6, labels=labels, options=options, generator=seeded(3))
    uncached = prior.sample(6, labels=labels, options=_options(options, use_cache=False), generator=seeded(3))
    assert cached.shape == (6, L) and cached.dtype == torch.long and ((0 <= cached) & (cached < K)).all()
    assert torch.equal(cached, uncached)
    if options.temperature > 0:
        assert not torch.equal(cached, prior.sample(6, labels=labels, options=options, generator=seeded(4)))


@pytest.mark.parametrize("scales", [[[2, 2], [3, 3], [5, 5]], [[1, 2], [2, 3], [3, 5]], [[3, 3]]],
                         ids=["first-2x2-uneven", "non-square", "one-scale"])
@pytest.mark.parametrize("interpolation", ["bicubic", "nearest"])
def test_other_scale_lists(scales, interpolation):
    torch.manual_seed(0)
    prior = VARPrior(codebook_size=K, grid_size=scales[-1], scales=scales, dim=32, heads=2, depth=1,
                     interpolation=interpolation)
    length = sum(h * w for h, w in scales)
    assert torch.isfinite(prior.loss(torch.randint(0, K, (2, length))).loss)
    cached = prior.sample(3, generator=seeded(0))
    assert cached.shape == (3, length)
    assert torch.equal(cached, prior.sample(3, options=SamplingOptions(use_cache=False), generator=seeded(0)))


def test_greedy_and_top_k_samples_follow_the_training_forward():
    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=2, num_classes=2).eval()
    labels = torch.tensor([0, 1, 1, 0])
    prefix = labels[:, None] + K
    greedy = prior.sample(4, labels=labels, options=SamplingOptions(temperature=0.0))
    assert torch.equal(prior.logits(greedy, prefix).argmax(-1), greedy)
    top2 = prior.sample(64, labels=labels.repeat(16), options=SamplingOptions(top_k=2, temperature=2.0),
                        generator=seeded(0))
    best2 = prior.logits(top2, labels.repeat(16)[:, None] + K).topk(2, dim=-1).indices
    assert (best2 == top2[..., None]).any(-1).all()  # every code among the 2 best of its position
    assert not (best2[..., 0] == top2).all()  # and not always the best one
    assert torch.equal(prior.sample(4, labels=labels, options=SamplingOptions(top_k=1), generator=seeded(1)), greedy)


def test_sampling_is_reproducible_and_leaves_the_mode_alone():
    torch.manual_seed(0)
    prior = VARPrior(**TINY, depth=1, dropout=0.1)
    prior.train()
    a = prior.sample(4, generator=seeded(7))
    assert prior.training and not a.requires_grad
    assert torch.equal(a, prior.sample(4, generator=seeded(7)))
    assert torch.equal(a, prior.sample(4, grid_size=(4, 4), generator=seeded(7)))


def test_learns_a_planted_joint_pattern_across_scales(trained):
    prior, losses = trained
    assert abs(losses[0] - math.log(K)) < 0.3
    # the best possible: ln 2 for the 1x1 code, nothing after, over 21 codes
    assert sum(losses[-5:]) / 5 < math.log(2) / L + 0.03
    for use_cache in (True, False):
        got = share(prior.sample(128, options=SamplingOptions(use_cache=use_cache), generator=seeded(0)))
        assert got.sum() >= 0.9 and got.min() >= 0.25, got  # both modes, whole patterns


def test_guidance_moves_the_class_distribution_toward_the_label(conditional):
    prior = conditional
    labels = torch.tensor([0] * 64 + [1] * 64)

    def on_label(scale: float) -> tuple[float, float]:
        """Fraction whose 1x1 code (it decides the pattern) is the label's, and of whole label patterns."""
        samples = prior.sample(128, labels=labels, options=SamplingOptions(cfg_scale=scale), generator=seeded(0))
        whole = (share(samples[:64])[0] + share(samples[64:])[1]) / 2
        return (samples[:, 0] == PATTERNS[labels, 0]).float().mean().item(), whole.item()

    (unconditional, _), (conditioned, _), (guided, whole) = on_label(0.0), on_label(1.0), on_label(2.0)
    assert 0.25 <= unconditional <= 0.75  # cfg_scale 0 is the null class alone: either pattern
    assert conditioned >= 0.9 and guided >= conditioned and whole >= 0.9
    # the label's probability at the first scale grows with the guidance scale
    with torch.no_grad():
        prefix = torch.tensor([[K + 1], [K + 2]])  # class 1, the null class
        cond, uncond = prior.logits(PATTERNS[:1].repeat(2, 1), prefix)[:, 0].unbind(0)
    label, other = PATTERNS[1, 0], PATTERNS[0, 0]
    odds = [(guide(cond, uncond, s)[label] - guide(cond, uncond, s)[other]).item() for s in (0.0, 1.0, 2.0)]
    assert odds == sorted(odds) and odds[0] < 1 < odds[1]  # label vs the other pattern: even unguided, ahead


def test_linear_guidance_ramp_over_scales():
    prior = VARPrior(**TINY, depth=1, num_classes=2, label_dropout=0.1, cfg_schedule="linear")
    assert [prior.guidance_scale(3.0, k) for k in range(3)] == [1.0, 2.0, 3.0]
    constant = VARPrior(**TINY, depth=1, num_classes=2, label_dropout=0.1)
    assert [constant.guidance_scale(3.0, k) for k in range(3)] == [3.0, 3.0, 3.0]


# -- bad input ----------------------------------------------------------------------------------


def test_refuses_other_grids_and_bad_indices():
    prior = VARPrior(**TINY, depth=1)
    with pytest.raises(PriorInputError, match=r"samples only its tokenizer's 4x4 code grid .* asked for 8x8"):
        prior.sample(1, grid_size=(8, 8))
    last_scale = r"grid_size \[8, 8\] must be the last of scales \[\[1, 1\], \[2, 2\], \[4, 4\]\]"
    with pytest.raises(VqtkError, match=last_scale):
        VARPrior(**{**TINY, "grid_size": (8, 8)}, depth=1)
    with pytest.raises(PriorInputError, match="scales: every scale must be at least 1x1"):
        VARPrior(**{**TINY, "scales": [[0, 1], [4, 4]]}, depth=1)
    with pytest.raises(PriorInputError, match=r"must be \(B, 21\) for 3 scales \(1, 2, 4\), got shape \(2, 4, 4\)"):
        prior.loss(torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(PriorInputError, match=r"indices must lie in \[0, 8\), got values in \[8, 8\]"):
        prior.loss(torch.full((2, L), 8))
    with pytest.raises(PriorInputError, match="indices must be integers"):
        prior.loss(torch.zeros(2, L))
    with pytest.raises(PriorInputError, match="unconditional .* but labels were given"):
        prior.loss(torch.zeros(2, L, dtype=torch.long), labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(PriorInputError, match="cfg_scale = 2.0 needs .* it is unconditional"):
        prior.sample(1, options=SamplingOptions(cfg_scale=2.0))
    with pytest.raises(PriorInputError, match="steps is for iterative"):
        prior.sample(1, options=SamplingOptions(steps=3))


def test_recipe_table_and_provided_scales(builtins_registry):
    from vqtk.build import build_component

    spec = builtins_registry.get("prior", "var")
    assert spec.component_class is VARPrior
    converter = RecipeConverter(builtins_registry)
    ref = converter.structure({"type": "var", "dim": 32, "heads": 2, "depth": 1}, PriorRef)
    facts = {"codebook_size": (K, "tokenizer"), "grid_size": ((4, 4), "tokenizer"),
             "num_codebooks": (1, "tokenizer"), "scales": (SCALES, "tokenizer")}
    prior = build_component(ref, "prior", builtins_registry, facts)
    assert isinstance(prior, VARPrior) and prior.layout == LAYOUT and prior.grid_size == (4, 4)
    with pytest.raises(RecipeError, match=r"grid_size \[8, 8\] must be the last of scales \[\[1, 1\], \[2, 2\], "):
        converter.structure({"type": "var", "scales": SCALES, "grid_size": [8, 8]}, PriorRef)
    with pytest.raises(RecipeError, match=r"scales: \[1\] must be \[rows, columns\] of at least 1, got \[0, 2\]"):
        converter.structure({"type": "var", "scales": [[1, 1], [0, 2]]}, PriorRef)


def test_passes_the_prior_contract(builtins_registry):
    from vqtk import testing

    table = {"codebook_size": 16, "grid_size": [4, 4], "scales": SCALES, "dim": 32, "depth": 1, "heads": 2}
    testing.check_component(builtins_registry, "prior", "var", table)
    testing.check_component(builtins_registry, "prior", "var", {**table, "num_classes": 3, "label_dropout": 0.1})


# -- with the msvq tokenizer ---------------------------------------------------------------------


MSVQ = Path(__file__).resolve().parents[2] / "plugins" / "vqtk_builtins" / "quantizers" / "msvq.py"


@pytest.mark.skipif(not MSVQ.exists(), reason="the msvq quantizer is not in this tree")
def test_prior_over_an_msvq_tokenizer_built_from_a_recipe_samples_images():
    from vqtk.build import build_prior, build_vqgan, check_prior_fits
    from vqtk.recipe import recipe_from_dict
    from vqtk.testing import tiny_recipe

    data = tiny_recipe(
        model={"quantizer": {"type": "msvq", "dim": 8, "codebook_size": 16, "scales": [1, 2, 4, 8]}},
        prior={"type": "var", "dim": 32, "heads": 2, "depth": 1, "code_dim": 8},
        prior_train={"steps": 2, "batch_size": 2},
    )
    recipe = recipe_from_dict(data)
    torch.manual_seed(0)
    tokenizer = build_vqgan(recipe).eval()
    resolution = recipe.data.config.resolution
    prior = build_prior(recipe, tokenizer, resolution)
    grid = tokenizer.latent_grid(resolution, resolution)
    check_prior_fits(prior, tokenizer, grid, "msvq")
    assert prior.scales == ((1, 1), (2, 2), (4, 4), (8, 8)) and prior.codebook_size == 16
    with torch.no_grad():
        codes = tokenizer.encode_to_indices(torch.rand(2, 3, resolution, resolution) * 2 - 1)
        assert codes.shape == (2, 1 + 4 + 16 + 64)
        assert torch.isfinite(prior.loss(codes).loss)
        samples = prior.sample(2, generator=seeded(0))
        images = tokenizer.decode_indices(samples)
    assert images.shape == (2, 3, resolution, resolution) and torch.isfinite(images).all()
