"""The built-in gan loss: adversarial objectives, start step, adaptive weight and R1 penalty."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from loss_inputs import discriminator_inputs, make_inputs
from torch import nn

from vqtk.errors import VqtkError
from vqtk.interfaces import Discriminator
from vqtk_builtins.discriminators import PatchGANDiscriminator
from vqtk_builtins.losses import GANLoss, adaptive_weight, discriminator_objective, generator_objective

pytestmark = pytest.mark.usefixtures("empty_hub_dir")


class PixelLogits(Discriminator):
    """Returns pixel (0, 0) of channel 0 as each image's logit: hand-picked logits, no weights."""

    in_channels = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1, 0, 0]


def images_with_logits(*logits: float) -> torch.Tensor:
    x = torch.zeros(len(logits), 3, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(logits)
    return x


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# -- adversarial objectives ---------------------------------------------------------


REAL, FAKE = (2.0, 0.5), (-1.0, 0.5)


@pytest.mark.parametrize(
    "objective,d_expected,g_expected",
    [
        ("hinge", 0.5 * ((0.0 + 0.5) / 2 + (0.0 + 1.5) / 2), -(-1.0 + 0.5) / 2),
        (
            "vanilla",
            0.5 * ((softplus(-2.0) + softplus(-0.5)) / 2 + (softplus(-1.0) + softplus(0.5)) / 2),
            -(-1.0 + 0.5) / 2,
        ),
        (
            "non_saturating",
            0.5 * ((softplus(-2.0) + softplus(-0.5)) / 2 + (softplus(-1.0) + softplus(0.5)) / 2),
            (softplus(1.0) + softplus(-0.5)) / 2,
        ),
    ],
)
def test_objectives_on_hand_picked_logits(objective, d_expected, g_expected):
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    assert discriminator_objective(objective, real, fake).item() == pytest.approx(d_expected)
    assert generator_objective(objective, fake).item() == pytest.approx(g_expected)
    loss = GANLoss(objective=objective, adaptive=False)
    real, fake = images_with_logits(*REAL), images_with_logits(*FAKE)
    d_term = loss.discriminator_loss(discriminator_inputs(real, fake, loss, discriminator=PixelLogits()))
    assert d_term.value.item() == pytest.approx(d_expected)
    assert d_term.logs["d_loss"].item() == pytest.approx(d_expected)
    assert d_term.logs["logits_real"].item() == pytest.approx(1.25)
    assert d_term.logs["logits_fake"].item() == pytest.approx(-0.25)
    g_term = loss.generator_loss(make_inputs(real, fake, discriminator=PixelLogits()))
    assert g_term.value.item() == pytest.approx(g_expected)
    assert g_term.logs["g_loss"].item() == pytest.approx(g_expected)
    assert g_term.logs["adaptive_weight"].item() == 1.0 and g_term.logs["factor"].item() == 1.0


def test_start_step_zeroes_both_terms_before_it():
    torch.manual_seed(0)
    disc = PatchGANDiscriminator(ndf=4, n_layers=1, norm="none")
    loss = GANLoss(start_step=5, adaptive=False)
    real, recon = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16, requires_grad=True)
    g = loss.generator_loss(make_inputs(real, recon, discriminator=disc, step=4))
    d = loss.discriminator_loss(discriminator_inputs(real, recon, loss, discriminator=disc, step=4))
    assert g.value.item() == 0.0 and d.value.item() == 0.0
    assert g.logs["factor"].item() == 0.0 and d.logs["factor"].item() == 0.0
    (g.value + d.value).backward()  # a trainer may backprop unconditionally
    assert all(p.grad is None for p in disc.parameters())  # the discriminator was not even run
    assert recon.grad is None
    g = loss.generator_loss(make_inputs(real, recon, discriminator=disc, step=5))
    d = loss.discriminator_loss(discriminator_inputs(real, recon, loss, discriminator=disc, step=5))
    assert g.value.abs().item() > 0 and d.value.item() > 0
    assert g.logs["factor"].item() == 1.0


def test_discriminator_warms_up_before_the_generator_term_starts_and_the_term_ramps():
    torch.manual_seed(0)
    disc = PatchGANDiscriminator(ndf=4, n_layers=1, norm="none")
    loss = GANLoss(start_step=10, disc_warmup_steps=4, ramp_steps=4, adaptive=False)
    real, recon = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16, requires_grad=True)

    def terms(step):
        g = loss.generator_loss(make_inputs(real, recon, discriminator=disc, step=step))
        d = loss.discriminator_loss(discriminator_inputs(real, recon, loss, discriminator=disc, step=step))
        return g, d

    g, d = terms(5)  # before the warm-up: nothing runs
    assert g.value.item() == 0.0 and d.value.item() == 0.0 and d.logs["factor"].item() == 0.0
    g, d = terms(6)  # warm-up: the discriminator learns, the generator's term is still zero
    assert d.value.item() > 0 and g.value.item() == 0.0 and g.logs["factor"].item() == 0.0
    d.value.backward()
    assert all(p.grad is not None for p in disc.parameters())
    assert [loss.factor(s) for s in (9, 10, 11, 12, 13, 100)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    g, _ = terms(11)
    g_full = GANLoss(start_step=10, adaptive=False).generator_loss(make_inputs(real, recon, discriminator=disc, step=11))
    assert g.value.item() == pytest.approx(0.5 * g_full.value.item())
    assert g.logs["factor"].item() == 0.5


class TinyGenerator(nn.Module):
    """A decoder-like pair of convs; ``out`` is the layer whose weight balances the losses."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(4, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, z):
        return self.out(F.leaky_relu(self.body(z), 0.2))


def test_adaptive_weight_equals_a_hand_computation():
    torch.manual_seed(0)
    gen, disc = TinyGenerator(), PatchGANDiscriminator(ndf=4, n_layers=1, norm="none")
    real, z = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 4, 16, 16)
    recon = gen(z)
    nll = (real - recon).abs().mean()
    # by hand: gradients of both losses at the last layer
    g_loss = -disc(recon).mean()
    nll_grad = torch.autograd.grad(nll, gen.out.weight, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, gen.out.weight, retain_graph=True)[0]
    expected = (nll_grad.norm() / (g_grad.norm() + 1e-4)).item()
    assert 0 < expected < 1e4

    inputs = make_inputs(
        real, recon, discriminator=disc, last_layer=gen.out.weight, reconstruction_loss=nll, step=3
    )
    term = GANLoss(objective="hinge").generator_loss(inputs)
    assert term.logs["adaptive_weight"].item() == pytest.approx(expected, rel=1e-5)
    assert term.value.item() == pytest.approx(expected * g_loss.item(), rel=1e-5)
    assert not term.logs["adaptive_weight"].requires_grad
    # the weight is a constant: the term's gradient at the last layer is weight * dg/dW
    grad = torch.autograd.grad(term.value, gen.out.weight, retain_graph=True)[0]
    torch.testing.assert_close(grad, expected * g_grad, rtol=1e-4, atol=1e-7)
    # the helper itself, and its clamp
    assert adaptive_weight(nll, g_loss, gen.out.weight).item() == pytest.approx(expected, rel=1e-5)
    small = GANLoss(max_adaptive_weight=expected / 10).generator_loss(inputs)
    assert small.logs["adaptive_weight"].item() == pytest.approx(expected / 10, rel=1e-5)


def test_adaptive_weight_falls_back_to_zero_with_a_reason_logged_once(caplog):
    torch.manual_seed(0)
    gen, disc = TinyGenerator(), PatchGANDiscriminator(ndf=4, n_layers=1, norm="none")
    real, recon = torch.randn(1, 3, 16, 16), gen(torch.randn(1, 4, 16, 16))
    nll = (real - recon).abs().mean()
    loss = GANLoss()
    no_layer = make_inputs(real, recon, discriminator=disc, reconstruction_loss=nll)
    with caplog.at_level(logging.INFO, logger="vqtk"):
        for _ in range(3):
            term = loss.generator_loss(no_layer)
            assert term.value.item() == 0.0 and term.logs["adaptive_weight"].item() == 0.0
    reasons = [r for r in caplog.records if "adaptive weight set to 0" in r.getMessage()]
    assert len(reasons) == 1 and "last layer" in reasons[0].getMessage()
    assert reasons[0].levelno == logging.WARNING
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vqtk"), torch.no_grad():  # evaluation
        full = make_inputs(real, gen(torch.randn(1, 4, 16, 16)), discriminator=disc,
                           last_layer=gen.out.weight, reconstruction_loss=torch.tensor(1.0))  # fmt: skip
        term = loss.generator_loss(full)
        assert term.logs["adaptive_weight"].item() == 0.0
        assert term.logs["g_loss"].item() != 0.0
    assert any("gradients are disabled" in r.getMessage() for r in caplog.records)
    # reconstruction loss missing while gradients are on
    term = GANLoss().generator_loss(make_inputs(real, recon, discriminator=disc, last_layer=gen.out.weight))
    assert term.logs["adaptive_weight"].item() == 0.0


def test_discriminator_loss_never_reaches_the_generator():
    torch.manual_seed(0)
    gen, disc = TinyGenerator(), PatchGANDiscriminator(ndf=4, n_layers=1, norm="batch")
    z, real = torch.randn(2, 4, 16, 16), torch.randn(2, 3, 16, 16)
    recon = gen(z)  # attached to the generator's graph on purpose
    for r1_gamma in (0.0, 1.0):
        gen.zero_grad(set_to_none=True)
        disc.zero_grad(set_to_none=True)
        loss = GANLoss(r1_gamma=r1_gamma)
        # the discriminator phase scores the reconstruction detached, whatever the caller passed
        term = loss.discriminator_loss(discriminator_inputs(real, recon, loss, discriminator=disc, step=0))
        term.value.backward()
        for name, p in gen.named_parameters():
            assert p.grad is None or not p.grad.any(), name
        for name, p in disc.named_parameters():
            assert p.grad is not None, name
        assert disc.main[0].weight.grad.abs().sum() > 0 and disc.main[2].weight.grad.abs().sum() > 0
        assert set(term.logs) >= {"d_loss", "logits_real", "logits_fake"}
    assert "r1_penalty" in term.logs


class LinearCritic(Discriminator):
    """D(x) = <w, x> per image: its input gradient is w, so R1 = ||w||^2."""

    in_channels = 3

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4, 4))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


def test_r1_penalty_matches_a_hand_computation():
    torch.manual_seed(0)
    critic = LinearCritic()
    real, fake = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    plain_loss, loss = GANLoss(r1_gamma=0.0), GANLoss(r1_gamma=3.0)
    assert not plain_loss.needs_real_gradients and loss.needs_real_gradients
    plain = plain_loss.discriminator_loss(discriminator_inputs(real, fake, plain_loss, discriminator=critic))
    assert "r1_penalty" not in plain.logs
    inputs = discriminator_inputs(real, fake, loss, discriminator=critic)
    term = loss.discriminator_loss(inputs)
    assert inputs.discriminator_logits(real=True).real_images.requires_grad  # the shared real images
    w_sq = critic.w.detach().square().sum().item()
    assert term.logs["r1_penalty"].item() == pytest.approx(w_sq, rel=1e-5)
    assert term.value.item() == pytest.approx(plain.value.item() + 1.5 * w_sq, rel=1e-5)
    # the penalty's gradient reaches the critic: d/dw (gamma/2 ||w||^2) = gamma * w
    (plain_grad,) = torch.autograd.grad(plain.value, critic.w)
    (grad,) = torch.autograd.grad(term.value, critic.w)
    torch.testing.assert_close(grad - plain_grad, 3.0 * critic.w.detach(), rtol=1e-4, atol=1e-5)
    assert not real.requires_grad  # the caller's tensor is untouched
    with torch.no_grad():  # evaluation: no penalty, no error
        assert "r1_penalty" not in loss.discriminator_loss(discriminator_inputs(real, fake, discriminator=critic)).logs
    # R1 with real images scored without grad is a wiring mistake, said as such
    with pytest.raises(RuntimeError, match=r"r1_gamma > 0 needs the real images to require grad"):
        loss.discriminator_loss(discriminator_inputs(real, fake, discriminator=critic, real_requires_grad=False))


def test_gan_without_a_discriminator_says_so():
    inputs = make_inputs(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(VqtkError, match=r"loss gan: needs a discriminator; add a \[model.discriminator\]"):
        GANLoss().generator_loss(inputs)
    with pytest.raises(VqtkError, match="needs a discriminator"):
        GANLoss().discriminator_loss(discriminator_inputs(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)))
