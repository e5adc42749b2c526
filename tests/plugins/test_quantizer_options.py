"""The defining properties of the recent quantizer options, on hand-made examples: IBQ's gradient to every code,
the rotation trick's rotated and rescaled gradient, LlamaGen's entropy penalty, cosine / low-dimensional codes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from quantizer_cases import config, create
from torch import nn

from vqtk.errors import VqtkError
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import QuantizerRef
from vqtk_builtins.quantizers.ema_vq import EMAVectorQuantizer, ResidualVectorQuantizer
from vqtk_builtins.quantizers.ibq import IndexBackpropQuantizer
from vqtk_builtins.quantizers.vq import VectorQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")


def grid(points: torch.Tensor) -> torch.Tensor:
    """``(n, D)`` vectors as a ``(1, D, 1, n)`` latent grid (one row of n positions)."""
    return points.T.reshape(1, points.shape[1], 1, points.shape[0]).clone()


def tokens(z: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` back to ``(B*h*w, D)`` vectors."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


# -- IBQ: straight-through over the whole codebook softmax ----------------------------------------


def code_rows_with_gradient(grad: torch.Tensor | None) -> int:
    return 0 if grad is None else int((grad.abs().sum(dim=-1) > 0).sum())


@pytest.mark.parametrize("with_loss", [False, True], ids=["quantized-only", "quantized-and-loss"])
def test_ibq_gives_every_code_a_gradient_where_plain_vq_gives_few(with_loss):
    """One backward step: IBQ's 64 codes all get gradient; nearest-code VQ's only the 4 chosen ones at most."""
    z = 0.5 * torch.randn(1, 8, 2, 2, generator=torch.Generator().manual_seed(0))
    g = torch.randn(1, 8, 2, 2, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    ibq = IndexBackpropQuantizer(dim=8, codebook_size=64, entropy_loss_weight=0.0)  # no entropy help
    vq = VectorQuantizer(dim=8, codebook_size=64)
    for q in (ibq, vq):
        out = q(z.clone().requires_grad_())
        ((out.loss if with_loss else 0) + (out.quantized * g).sum()).backward()
    assert code_rows_with_gradient(ibq.embedding.weight.grad) == 64
    # 4 positions: at most the 4 chosen codes learn (none without the codebook term), >= 60 get no gradient
    assert code_rows_with_gradient(vq.vq._codebook.embed.grad) <= (4 if with_loss else 0)


def test_ibq_picks_the_highest_inner_product_and_its_loss_is_ibqs():
    q = IndexBackpropQuantizer(dim=2, codebook_size=2, beta=0.4)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.tensor([[0.9, 0.0], [3.0, 0.5]]))
    z = grid(torch.tensor([[1.0, 0.0]]))
    q.eval()
    out = q(z)
    # code 0 is the nearest (distance 0.1), code 1 the highest inner product (3.0 > 0.9): IBQ takes code 1
    assert out.indices.tolist() == [[[1]]]
    assert torch.equal(out.quantized, grid(torch.tensor([[3.0, 0.5]])))
    mse = (2.0**2 + 0.5**2) / 2
    # mse(q_st, z) + mse(z, sg(e)) + beta * mse(e, sg(z)), all equal to mse in value
    assert out.loss.item() == pytest.approx((2 + 0.4) * mse, rel=1e-6)
    assert out.metrics["commitment"].item() == pytest.approx(mse)


def test_ibq_gradients_are_those_of_ibqs_formula():
    """quantized = (hard - sg(soft) + soft) @ E and IBQ's loss, written out as in SEED-Voken: the same gradients."""
    torch.manual_seed(0)
    q = IndexBackpropQuantizer(dim=4, codebook_size=6, beta=0.25, entropy_loss_weight=0.0)
    z = torch.randn(2, 4, 2, 3, requires_grad=True)
    g = torch.randn(2, 4, 2, 3)
    out = q(z)
    (out.loss + (out.quantized * g).sum()).backward()
    ours = z.grad.clone(), q.embedding.weight.grad.clone()

    e = q.embedding.weight.detach().clone().requires_grad_()
    z2 = z.detach().clone().requires_grad_()
    logits = torch.einsum("bdhw,nd->bnhw", z2, e)
    soft = logits.softmax(dim=1)
    hard = torch.zeros_like(logits).scatter_(1, soft.argmax(dim=1, keepdim=True), 1.0)
    z_q = torch.einsum("bnhw,nd->bdhw", hard - soft.detach() + soft, e)
    z_q2 = torch.einsum("bnhw,nd->bdhw", hard, e)
    loss = ((z_q - z2) ** 2).mean() + ((z_q2.detach() - z2) ** 2).mean() + 0.25 * ((z_q2 - z2.detach()) ** 2).mean()
    (loss + (z_q * g).sum()).backward()
    torch.testing.assert_close(ours[0], z2.grad)
    torch.testing.assert_close(ours[1], e.grad)
    assert torch.equal(out.indices, hard.argmax(dim=1))


def test_ibq_entropy_penalty_matches_hand_computation():
    """Logits z . e = [0, 0] and [0, ln 3] at inverse temperature 1: soft assignments (1/2, 1/2) and (1/4, 3/4)."""
    q = IndexBackpropQuantizer(dim=2, codebook_size=2, beta=0.25, entropy_loss_weight=0.3, entropy_temperature=1.0,
                               sample_entropy_weight=0.5, codebook_entropy_weight=2.0)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    z = grid(torch.tensor([[0.0, 0.0], [math.log(3), 0.0]]))
    out = q(z)
    h = lambda *p: -sum(x * math.log(x) for x in p)  # noqa: E731
    sample = (h(0.5, 0.5) + h(0.25, 0.75)) / 2
    codebook = -sum(x * math.log(x + 1e-5) for x in (3 / 8, 5 / 8))
    assert out.metrics["sample_entropy"].item() == pytest.approx(sample, rel=1e-6)
    assert out.metrics["codebook_entropy"].item() == pytest.approx(codebook, rel=1e-6)
    penalty = 0.5 * sample - 2.0 * codebook
    assert out.metrics["entropy_loss"].item() == pytest.approx(penalty, rel=1e-6)
    mse = (math.log(3) - 1) ** 2 / 4  # position 2 takes code (1, 0); position 1 (tie) code 0, exactly
    assert out.indices.tolist() == [[[0, 1]]]
    assert out.loss.item() == pytest.approx((2 + 0.25) * mse + 0.3 * penalty, rel=1e-6)
    q.eval()
    assert q(z).loss.item() == pytest.approx((2 + 0.25) * mse, rel=1e-6)  # no entropy term in eval


# -- the rotation trick (Fifty et al. 2024) -----------------------------------------------------------


def rotated_gradient(z: torch.Tensor, e: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The rotation trick's gradient at z: ||e|| / ||z|| * R^T g, R the rotation taking z's direction to e's
    (arXiv 2410.06424, eq. 4.2: R = I - 2 r r^T + 2 e^ z^T, r = (z^ + e^) / ||z^ + e^||)."""
    zh, eh = z / z.norm(), e / e.norm()
    r = (zh + eh) / (zh + eh).norm()
    rotation = torch.eye(len(z)) - 2 * torch.outer(r, r) + 2 * torch.outer(eh, zh)
    return e.norm() / z.norm() * rotation.T @ g


def test_the_hand_made_rotation_takes_z_to_its_code():
    z, e = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    # z along x, its code along y: a 90-degree rotation, scaled by ||e|| / ||z|| = 1/2
    torch.testing.assert_close(rotated_gradient(z, e, torch.tensor([1.0, 0.0])), torch.tensor([0.0, -0.5]))
    torch.testing.assert_close(rotated_gradient(z, e, torch.tensor([0.0, 1.0])), torch.tensor([0.5, 0.0]))
    torch.manual_seed(0)
    z, e = torch.randn(5), torch.randn(5)
    zh, eh = z / z.norm(), e / e.norm()
    r = (zh + eh) / (zh + eh).norm()
    rotation = torch.eye(5) - 2 * torch.outer(r, r) + 2 * torch.outer(eh, zh)
    torch.testing.assert_close(rotation @ zh, eh)
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(5), atol=1e-5, rtol=1e-5)


def set_codebook(q, codebook: torch.Tensor) -> None:
    with torch.no_grad():
        if isinstance(q, VectorQuantizer):
            q.vq.codebook.copy_(codebook)
        else:
            q.vq._codebook.embed[0].copy_(codebook)


def codebook_quantizers(rotation_trick: bool):
    yield VectorQuantizer(dim=2, codebook_size=2, rotation_trick=rotation_trick)
    yield EMAVectorQuantizer(dim=2, codebook_size=2, rotation_trick=rotation_trick, threshold_ema_dead_code=0.0)


@pytest.mark.parametrize("kind", ["vq", "ema_vq"])
def test_straight_through_passes_the_gradient_unchanged_and_rotation_rotates_and_rescales_it(kind):
    """z = (2, 0) snaps to its code e = (0, 1): STE gives d/dz = d/dq; the rotation trick
    (||e|| / ||z||) R^T d/dq, perpendicular here and half as long."""
    codebook = torch.tensor([[0.0, 1.0], [-3.0, -3.0]])
    z0 = grid(torch.tensor([[2.0, 0.0]]))
    g = grid(torch.tensor([[0.6, 0.8]]))
    grads = {}
    for rotation in (False, True):
        q = dict(zip(["vq", "ema_vq"], codebook_quantizers(rotation)))[kind]
        set_codebook(q, codebook)
        z = z0.clone().requires_grad_()
        out = q(z)
        assert out.indices.tolist() == [[[0]]]
        torch.testing.assert_close(out.quantized, grid(torch.tensor([[0.0, 1.0]])))
        (out.quantized * g).sum().backward()
        grads[rotation] = tokens(z.grad)[0]
    assert torch.equal(grads[False], torch.tensor([0.6, 0.8]))  # exactly d loss / d q
    torch.testing.assert_close(grads[True], torch.tensor([0.4, -0.3]))  # 0.5 * R^T g, R = +90 degrees
    assert grads[True] @ grads[False] == pytest.approx(0.0, abs=1e-6)  # the direction changed
    assert grads[True].norm().item() == pytest.approx(0.5 * grads[False].norm().item())  # ||e|| / ||z||


@pytest.mark.parametrize("name", ["vq", "ema_vq"])
def test_rotation_trick_gradient_at_every_position_is_the_rotated_rescaled_one(name):
    torch.manual_seed(0)
    q = create(name, dim=4, codebook_size=8, rotation_trick=True, threshold_ema_dead_code=0.0)
    z = torch.randn(2, 4, 2, 3, requires_grad=True)
    g = torch.randn(2, 4, 2, 3)
    out = q(z)
    (out.quantized * g).sum().backward()
    for zi, ei, gi, grad in zip(tokens(z.detach()), tokens(out.quantized.detach()), tokens(g), tokens(z.grad)):
        torch.testing.assert_close(grad, rotated_gradient(zi, ei, gi), atol=1e-5, rtol=1e-4)
        assert grad.norm().item() == pytest.approx((ei.norm() / zi.norm() * gi.norm()).item(), rel=1e-4)
        assert not torch.allclose(grad, gi)


def test_residual_layers_each_rotate_their_residuals_gradient():
    """Two layers: d/dz = rot(z -> e1) + rot(z - e1 -> e2); straight-through gives 2 * d/dq (the library's
    ResidualVQ, one identity per layer)."""
    z0 = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    g = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(4))
    for rotation in (False, True):
        torch.manual_seed(0)
        q = ResidualVectorQuantizer(dim=4, codebook_size=8, num_quantizers=2, rotation_trick=rotation,
                                    threshold_ema_dead_code=0.0)
        codebooks = q.rvq.codebooks.detach().clone()  # before the EMA update of this step
        z = z0.clone().requires_grad_()
        out = q(z)
        (out.quantized * g).sum().backward()
        if not rotation:
            torch.testing.assert_close(z.grad, 2 * g)
            continue
        idx = out.indices.reshape(-1, 2)
        for i, (zi, gi, grad) in enumerate(zip(tokens(z0), tokens(g), tokens(z.grad))):
            e1, e2 = codebooks[0][idx[i, 0]], codebooks[1][idx[i, 1]]
            want = rotated_gradient(zi, e1, gi) + rotated_gradient(zi - e1, e2, gi)
            torch.testing.assert_close(grad, want, atol=1e-5, rtol=1e-4)


def test_rotation_trick_defaults_stay_off_for_the_ema_codebooks():
    assert config("ema_vq").rotation_trick is False and config("residual").rotation_trick is False
    assert config("vq").rotation_trick is False and config("simvq").rotation_trick is True


# -- LlamaGen's entropy penalty -----------------------------------------------------------------------


def on_code_example(**options) -> tuple[VectorQuantizer, torch.Tensor]:
    """Codes (0, 0) and (1, 0), latents on them: squared and plain distances are [0, 1] and [1, 0], so at
    inverse temperature ln 3 the soft assignments are (3/4, 1/4) and (1/4, 3/4)."""
    q = VectorQuantizer(dim=2, codebook_size=2, entropy_temperature=math.log(3), **options)
    with torch.no_grad():
        q.vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    return q, grid(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


def test_llamagen_entropy_penalty_matches_hand_computation():
    q, z = on_code_example(entropy_loss_weight=0.3, entropy_penalty="llamagen",
                           sample_entropy_weight=0.5, codebook_entropy_weight=2.0)
    out = q(z)
    sample = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # the same for both latents
    codebook = -math.log(0.5 + 1e-5)  # the batch average is (1/2, 1/2)
    assert out.metrics["sample_entropy"].item() == pytest.approx(sample, rel=1e-6)
    assert out.metrics["codebook_entropy"].item() == pytest.approx(codebook, rel=1e-6)
    assert out.metrics["entropy_loss"].item() == pytest.approx(0.5 * sample - 2.0 * codebook, rel=1e-6)
    # the latents sit on their codes: codebook and commitment terms are 0
    assert out.loss.item() == pytest.approx(0.3 * (0.5 * sample - 2.0 * codebook), rel=1e-6)
    q.eval()
    assert q(z).loss.item() == 0.0  # training only, as LlamaGen's


def test_llamagen_entropy_is_llamagens_on_its_factorised_cosine_codes():
    """LlamaGen's VectorQuantizer + compute_entropy_loss (tokenizer/tokenizer_image/vq_model.py), written out."""
    torch.manual_seed(0)
    q = create("factorized", dim=8, codebook_size=32, codebook_dim=4, entropy_loss_weight=0.1,
               entropy_penalty="llamagen")
    z = torch.randn(2, 8, 3, 3)
    out = q(z)
    z_flattened = F.normalize(q.project_in(tokens(z)), p=2, dim=-1).detach()
    embedding = F.normalize(q.vq.codebook.detach(), p=2, dim=-1)
    d = (torch.sum(z_flattened**2, dim=1, keepdim=True) + torch.sum(embedding**2, dim=1)
         - 2 * torch.einsum("bd,dn->bn", z_flattened, torch.einsum("n d -> d n", embedding)))
    flat_affinity = -d / 0.01
    probs = F.softmax(flat_affinity, dim=-1)
    log_probs = F.log_softmax(flat_affinity + 1e-5, dim=-1)
    avg_probs = torch.mean(probs, dim=0)
    avg_entropy = -torch.sum(avg_probs * torch.log(avg_probs + 1e-5))
    sample_entropy = -torch.mean(torch.sum(probs * log_probs, dim=-1))
    assert out.metrics["sample_entropy"].item() == pytest.approx(sample_entropy.item(), rel=1e-4, abs=1e-6)
    assert out.metrics["codebook_entropy"].item() == pytest.approx(avg_entropy.item(), rel=1e-5)
    want = out.metrics["codebook_loss"] * (1 + 0.25) + 0.1 * (sample_entropy - avg_entropy)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_llamagen_entropy_reaches_latents_and_every_code():
    torch.manual_seed(0)
    q = VectorQuantizer(dim=4, codebook_size=8, entropy_loss_weight=1.0, entropy_penalty="llamagen",
                        entropy_temperature=1.0, beta=0.0)
    z = torch.randn(1, 4, 2, 2, requires_grad=True)
    out = q(z)
    (out.loss - out.metrics["codebook_loss"]).backward()  # the entropy term alone (beta = 0)
    assert z.grad.abs().sum() > 0
    assert code_rows_with_gradient(q.vq._codebook.embed.grad[0]) == 8


def test_the_default_codebook_diversity_penalty_is_unchanged():
    """Existing recipes' entropy_loss_weight: minus the entropy of the batch-averaged softmax(-||z - e|| * T)."""
    assert config("vq").entropy_penalty == config("factorized").entropy_penalty == "codebook_diversity"
    q, z = on_code_example(entropy_loss_weight=0.3)
    out = q(z)
    assert out.metrics["entropy_loss"].item() == pytest.approx(-math.log(2), rel=1e-5)
    assert out.loss.item() == pytest.approx(-0.3 * math.log(2), rel=1e-5)
    assert "sample_entropy" not in out.metrics


@pytest.mark.parametrize(
    "table,message",
    [
        ({"type": "vq", "sample_entropy_weight": 0.5},
         r'^\(recipe\): sample_entropy_weight and codebook_entropy_weight apply to entropy_penalty = "llamagen"'),
        ({"type": "factorized", "entropy_penalty": "magvit"},
         r'^entropy_penalty: expected one of "codebook_diversity", "llamagen", got "magvit"$'),
    ],
)
def test_entropy_options_are_checked_in_recipes(builtins_registry, table, message):
    with pytest.raises(VqtkError, match=message):
        RecipeConverter(builtins_registry).structure(table, QuantizerRef)
    config("factorized", entropy_penalty="llamagen", codebook_entropy_weight=0.5)  # weights with LlamaGen's form


# -- cosine and low-dimensional codes on every codebook quantizer -----------------------------------------


CODEBOOKS = {
    "vq": lambda q: q.codes(),
    "ema_vq": lambda q: q.vq.codebook,
    "residual": lambda q: q.rvq.codebooks.reshape(-1, q.rvq.codebooks.shape[-1]),
    "simvq": lambda q: q.simvq.codebook,
    "ibq": lambda q: q.codes(),
}


@pytest.mark.parametrize("name", CODEBOOKS)
def test_cosine_codes_are_unit_vectors_in_the_low_dimension(name):
    torch.manual_seed(0)
    q = create(name, dim=8, codebook_size=16, codebook_dim=4, use_cosine_sim=True)
    assert any(isinstance(m, nn.Linear) and (m.in_features, m.out_features) == (8, 4) for m in q.modules())
    q(torch.randn(2, 8, 3, 3))  # one training step (EMA, dead codes)
    codes = CODEBOOKS[name](q).detach()
    assert codes.shape[-1] == 4
    torch.testing.assert_close(codes.norm(dim=-1), torch.ones(len(codes)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CODEBOOKS)
def test_cosine_codes_ignore_the_latents_length(name):
    """Without a projection, the nearest cosine code of z is that of 3 z (for residual, the first layer's:
    the later layers see z - e1, whose direction depends on z's length)."""
    torch.manual_seed(0)
    q = create(name, dim=4, codebook_size=16, use_cosine_sim=True).eval()
    z = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        a, b = q(z).indices, q(3 * z).indices
    if name == "residual":
        a, b = a[..., 0], b[..., 0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["simvq", "ibq"])
def test_a_codebook_wider_than_the_latent_is_refused(name):
    with pytest.raises(ValueError, match=r"codebook_dim \(16\) must be <= dim \(8\)"):
        config(name, dim=8, codebook_dim=16)


def test_simvq_default_state_dict_keys_are_unchanged():
    """Checkpoints of simvq written before codebook_dim / use_cosine_sim keep loading."""
    keys = set(create("simvq", dim=8, codebook_size=16).state_dict())
    assert keys == {"simvq.frozen_codebook", "simvq.code_transform.weight"}
    assert set(create("simvq", dim=8, codebook_size=16, use_cosine_sim=True).state_dict()) == keys
    assert set(create("ibq", dim=8, codebook_size=16).state_dict()) == {"embedding.weight"}
