"""Each built-in quantizer's own semantics against hand computations: vq, factorized, ema_vq, residual, fsq, lfq
(gumbel: test_quantizer_gumbel.py)."""

from __future__ import annotations

import pytest
import torch
from quantizer_cases import build, latents

from vqtk_builtins.quantizers.ema_vq import EMAVectorQuantizer, ResidualVectorQuantizer
from vqtk_builtins.quantizers.fsq import FiniteScalarQuantizer
from vqtk_builtins.quantizers.lfq import LookupFreeQuantizer
from vqtk_builtins.quantizers.vq import VectorQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_ema_vq_and_residual_are_one_class_whose_layers_keep_their_checkpoint_keys():
    """``residual`` is ``ema_vq`` with 4 layers by default: one codebook keeps the ``vq.*`` keys of
    ema_vq checkpoints, several the ``rvq.*`` keys of residual ones."""
    single, layered = EMAVectorQuantizer(dim=4, codebook_size=8), ResidualVectorQuantizer(dim=4, codebook_size=8)
    assert type(single) is type(layered) and layered.num_codebooks == 4
    assert {k.split(".")[0] for k in single.state_dict()} == {"vq"}
    assert {k.split(".")[0] for k in layered.state_dict()} == {"rvq"}
    assert EMAVectorQuantizer(dim=4, codebook_size=8, num_quantizers=2)(torch.randn(1, 4, 2, 2)).indices.shape == (
        1, 2, 2, 2)
    # one residual layer is plain EMA VQ: (B, h, w) indices that lookup takes back
    one = ResidualVectorQuantizer(dim=4, codebook_size=8, num_quantizers=1).eval()
    out = one(torch.randn(1, 4, 2, 2))
    assert out.indices.shape == (1, 2, 2)
    torch.testing.assert_close(one.lookup(out.indices), out.quantized)


def test_only_a_single_ema_codebook_offers_dead_code_restarts():
    from vqtk.train.codebook_health import supports_restart

    assert supports_restart(EMAVectorQuantizer(dim=4, codebook_size=8))
    # residual layers' codes live in residual space: the health tracker warns instead of restarting them
    assert not supports_restart(ResidualVectorQuantizer(dim=4, codebook_size=8, num_quantizers=2))


def test_residual_with_cosine_codes_inverts_in_eval_mode():
    torch.manual_seed(0)
    q = ResidualVectorQuantizer(dim=4, codebook_size=8, num_quantizers=2, use_cosine_sim=True)
    q(torch.randn(2, 4, 3, 3))
    q.eval()
    out = q(torch.randn(2, 4, 3, 3))
    torch.testing.assert_close(q.lookup(out.indices), out.quantized, atol=1e-5, rtol=1e-5)


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
