"""The built-in quantizers: contracts, losses against hand computations, usage on toy problems."""

from __future__ import annotations

import logging
import math

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vqtk_builtins
from vqtk.errors import VqtkError
from vqtk.interfaces import Quantizer
from vqtk.recipe.converter import RecipeConverter
from vqtk.registry import Registry
from vqtk_builtins.quantizers import builders as qb
from vqtk_builtins.quantizers.ema_vq import EMAVectorQuantizer
from vqtk_builtins.quantizers.fsq import FiniteScalarQuantizer
from vqtk_builtins.quantizers.lfq import LookupFreeQuantizer
from vqtk_builtins.quantizers.residual import ResidualVectorQuantizer
from vqtk_builtins.quantizers.vq import VectorQuantizer

NAMES = ("vq", "ema_vq", "factorized", "residual", "fsq", "lfq", "simvq")
BUILD = {
    "vq": qb.build_vq,
    "ema_vq": qb.build_ema_vq,
    "factorized": qb.build_factorized,
    "residual": qb.build_residual,
    "fsq": qb.build_fsq,
    "lfq": qb.build_lfq,
    "simvq": qb.build_simvq,
}

# (registered name, tiny config, expected codebook_size, expected num_codebooks)
CASES = {
    "vq": ("vq", qb.VQConfig(dim=8, codebook_size=16), 16, 1),
    "vq-factorised-cosine": (
        "vq",
        qb.VQConfig(dim=8, codebook_size=16, codebook_dim=4, use_cosine_sim=True, rotation_trick=True),
        16,
        1,
    ),
    "vq-kmeans-deadcode": (
        "vq",
        qb.VQConfig(dim=8, codebook_size=16, kmeans_init=True, kmeans_iters=2, threshold_ema_dead_code=1.0),
        16,
        1,
    ),
    "ema_vq": ("ema_vq", qb.EMAVQConfig(dim=8, codebook_size=16), 16, 1),
    "ema_vq-factorised-cosine-kmeans": (
        "ema_vq",
        qb.EMAVQConfig(dim=8, codebook_size=16, codebook_dim=4, use_cosine_sim=True, kmeans_init=True),
        16,
        1,
    ),
    "factorized": ("factorized", qb.FactorizedConfig(dim=8, codebook_size=16, codebook_dim=4), 16, 1),
    "factorized-entropy": (
        "factorized",
        qb.FactorizedConfig(dim=8, codebook_size=16, codebook_dim=4, entropy_loss_weight=0.1),
        16,
        1,
    ),
    "residual": ("residual", qb.ResidualConfig(dim=8, codebook_size=16, num_quantizers=3), 16, 3),
    "residual-factorised": (
        "residual",
        qb.ResidualConfig(dim=8, codebook_size=16, num_quantizers=2, codebook_dim=4),
        16,
        2,
    ),
    "fsq": ("fsq", qb.FSQConfig(levels=(3, 5), dim=8), 15, 1),
    "fsq-noproj-symmetric": ("fsq", qb.FSQConfig(levels=(2, 4, 4), preserve_symmetry=True), 32, 1),
    "lfq": ("lfq", qb.LFQConfig(dim=8, codebook_size=16), 16, 1),
    "lfq-bits": ("lfq", qb.LFQConfig(dim=5), 32, 1),
    "simvq": ("simvq", qb.SimVQConfig(dim=8, codebook_size=16), 16, 1),
    "simvq-straight-through": (
        "simvq",
        qb.SimVQConfig(dim=8, codebook_size=16, rotation_trick=False, frozen_codebook_dim=4),
        16,
        1,
    ),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: with other processes on the 2 cores, a second
    intra-op thread makes each step up to 30x slower (spinning OpenMP workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(case: str, seed: int = 0) -> Quantizer:
    name, config, _, _ = CASES[case]
    torch.manual_seed(seed)
    return BUILD[name](config)


def latents(q: Quantizer, batch: int = 2, h: int = 4, w: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, q.dim, h, w, generator=g)


# -- registry ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry()
    reg.register_plugin(vqtk_builtins, "builtins")
    return reg


def test_every_quantizer_is_registered_and_builds_through_the_registry(registry):
    assert set(NAMES) <= set(registry.names("quantizer"))
    for case, (name, config, size, q_count) in CASES.items():
        spec = registry.get("quantizer", name)
        assert spec.config is type(config)
        assert spec.doc, name
        q = spec.create(config)
        assert isinstance(q, Quantizer), case
        dim = config.dim or (len(config.levels) if name == "fsq" else int(math.log2(size)))
        assert (q.dim, q.codebook_size, q.num_codebooks) == (dim, size, q_count)


def test_default_configs_build():
    # Defaults only (LFQ needs a size or a number of bits).
    for name in NAMES:
        config = qb.LFQConfig(codebook_size=1024) if name == "lfq" else type(CASES[name][1])()
        assert BUILD[name](config).codebook_size >= 2
    assert qb.FactorizedConfig().codebook_size == 16384 and qb.FactorizedConfig().codebook_dim == 8
    assert qb.VQConfig().beta == 0.25 and qb.FSQConfig().levels == (8, 5, 5, 5)


def test_recipe_table_structures_into_config(registry):
    converter = RecipeConverter(registry)
    config = converter.structure({"levels": [4, 4, 4], "dim": 16}, qb.FSQConfig)
    assert config == qb.FSQConfig(levels=(4, 4, 4), dim=16)
    with pytest.raises(VqtkError, match=r"levels: \[0\] must be >= 2, got 1"):
        converter.structure({"levels": [1, 5]}, qb.FSQConfig)


# -- the contract, for every quantizer ------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_record_shapes_dtypes_and_metrics(case):
    q = build(case)
    z = latents(q)
    out = q(z)
    assert out.quantized.shape == z.shape and out.quantized.dtype == torch.float32
    assert out.indices.dtype == torch.int64
    assert tuple(out.indices.shape) == (2, 4, 3, *q.index_shape_suffix)
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < q.codebook_size
    assert out.loss.dim() == 0 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    for key, value in out.metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, key
        assert not value.requires_grad, key
    per_codebook = out.indices.reshape(-1, q.num_codebooks)
    used = [torch.unique(per_codebook[:, i]).numel() for i in range(q.num_codebooks)]
    assert out.metrics["usage"].item() == pytest.approx(sum(used) / len(used) / q.codebook_size)
    # perplexity of each codebook lies in [1, codes used]; the record holds their mean
    assert 1.0 <= out.metrics["perplexity"].item() <= max(used) + 1e-4


@pytest.mark.parametrize("case", CASES)
def test_quantized_keeps_the_input_memory_layout(case):
    """Plain latents give plain codes and channels_last give channels_last, in forward and lookup;
    a channels_last view leaking out made the decoder's backward several times slower."""
    q = build(case)
    z = latents(q)
    plain = q(z)
    assert plain.quantized.is_contiguous()
    assert q.lookup(plain.indices).is_contiguous()
    cl = q(z.contiguous(memory_format=torch.channels_last)).quantized
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()


@pytest.mark.parametrize("case", CASES)
def test_gradients_reach_the_input(case):
    q = build(case)
    z = latents(q).requires_grad_()
    out = q(z)
    (out.quantized * torch.randn_like(out.quantized)).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("case", CASES)
def test_lookup_inverts_indices_in_eval_mode(case):
    q = build(case)
    q(latents(q, seed=5))  # one training step first (k-means init, EMA, dead codes)
    q.eval()
    for batch in (1, 3):
        with torch.no_grad():
            out = q(latents(q, batch=batch, seed=6))
            again = q.lookup(out.indices)
        assert again.shape == out.quantized.shape
        torch.testing.assert_close(again, out.quantized, atol=1e-5, rtol=1e-5)
        assert torch.equal(q(latents(q, batch=batch, seed=6)).indices, out.indices)  # deterministic


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip_gives_identical_outputs(case):
    q = build(case, seed=0)
    opt = torch.optim.SGD(q.parameters(), lr=0.1) if list(q.parameters()) else None
    for step in range(2):  # changes buffers (EMA, k-means, dead codes) and parameters
        out = q(latents(q, seed=10 + step))
        if opt is not None and out.loss.requires_grad:
            opt.zero_grad()
            (out.loss + out.quantized.square().mean()).backward()
            opt.step()
    state = {k: v.clone() for k, v in q.state_dict().items()}
    fresh = build(case, seed=123)
    fresh.load_state_dict(state)
    q.eval()
    fresh.eval()
    z = latents(q, seed=99)
    with torch.no_grad():
        a, b = q(z), fresh(z)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.quantized, b.quantized)
    assert torch.equal(q.lookup(a.indices), fresh.lookup(a.indices))


@pytest.mark.parametrize("case", CASES)
def test_input_with_wrong_channels_is_refused(case):
    q = build(case)
    want = rf"expected latents \(batch, {q.dim}, h, w\), got shape \(2, {q.dim + 1}, 4, 4\)"
    with pytest.raises(VqtkError, match=want):
        q(torch.randn(2, q.dim + 1, 4, 4))
    bad = torch.zeros(2, 4, 4, 7, dtype=torch.long)
    with pytest.raises(VqtkError, match="expected indices"):
        q.lookup(bad if q.num_codebooks == 1 else bad[..., 0])


def test_forward_under_autocast_runs_in_float32():
    q = build("fsq")
    z = latents(q).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    assert out.quantized.dtype == torch.float32


# -- vq: the taming-semantics loss --------------------------------------------------------------


def test_vq_loss_matches_hand_computation_with_beta_on_commitment():
    beta = 0.4
    q = VectorQuantizer(dim=2, codebook_size=3, beta=beta)
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.5]])
    with torch.no_grad():
        q.vq.codebook.copy_(codebook)
    # four latents at 1x4 positions, (B=1, D=2, h=1, w=4)
    points = torch.tensor([[0.1, -0.2], [0.8, 1.3], [-1.5, 0.4], [0.6, 0.5]])
    nearest = torch.tensor([0, 1, 2, 1])
    z = points.T.reshape(1, 2, 1, 4).clone().requires_grad_()
    out = q(z)
    assert out.indices.tolist() == [[nearest.tolist()]]
    e = codebook[nearest]
    sq = ((points - e) ** 2).mean()
    assert out.metrics["codebook_loss"].item() == pytest.approx(sq.item(), rel=1e-6)
    assert out.metrics["commitment"].item() == pytest.approx(sq.item(), rel=1e-6)
    assert out.loss.item() == pytest.approx((1 + beta) * sq.item(), rel=1e-6)
    # Gradients: the codebook gets only the codebook term (weight 1); the input only the
    # commitment term (weight beta). taming's legacy quantizer swaps these.
    out.loss.backward()
    n = points.numel()
    want_code_grad = torch.zeros(3, 2).index_add_(0, nearest, 2 * (e - points) / n)
    torch.testing.assert_close(q.vq._codebook.embed.grad[0], want_code_grad)
    want_z_grad = (beta * 2 * (points - e) / n).T.reshape(1, 2, 1, 4)
    torch.testing.assert_close(z.grad, want_z_grad)
    # straight-through: the quantized values are the codes, the gradient is the identity
    torch.testing.assert_close(out.quantized, e.T.reshape(1, 2, 1, 4))
    z.grad = None
    q(z).quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))


def test_vq_rotation_trick_changes_the_input_gradient():
    torch.manual_seed(0)
    q = VectorQuantizer(dim=4, codebook_size=8, rotation_trick=True)
    z = torch.randn(1, 4, 2, 2, requires_grad=True)
    out = q(z)
    torch.testing.assert_close(out.quantized, q.lookup(out.indices), atol=1e-5, rtol=1e-5)
    out.quantized.sum().backward()
    assert not torch.allclose(z.grad, torch.ones_like(z))


def test_vq_codebook_loss_decreases_on_fixed_vectors():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 8, 8)  # 256 vectors of dim 16
    q = VectorQuantizer(dim=16, codebook_size=64)
    opt = torch.optim.Adam(q.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        out = q(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    # the codebook term pulls the used codes onto their clusters (about halves in 30 steps)
    assert losses[-1] < 0.75 * losses[0]
    assert sum(losses[-5:]) < sum(losses[5:10]) < sum(losses[:5])


def test_vq_kmeans_init_places_codes_on_the_data():
    torch.manual_seed(0)
    q = VectorQuantizer(dim=4, codebook_size=8, kmeans_init=True, kmeans_iters=3)
    assert not bool(q.vq._codebook.initted)
    z = torch.randn(2, 4, 2, 2) * 3 + 5  # exactly 8 distinct vectors for 8 codes
    out = q(z)
    assert bool(q.vq._codebook.initted)
    assert out.loss.item() < 1e-10
    assert out.metrics["usage"].item() == 1.0


def test_factorized_codes_are_unit_vectors_in_the_low_dimension():
    q = build("factorized")
    codes = q.codes()
    assert codes.shape == (16, 4)
    torch.testing.assert_close(codes.norm(dim=-1), torch.ones(16))
    out = q(latents(q))
    assert set(out.metrics) >= {"codebook_loss", "commitment"}
    q2 = build("factorized-entropy")
    assert "entropy_loss" in q2(latents(q2)).metrics


# -- ema_vq --------------------------------------------------------------------------------


def test_ema_vq_codebook_is_a_buffer_moved_by_ema_and_dead_codes_are_replaced():
    torch.manual_seed(0)
    q = EMAVectorQuantizer(dim=4, codebook_size=8, beta=0.5, decay=0.9, threshold_ema_dead_code=2)
    assert not any(p.requires_grad for p in q.vq._codebook.parameters())
    z = torch.randn(2, 4, 3, 3) + 20.0  # far from the initial codes
    before = q.vq.codebook.clone()
    out = q(z)
    # Every code started "dead" (count 1 < 2): those the batch did not use were replaced by
    # latents of the batch; those it used moved towards the batch mean by EMA.
    tokens = z.permute(0, 2, 3, 1).reshape(-1, 4)
    on_data = torch.cdist(q.vq.codebook, tokens).min(dim=1).values < 1e-5
    used = torch.zeros(8, dtype=torch.bool)
    used[out.indices.unique()] = True
    assert on_data[~used].all()
    moved = q.vq.codebook[used] - before[used]
    assert (moved.mean(dim=-1) > 1.0).all()
    assert out.loss.item() == pytest.approx(0.5 * out.metrics["commitment"].item(), rel=1e-6)
    q.eval()
    with torch.no_grad():
        assert q(z).loss.item() == 0.0


# -- residual / fsq / lfq ----------------------------------------------------------------------


def test_residual_quantized_is_the_sum_of_its_layers_codes():
    q = ResidualVectorQuantizer(dim=4, num_quantizers=3, codebook_size=8)
    q.eval()
    out = q(torch.randn(1, 4, 2, 2))
    assert q.index_shape_suffix == (3,) and q.bits_per_position == 9
    codebooks = q.rvq.codebooks  # (Q, K, D)
    idx = out.indices.reshape(-1, 3)
    summed = sum(codebooks[i][idx[:, i]] for i in range(3))
    torch.testing.assert_close(out.quantized.permute(0, 2, 3, 1).reshape(-1, 4), summed)
    assert set(out.metrics) >= {"loss_q0", "loss_q1", "loss_q2"}


def test_fsq_codebook_size_and_zero_loss():
    q = FiniteScalarQuantizer(levels=(8, 5, 5, 5))
    assert q.codebook_size == 1000 and q.dim == 4
    out = q(torch.randn(2, 4, 2, 2, requires_grad=True))
    assert out.loss.item() == 0.0
    # codes are on the grid: 5 levels -> values in {-1, -0.5, 0, 0.5, 1} for channels 1..3
    grid = out.quantized[:, 1:] * 2
    torch.testing.assert_close(grid, grid.round())


def test_lfq_codes_are_signs_and_losses_are_logged():
    q = LookupFreeQuantizer(dim=4, entropy_loss_weight=0.1, commitment_loss_weight=0.25)
    assert q.codebook_size == 16
    out = q(torch.randn(2, 4, 3, 3))
    assert set(out.quantized.unique().tolist()) <= {-1.0, 1.0}
    m = out.metrics
    want = 0.1 * (m["per_sample_entropy"] - m["codebook_entropy"]) + 0.25 * m["commitment"]
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)


# -- codebook usage on a toy problem (LESSONS.md: collapse is a bug) ----------------------------


@pytest.mark.parametrize(
    "name,config",
    [
        ("ema_vq", qb.EMAVQConfig(dim=16, codebook_size=64, decay=0.8)),
        ("factorized", qb.FactorizedConfig(dim=16, codebook_size=64, codebook_dim=8)),
        ("fsq", qb.FSQConfig(levels=(4, 4, 4), dim=16)),
        ("lfq", qb.LFQConfig(dim=16, codebook_size=64)),
        ("simvq", qb.SimVQConfig(dim=16, codebook_size=64)),
        ("residual", qb.ResidualConfig(dim=16, codebook_size=64, num_quantizers=2, decay=0.8)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_codebook_usage_stays_high_while_training(name, config):
    torch.manual_seed(0)
    x = torch.randn(4, 16, 8, 8)  # 256 fixed vectors of dim 16
    q = BUILD[name](config)
    enc, dec = nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1)
    opt = torch.optim.Adam([*q.parameters(), *enc.parameters(), *dec.parameters()], lr=1e-2)
    for _ in range(25):
        out = q(enc(x))
        loss = F.mse_loss(dec(out.quantized), x) + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    with torch.no_grad():
        out = q(enc(x))
    assert out.metrics["usage"].item() > 0.3, out.metrics


# -- config validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: qb.VQConfig(codebook_size=0), "must be > 0, got 0"),
        (lambda: qb.VQConfig(dim=-1), "must be > 0, got -1"),
        (lambda: qb.VQConfig(beta=-0.1), "must be >= 0, got -0.1"),
        (lambda: qb.VQConfig(dim=8, codebook_dim=16), r"codebook_dim \(16\) must be <= dim \(8\)"),
        (lambda: qb.VQConfig(kmeans_iters=0), "must be > 0"),
        (lambda: qb.EMAVQConfig(decay=1.0), "strictly between 0 and 1, got 1.0"),
        (lambda: qb.EMAVQConfig(decay=0.0), "strictly between 0 and 1"),
        (lambda: qb.EMAVQConfig(eps=0.0), "must be > 0"),
        (lambda: qb.EMAVQConfig(threshold_ema_dead_code=-1.0), "must be >= 0"),
        (lambda: qb.FactorizedConfig(dim=4), r"codebook_dim \(8\) must be <= dim \(4\)"),
        (lambda: qb.FactorizedConfig(entropy_temperature=0.0), "must be > 0"),
        (lambda: qb.ResidualConfig(num_quantizers=0), "must be > 0"),
        (lambda: qb.FSQConfig(levels=()), "must not be empty"),
        (lambda: qb.FSQConfig(levels=(8, 1)), r"\[1\] must be >= 2, got 1"),
        (lambda: qb.FSQConfig(levels=(2, 5)), "levels of 2 need preserve_symmetry = true"),
        (lambda: qb.FSQConfig(levels=(8,) * 7), "2097152 codes, more than the 1048576 supported"),
        (lambda: qb.LFQConfig(codebook_size=1000), r"power of two >= 2, got 1000 \(e.g. 1024\)"),
        (lambda: qb.LFQConfig(codebook_size=1), "power of two >= 2"),
        (lambda: qb.LFQConfig(), "set codebook_size .* or dim"),
        (lambda: qb.LFQConfig(dim=32), r"2 \*\* dim \(32 bits\) is more than"),
        (lambda: qb.LFQConfig(codebook_size=16, entropy_loss_weight=-1.0), "must be >= 0"),
        (lambda: qb.SimVQConfig(frozen_codebook_dim=0), "must be > 0"),
    ],
)
def test_config_errors_have_messages(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_configs_are_toml_friendly_and_never_name_a_field_type():
    for name in NAMES:
        cls = type(CASES[name][1])
        assert cls.__doc__.strip(), name
        for field in attrs.fields(cls):
            assert field.name != "type"
            t = field.type
            text = t if isinstance(t, str) else repr(t)
            assert any(k in text for k in ("int", "float", "bool", "str")), (name, field.name, text)


def test_sync_codebook_without_distributed_is_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        q = qb.build_ema_vq(qb.EMAVQConfig(dim=4, codebook_size=8, sync_codebook=True))
    assert "sync_codebook = true ignored" in caplog.text
    assert q.vq._codebook.use_ddp is False
    q(torch.randn(1, 4, 2, 2))  # runs without touching torch.distributed
    assert math.isfinite(q(torch.randn(1, 4, 2, 2)).loss.item())
