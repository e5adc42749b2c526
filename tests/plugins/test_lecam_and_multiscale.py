"""Shared discriminator logits (GAN + LeCam run the discriminator once per phase), the LeCam
regulariser, the multi-scale PatchGAN, and the GAN loss on multi-scale logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_inputs import discriminator_inputs, make_inputs
from torch import nn

from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import Discriminator, logit_maps
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import DiscriminatorRef
from vqtk_builtins.discriminators import MultiScalePatchGANDiscriminator, PatchGANDiscriminator
from vqtk_builtins.losses import GANLoss, LeCamLoss, discriminator_objective, generator_objective


class PixelLogits(Discriminator):
    """Hand-picked logits, no weights: scale ``i`` returns pixel ``(i, i)`` of channel 0 of each image."""

    in_channels = 3

    def __init__(self, scales: int = 1):
        super().__init__()
        self.scales = scales

    def forward(self, x):
        maps = [x[:, :1, i, i] for i in range(self.scales)]
        return maps[0] if self.scales == 1 else maps


def images_with_logits(*per_scale: tuple[float, ...]) -> torch.Tensor:
    """Images whose pixel (i, i) holds the scale-i logits ``per_scale[i]`` (one value per image)."""
    x = torch.zeros(len(per_scale[0]), 3, 4, 4)
    for i, logits in enumerate(per_scale):
        x[:, 0, i, i] = torch.tensor(logits)
    return x


class CountingDiscriminator(Discriminator):
    """Wraps a discriminator and counts its forward calls (and the images it saw)."""

    def __init__(self, inner: Discriminator):
        super().__init__()
        self.inner = inner
        self.in_channels = inner.in_channels
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


# -- shared logits: one discriminator run per phase ---------------------------------------


@pytest.mark.parametrize("multiscale", [False, True])
def test_gan_and_lecam_run_the_discriminator_once_per_phase(multiscale):
    torch.manual_seed(0)
    inner = (
        MultiScalePatchGANDiscriminator(ndf=4, n_layers=1, norm="batch", num_scales=2)
        if multiscale
        else PatchGANDiscriminator(ndf=4, n_layers=1, norm="batch")
    )
    disc = CountingDiscriminator(inner)
    gan, lecam = GANLoss(adaptive=False, r1_gamma=1.0), LeCamLoss(decay=0.9)
    real = torch.randn(2, 3, 32, 32)
    recon = torch.randn(2, 3, 32, 32, requires_grad=True)

    # generator phase: the gan loss scores the reconstruction once
    gen = make_inputs(real, recon, discriminator=disc)
    gan.generator_loss(gen)
    assert disc.calls == 1

    # discriminator phase, in the trainer's order (adversarial losses first) on one LossInputs
    disc.calls = 0
    batchnorms = [m for m in disc.modules() if isinstance(m, nn.BatchNorm2d)]
    tracked = [int(m.num_batches_tracked) for m in batchnorms]
    inputs = discriminator_inputs(real, recon, gan, lecam, discriminator=disc)
    d_gan = gan.discriminator_loss(inputs)
    d_lecam = lecam.discriminator_loss(inputs)
    assert disc.calls == 2  # once on the reconstructions, once on the real images: not again for lecam
    # BatchNorm statistics saw each batch once
    assert [int(m.num_batches_tracked) for m in batchnorms] == [t + 2 for t in tracked]
    # the summed objective trains the discriminator, never the generator, R1 included
    total = d_gan.value + 0.1 * d_lecam.value
    total.backward()
    assert recon.grad is None
    assert all(p.grad is not None for p in disc.parameters())
    assert "r1_penalty" in d_gan.logs and int(lecam.num_updates) == 1


def test_lecam_alone_reads_the_same_logits_as_the_gan_loss():
    """Order does not matter: lecam first causes the run, the gan loss reuses it."""
    disc = CountingDiscriminator(PixelLogits())
    real, fake = images_with_logits((2.0, 0.5)), images_with_logits((-1.0, 0.5))
    inputs = discriminator_inputs(real, fake, discriminator=disc)
    LeCamLoss().discriminator_loss(inputs)
    GANLoss().discriminator_loss(inputs)
    assert disc.calls == 2


# -- LeCam ----------------------------------------------------------------------------------


def test_lecam_value_on_hand_computed_logits():
    lecam = LeCamLoss(decay=0.9)
    real, fake = images_with_logits((2.0, 0.5)), images_with_logits((-1.0, 0.5))
    # first update: the averages become the batch's mean logits (1.25 and -0.25)
    term = lecam.discriminator_loss(discriminator_inputs(real, fake, discriminator=PixelLogits()))
    assert lecam.ema_real.item() == pytest.approx(1.25) and lecam.ema_fake.item() == pytest.approx(-0.25)
    # mean(relu(real - ema_fake)^2) + mean(relu(ema_real - fake)^2)
    expected = (2.25**2 + 0.75**2) / 2 + (2.25**2 + 0.75**2) / 2
    assert term.value.item() == pytest.approx(expected)
    assert term.logs["penalty"].item() == pytest.approx(expected)
    assert term.logs["ema_real"].item() == pytest.approx(1.25)
    assert term.logs["ema_fake"].item() == pytest.approx(-0.25)
    # second update decays: ema = 0.9 * ema + 0.1 * batch mean
    real2, fake2 = images_with_logits((3.0, 1.0)), images_with_logits((0.0, -4.0))
    term = lecam.discriminator_loss(discriminator_inputs(real2, fake2, discriminator=PixelLogits()))
    ema_real, ema_fake = 0.9 * 1.25 + 0.1 * 2.0, 0.9 * -0.25 + 0.1 * -2.0
    assert lecam.ema_real.item() == pytest.approx(ema_real) and lecam.ema_fake.item() == pytest.approx(ema_fake)
    relu = lambda v: max(v, 0.0)  # noqa: E731
    expected = (relu(3.0 - ema_fake) ** 2 + relu(1.0 - ema_fake) ** 2) / 2 + (
        relu(ema_real - 0.0) ** 2 + relu(ema_real + 4.0) ** 2
    ) / 2
    assert term.value.item() == pytest.approx(expected)
    assert int(lecam.num_updates) == 2


def test_lecam_relu_clips_and_gradients_reach_the_discriminator():
    lecam = LeCamLoss().eval()  # eval: the averages stay as set
    lecam.ema_real.fill_(1.0), lecam.ema_fake.fill_(0.0), lecam.num_updates.fill_(5)
    critic = nn.Conv2d(3, 1, 1, bias=False)

    class Critic(Discriminator):
        in_channels = 3

        def forward(self, x):
            return critic(x)[:, :, 0, 0]

    real, fake = images_with_logits((2.0, -0.5)), images_with_logits((-1.0, 1.5))
    critic.weight.data.zero_()
    critic.weight.data[0, 0] = 1.0  # logit = channel 0 at pixel (0, 0)
    term = lecam.discriminator_loss(discriminator_inputs(real, fake, discriminator=Critic()))
    # real: relu(2 - 0)^2 = 4, relu(-0.5 - 0)^2 = 0; fake: relu(1 + 1)^2 = 4, relu(1 - 1.5)^2 = 0
    assert term.value.item() == pytest.approx(4 / 2 + 4 / 2)
    assert (lecam.ema_real.item(), lecam.ema_fake.item(), int(lecam.num_updates)) == (1.0, 0.0, 5)
    term.value.backward()
    # d/dw0 of mean(relu(w0 * r)^2) + mean(relu(1 - w0 * f)^2) at w0 = 1: (2*2*2)/2 + (2*2*1)/2 = 6
    assert critic.weight.grad[0, 0].item() == pytest.approx(6.0)


def test_lecam_buffers_are_saved_and_only_updated_when_training_the_discriminator():
    lecam = LeCamLoss(decay=0.5, start_step=3)
    assert set(lecam.state_dict()) == {"ema_real", "ema_fake", "num_updates"}
    assert list(lecam.parameters()) == []
    real, fake = images_with_logits((2.0, 0.5)), images_with_logits((-1.0, 0.5))
    disc = CountingDiscriminator(PixelLogits())
    # before start_step: zero (a leaf a trainer may backprop), no update, the discriminator not run
    early = lecam.discriminator_loss(discriminator_inputs(real, fake, discriminator=disc, step=2))
    assert early.value.item() == 0.0 and early.value.requires_grad and disc.calls == 0
    early.value.backward()
    assert int(lecam.num_updates) == 0
    # generator phase or eval mode: the penalty is computed but the averages do not move
    lecam.discriminator_loss(make_inputs(real, fake, discriminator=disc, step=3))
    lecam.eval()
    lecam.discriminator_loss(discriminator_inputs(real, fake, discriminator=disc, step=3))
    assert int(lecam.num_updates) == 0 and lecam.ema_real.item() == 0.0
    lecam.train()
    lecam.discriminator_loss(discriminator_inputs(real, fake, discriminator=disc, step=3))
    state = lecam.state_dict()
    assert int(state["num_updates"]) == 1 and state["ema_real"].item() == pytest.approx(1.25)
    # a resumed loss continues the averages (and does not re-initialise them from its first batch)
    resumed = LeCamLoss(decay=0.5, start_step=3)
    resumed.load_state_dict(state)
    resumed.discriminator_loss(discriminator_inputs(real, images_with_logits((1.0, 2.0)), discriminator=disc, step=4))
    assert resumed.ema_fake.item() == pytest.approx(0.5 * -0.25 + 0.5 * 1.5)
    assert LeCamLoss().generator_loss(make_inputs(real, fake)) is None  # no generator term


def test_lecam_averages_scales_and_needs_a_discriminator():
    lecam = LeCamLoss()
    real = images_with_logits((2.0, 0.5), (1.0, 1.0))
    fake = images_with_logits((-1.0, 0.5), (0.0, -2.0))
    term = lecam.discriminator_loss(discriminator_inputs(real, fake, discriminator=PixelLogits(scales=2)))
    ema_real, ema_fake = (1.25 + 1.0) / 2, (-0.25 - 1.0) / 2  # mean over scales of the mean logits
    assert lecam.ema_real.item() == pytest.approx(ema_real) and lecam.ema_fake.item() == pytest.approx(ema_fake)

    def scale(r, f):
        return sum(max(v - ema_fake, 0) ** 2 for v in r) / 2 + sum(max(ema_real - v, 0) ** 2 for v in f) / 2

    expected = (scale((2.0, 0.5), (-1.0, 0.5)) + scale((1.0, 1.0), (0.0, -2.0))) / 2
    assert term.value.item() == pytest.approx(expected)
    with pytest.raises(VqtkError, match=r"loss lecam: needs a discriminator"):
        LeCamLoss().discriminator_loss(discriminator_inputs(real, fake))


# -- multi-scale PatchGAN ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_scales,n_layers,size,expected",
    [
        (2, 1, (32, 32), [(14, 14), (6, 6)]),
        (3, 1, (32, 48), [(14, 22), (6, 10), (2, 4)]),
        (2, 2, (48, 48), [(10, 10), (4, 4)]),
        (1, 2, (32, 32), [(6, 6)]),
    ],
)
def test_multiscale_patchgan_returns_one_map_per_scale(num_scales, n_layers, size, expected):
    torch.manual_seed(0)
    disc = MultiScalePatchGANDiscriminator(ndf=4, n_layers=n_layers, num_scales=num_scales, norm="none")
    x = torch.randn(2, 3, *size)
    maps = disc(x)
    assert isinstance(maps, list) and logit_maps(maps) == maps
    assert [tuple(m.shape) for m in maps] == [(2, 1, *hw) for hw in expected]
    # scale i is its own PatchGAN on the image average-pooled by 2**i
    for i, (scale, out) in enumerate(zip(disc.scales, maps)):
        assert isinstance(scale, PatchGANDiscriminator)
        torch.testing.assert_close(out, scale(F.avg_pool2d(x, 2**i) if i else x))


def test_multiscale_patchgan_weights_state_and_size_check():
    disc = MultiScalePatchGANDiscriminator(ndf=4, n_layers=2, num_scales=2)
    assert disc.min_input_size == 24
    assert disc.scales[0].main[0].weight.data_ptr() != disc.scales[1].main[0].weight.data_ptr()
    single = PatchGANDiscriminator(ndf=4, n_layers=2)
    # each scale is laid out like taming's NLayerDiscriminator under scales.I.
    assert set(disc.state_dict()) == {f"scales.{i}.{k}" for i in range(2) for k in single.state_dict()}
    disc.scales[0].load_state_dict(single.state_dict())  # a single PatchGAN's weights load into a scale
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    sum(m.mean() for m in disc(x)).backward()
    assert all(p.grad is not None for p in disc.parameters()) and x.grad.abs().sum() > 0
    with pytest.raises(VqtkError, match=r"20x20 images are too small for n_layers = 2 and num_scales = 2 "
                                        r"\(needs at least 24 pixels a side\)"):  # fmt: skip
        disc(torch.randn(1, 3, 20, 20))


def test_multiscale_patchgan_through_the_registry(builtins_registry):
    spec = builtins_registry.get("discriminator", "multiscale_patchgan")
    config = spec.config()
    assert (config.in_channels, config.ndf, config.n_layers, config.norm, config.num_scales) == (3, 64, 3, "batch", 2)
    conv = RecipeConverter(builtins_registry)
    ref = conv.structure({"type": "multiscale_patchgan", "ndf": 4, "n_layers": 1, "num_scales": 3}, DiscriminatorRef)
    disc = spec.create(ref.config)
    assert isinstance(disc, MultiScalePatchGANDiscriminator) and len(disc.scales) == 3
    with pytest.raises(RecipeError, match=r"num_scales: must be >= 1, got 0"):
        conv.structure({"type": "multiscale_patchgan", "num_scales": 0}, DiscriminatorRef)
    with pytest.raises(RecipeError, match=r"norm: expected one of"):
        conv.structure({"type": "multiscale_patchgan", "norm": "layer"}, DiscriminatorRef)


# -- the GAN loss on multi-scale logits ----------------------------------------------------------

REAL = ((2.0, 0.5), (1.0, -1.0))  # scale 0, scale 1 (two images each)
FAKE = ((-1.0, 0.5), (0.5, 3.0))


def hinge_d(real, fake) -> float:
    return 0.5 * (sum(max(1 - v, 0) for v in real) / len(real) + sum(max(1 + v, 0) for v in fake) / len(fake))


@pytest.mark.parametrize("weights", [None, (1.0, 0.25), (0.0, 2.0)])
def test_gan_combines_per_scale_terms_with_scale_weights(weights):
    loss = GANLoss(adaptive=False, scale_weights=weights)
    real, fake = images_with_logits(*REAL), images_with_logits(*FAKE)
    per_scale_d = [hinge_d(r, f) for r, f in zip(REAL, FAKE)]
    per_scale_g = [-sum(f) / len(f) for f in FAKE]
    w = weights or (0.5, 0.5)  # default: the mean over scales
    d = loss.discriminator_loss(discriminator_inputs(real, fake, loss, discriminator=PixelLogits(scales=2)))
    assert d.value.item() == pytest.approx(w[0] * per_scale_d[0] + w[1] * per_scale_d[1])
    assert d.logs["d_loss/scale0"].item() == pytest.approx(per_scale_d[0])
    assert d.logs["d_loss/scale1"].item() == pytest.approx(per_scale_d[1])
    assert d.logs["logits_real/scale1"].item() == pytest.approx(0.0)
    assert d.logs["logits_fake"].item() == pytest.approx((-0.25 + 1.75) / 2)
    g = loss.generator_loss(make_inputs(real, fake, discriminator=PixelLogits(scales=2)))
    assert g.value.item() == pytest.approx(w[0] * per_scale_g[0] + w[1] * per_scale_g[1])
    assert g.logs["g_loss/scale0"].item() == pytest.approx(per_scale_g[0])
    assert g.logs["g_loss/scale1"].item() == pytest.approx(per_scale_g[1])


def test_gan_single_scale_gives_the_single_tensor_numbers():
    """One map (a tensor, a one-map list, or multiscale_patchgan with one scale) gives the plain objective."""
    torch.manual_seed(0)
    patch = PatchGANDiscriminator(ndf=4, n_layers=1, norm="none")
    one_scale = MultiScalePatchGANDiscriminator(ndf=4, n_layers=1, norm="none", num_scales=1)
    one_scale.scales[0].load_state_dict(patch.state_dict())
    real, recon = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    for objective in ("hinge", "vanilla", "non_saturating"):
        with torch.no_grad():  # the numbers of the single-tensor GAN loss, by its definition
            d_expected = discriminator_objective(objective, patch(real), patch(recon)).item()
            g_expected = generator_objective(objective, patch(recon)).item()
        for disc in (patch, one_scale):
            loss = GANLoss(objective=objective, adaptive=False)
            d = loss.discriminator_loss(discriminator_inputs(real, recon, discriminator=disc))
            assert d.value.item() == d_expected  # exactly, not approximately
            g = loss.generator_loss(make_inputs(real, recon, discriminator=disc))
            assert g.value.item() == g_expected
            assert not any("/scale" in k for k in (*g.logs, *d.logs))


def test_gan_r1_sums_over_scales():
    class TwoLinearCritics(Discriminator):
        """Scale s: D_s(x) = <w_s, x>; the critic's input gradient is w_0 + w_1."""

        in_channels = 3

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 3, 4, 4))

        def forward(self, x):
            return [(x * self.w[s]).flatten(1).sum(1, keepdim=True) for s in range(2)]

    torch.manual_seed(0)
    critic, loss = TwoLinearCritics(), GANLoss(r1_gamma=2.0)
    term = loss.discriminator_loss(
        discriminator_inputs(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), loss, discriminator=critic)
    )
    assert term.logs["r1_penalty"].item() == pytest.approx(critic.w.detach().sum(0).square().sum().item(), rel=1e-5)


def test_gan_scale_weights_must_match_the_number_of_maps():
    real, fake = images_with_logits(*REAL), images_with_logits(*FAKE)
    loss = GANLoss(scale_weights=(1.0, 0.5, 0.25))
    expected = r"scale_weights has 3 weights but the discriminator returned 2 logit maps"
    with pytest.raises(ValueError, match=expected) as err:
        loss.discriminator_loss(discriminator_inputs(real, fake, discriminator=PixelLogits(scales=2)))
    assert isinstance(err.value, VqtkError)  # the user's recipe to fix (exit status 2), not a bug
    with pytest.raises(ValueError, match=expected):
        loss.generator_loss(make_inputs(real, fake, discriminator=PixelLogits(scales=2)))
    with pytest.raises(ValueError, match=r"scale_weights has 2 weights but the discriminator returned 1 logit map "):
        GANLoss(scale_weights=(1.0, 1.0)).generator_loss(make_inputs(real, fake, discriminator=PixelLogits()))


def test_new_components_pass_the_plugin_contract_checks(builtins_registry):
    from vqtk import testing

    torch.manual_seed(0)
    testing.check_component(builtins_registry, "discriminator", "multiscale_patchgan",
                            {"ndf": 4, "n_layers": 1, "num_scales": 2}, resolution=24)  # fmt: skip
    disc = MultiScalePatchGANDiscriminator(ndf=4, n_layers=1, norm="none", num_scales=2)
    lecam = testing.check_component(builtins_registry, "loss", "lecam", {"decay": 0.9}, discriminator=disc)
    assert int(lecam.num_updates) == 1
    testing.check_component(builtins_registry, "loss", "gan", {"r1_gamma": 1.0, "scale_weights": [1.0, 0.5]},
                            discriminator=disc)  # fmt: skip
