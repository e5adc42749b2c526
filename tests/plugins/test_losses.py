"""Built-in losses: pixel, quantizer, adversarial (objectives, adaptive weight, R1) and LPIPS."""

from __future__ import annotations

import logging
import math
import urllib.request

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import Discriminator, Loss, LossInputs, LossTerm, QuantizerOutput
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import LossRef
from vqtk_builtins.discriminators import PatchGANDiscriminator
from vqtk_builtins.losses import (
    GANLoss,
    L1Loss,
    L2Loss,
    QuantizerLoss,
    adaptive_weight,
    discriminator_objective,
    generator_objective,
)
from vqtk_builtins.losses.builders import GANConfig, L1Config, L2Config, LPIPSConfig, QuantizerLossConfig
from vqtk_builtins.losses.lpips_weights import BACKBONE_FILES, lpips_linear_weights_path


def quantizer_output(loss: torch.Tensor | None = None, **metrics) -> QuantizerOutput:
    return QuantizerOutput(
        quantized=torch.zeros(1, 4, 2, 2),
        indices=torch.zeros(1, 2, 2, dtype=torch.long),
        loss=torch.tensor(0.0) if loss is None else loss,
        metrics=dict(metrics),
    )


def make_inputs(real, reconstruction, **kwargs) -> LossInputs:
    return LossInputs(real=real, reconstruction=reconstruction, quantizer=quantizer_output(), **kwargs)


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


# -- pixel and quantizer losses ------------------------------------------------------


def test_l1_and_l2_match_hand_computations():
    real = torch.zeros(1, 1, 2, 2)
    recon = torch.tensor([1.0, -2.0, 3.0, -4.0]).view(1, 1, 2, 2)
    inputs = make_inputs(real, recon)
    assert L1Loss().generator_loss(inputs).value.item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert L2Loss().generator_loss(inputs).value.item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert L1Loss().discriminator_loss(inputs) is None and not L1Loss.adversarial


def test_pixel_losses_send_gradients_to_the_reconstruction():
    real = torch.tensor([0.5, -0.5]).view(1, 1, 1, 2)
    recon = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2).requires_grad_(True)
    L2Loss().generator_loss(make_inputs(real, recon)).value.backward()
    torch.testing.assert_close(recon.grad.flatten(), torch.tensor([0.5, 0.5]))  # 2 * diff / N


def test_quantizer_loss_returns_the_aux_loss_and_logs_metrics():
    codebook = torch.tensor(0.75, requires_grad=True)
    q = quantizer_output(
        loss=codebook * 2, perplexity=torch.tensor(12.0), usage=torch.tensor(0.5), commitment=codebook * 1
    )
    term = QuantizerLoss().generator_loss(
        LossInputs(real=torch.zeros(1), reconstruction=torch.zeros(1), quantizer=q)
    )
    assert term.value.item() == pytest.approx(1.5)
    assert set(term.logs) == {"perplexity", "usage", "commitment"}
    assert term.logs["perplexity"].item() == 12.0 and not term.logs["commitment"].requires_grad
    term.value.backward()
    assert codebook.grad.item() == pytest.approx(2.0)


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
    inputs = make_inputs(images_with_logits(*REAL), images_with_logits(*FAKE), discriminator=PixelLogits())
    d_term = loss.discriminator_loss(inputs)
    assert d_term.value.item() == pytest.approx(d_expected)
    assert d_term.logs["d_loss"].item() == pytest.approx(d_expected)
    assert d_term.logs["logits_real"].item() == pytest.approx(1.25)
    assert d_term.logs["logits_fake"].item() == pytest.approx(-0.25)
    g_term = loss.generator_loss(inputs)
    assert g_term.value.item() == pytest.approx(g_expected)
    assert g_term.logs["g_loss"].item() == pytest.approx(g_expected)
    assert g_term.logs["adaptive_weight"].item() == 1.0 and g_term.logs["factor"].item() == 1.0


def test_start_step_zeroes_both_terms_before_it():
    torch.manual_seed(0)
    disc = PatchGANDiscriminator(ndf=4, n_layers=1, norm="none")
    loss = GANLoss(start_step=5, adaptive=False)
    real, recon = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16, requires_grad=True)
    before = make_inputs(real, recon, discriminator=disc, step=4)
    g, d = loss.generator_loss(before), loss.discriminator_loss(before)
    assert g.value.item() == 0.0 and d.value.item() == 0.0
    assert g.logs["factor"].item() == 0.0 and d.logs["factor"].item() == 0.0
    (g.value + d.value).backward()  # a trainer may backprop unconditionally
    assert all(p.grad is None for p in disc.parameters())  # the discriminator was not even run
    assert recon.grad is None
    after = make_inputs(real, recon, discriminator=disc, step=5)
    g, d = loss.generator_loss(after), loss.discriminator_loss(after)
    assert g.value.abs().item() > 0 and d.value.item() > 0
    assert g.logs["factor"].item() == 1.0


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
        inputs = make_inputs(real, recon, discriminator=disc, step=0)
        term = GANLoss(r1_gamma=r1_gamma).discriminator_loss(inputs)
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
    inputs = make_inputs(real, fake, discriminator=critic)
    plain = GANLoss(r1_gamma=0.0).discriminator_loss(inputs)
    assert "r1_penalty" not in plain.logs
    term = GANLoss(r1_gamma=3.0).discriminator_loss(inputs)
    w_sq = critic.w.detach().square().sum().item()
    assert term.logs["r1_penalty"].item() == pytest.approx(w_sq, rel=1e-5)
    assert term.value.item() == pytest.approx(plain.value.item() + 1.5 * w_sq, rel=1e-5)
    # the penalty's gradient reaches the critic: d/dw (gamma/2 ||w||^2) = gamma * w
    (plain_grad,) = torch.autograd.grad(plain.value, critic.w)
    (grad,) = torch.autograd.grad(term.value, critic.w)
    torch.testing.assert_close(grad - plain_grad, 3.0 * critic.w.detach(), rtol=1e-4, atol=1e-5)
    assert not real.requires_grad  # the caller's tensor is untouched
    with torch.no_grad():  # evaluation: no penalty, no error
        assert "r1_penalty" not in GANLoss(r1_gamma=3.0).discriminator_loss(inputs).logs


def test_gan_without_a_discriminator_says_so():
    inputs = make_inputs(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(VqtkError, match=r"loss gan: needs a discriminator; add a \[model.discriminator\]"):
        GANLoss().generator_loss(inputs)
    with pytest.raises(VqtkError, match="needs a discriminator"):
        GANLoss().discriminator_loss(inputs)


# -- LPIPS -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def empty_hub_dir(tmp_path, monkeypatch):
    """Every test sees an empty torch hub cache, whatever the machine holds."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return hub


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def torchvision_features(net: str) -> dict[str, torch.Tensor]:
    """A random state dict laid out like torchvision's ImageNet file for ``net`` (a fake, made here)."""
    import torchvision

    if net == "vgg":  # the features alone: building vgg16's classifier costs seconds
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
        return {f"features.{k}": v for k, v in features.state_dict().items()}
    model = {"alex": torchvision.models.alexnet, "squeeze": torchvision.models.squeezenet1_1}[net]
    return model(weights=None).state_dict()


def write_backbone(directory, net: str) -> tuple:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / BACKBONE_FILES[net]
    state = torchvision_features(net)
    torch.save(state, path)
    return path, state


def assert_backbone_is(loss, state: dict) -> None:
    backbone = loss.network.net.state_dict()
    assert backbone, "no backbone tensors"
    for name, tensor in backbone.items():
        _slice, index, rest = name.split(".", 2)
        assert torch.equal(tensor, state[f"features.{index}.{rest}"]), name


def assert_linear_layers_loaded(loss, net: str) -> None:
    shipped = torch.load(lpips_linear_weights_path(net), map_location="cpu", weights_only=True)
    lins = {
        k: v for k, v in loss.network.state_dict().items() if k.startswith("lin") and not k.startswith("lins")
    }
    assert set(lins) == set(shipped) and len(lins) == (7 if net == "squeeze" else 5)
    for key, value in shipped.items():
        assert torch.equal(lins[key], value), key
        assert (lins[key] >= 0).all(), key  # calibrated weights are non-negative; a random init is not


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_no_network_fixture_catches_lpips_own_download(no_network):
    """Proof that the patches above sit where lpips / torchvision would download."""
    import lpips

    with pytest.raises(AssertionError, match="network access attempted"):
        lpips.LPIPS(net="squeeze", pnet_rand=False, verbose=False)


@pytest.mark.parametrize("net", ["squeeze", "alex"])
def test_lpips_loads_an_explicit_backbone_file_and_the_shipped_linear_layers(tmp_path, net, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    path, state = write_backbone(tmp_path / "weights", net)
    loss = LPIPSLoss(net=net, backbone_weights=str(path))
    assert_backbone_is(loss, state)
    assert_linear_layers_loaded(loss, net)


def test_lpips_finds_the_backbone_in_the_hub_cache_under_torch_home(tmp_path, monkeypatch, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # let $TORCH_HOME decide
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    _path, state = write_backbone(tmp_path / "torch_home" / "hub" / "checkpoints", "squeeze")
    assert_backbone_is(LPIPSLoss(net="squeeze"), state)


def test_lpips_finds_the_backbone_in_a_hub_dir_set_by_torch(tmp_path, monkeypatch, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    torch.hub.set_dir(str(tmp_path / "elsewhere"))  # restored by the autouse fixture's monkeypatch
    _path, state = write_backbone(tmp_path / "elsewhere" / "checkpoints", "squeeze")
    assert_backbone_is(LPIPSLoss(net="squeeze"), state)


@pytest.mark.parametrize("net", ["vgg", "alex", "squeeze"])
def test_lpips_missing_backbone_is_one_actionable_line(net, empty_hub_dir, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    with pytest.raises(VqtkError) as err:
        LPIPSLoss(net=net)
    message = str(err.value)
    assert "\n" not in message
    assert BACKBONE_FILES[net] in message
    assert str(empty_hub_dir / "checkpoints") in message
    assert "backbone_weights" in message and "pretrained_backbone = false" in message


def test_lpips_backbone_file_names_match_torchvision():
    import torchvision.models as tvm

    urls = {
        "vgg": tvm.VGG16_Weights.IMAGENET1K_V1.url,
        "alex": tvm.AlexNet_Weights.IMAGENET1K_V1.url,
        "squeeze": tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1.url,
    }
    assert {net: url.rsplit("/", 1)[1] for net, url in urls.items()} == BACKBONE_FILES


def test_lpips_rejects_bad_backbone_files(tmp_path, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    wrong_keys = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong_keys)
    with pytest.raises(
        VqtkError, match=r"not torchvision's squeezenet1_1-b8a52dc0.pth: \d+ backbone tensors missing"
    ):
        LPIPSLoss(net="squeeze", backbone_weights=str(wrong_keys))
    wrong_shape = tmp_path / "wrong_shape.pth"  # right keys, one tensor shaped like alexnet's
    torch.save(
        {**torchvision_features("squeeze"), "features.0.weight": torch.zeros(64, 3, 11, 11)}, wrong_shape
    )
    with pytest.raises(
        VqtkError, match=r"features.0.weight has shape \(64, 3, 11, 11\), expected \(64, 3, 3, 3\)"
    ):
        LPIPSLoss(net="squeeze", backbone_weights=str(wrong_shape))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(VqtkError, match="cannot read squeeze backbone weights") as err:
        LPIPSLoss(net="squeeze", backbone_weights=str(garbage))
    assert "\n" not in str(err.value)
    with pytest.raises(VqtkError, match=r"backbone_weights file '.*nowhere.pth' does not exist"):
        LPIPSLoss(net="squeeze", backbone_weights=str(tmp_path / "nowhere.pth"))


def test_lpips_untrained_backbone_warns(caplog, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    with caplog.at_level(logging.WARNING, logger="vqtk"):
        loss = LPIPSLoss(net="squeeze", pretrained_backbone=False)
    warnings = [r for r in caplog.records if r.name == "vqtk" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "untrained squeeze backbone" in warnings[0].getMessage()
    assert "not a meaningful perceptual metric" in warnings[0].getMessage()
    assert_linear_layers_loaded(loss, "squeeze")


def test_lpips_values_gradients_and_freezing(tmp_path, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    path, _ = write_backbone(tmp_path, "squeeze")
    loss = LPIPSLoss(net="squeeze", backbone_weights=str(path))
    torch.manual_seed(0)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = (real + 0.3 * torch.randn_like(real)).clamp(-1, 1).requires_grad_(True)
    assert loss.generator_loss(make_inputs(real, real.clone())).value.item() == pytest.approx(0.0, abs=1e-6)
    term = loss.generator_loss(make_inputs(real, recon))
    expected = loss.network(real, recon).mean()  # the lpips package's own call
    assert term.value.item() == pytest.approx(expected.item(), rel=1e-6) and term.value.item() > 0
    term.value.backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    # frozen, eval, and outside parameters() / state_dict()
    assert all(not p.requires_grad for p in loss.network.parameters())
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    assert all(p.grad is None for p in loss.network.parameters())
    loss.train()
    assert not loss.network.training and all(not m.training for m in loss.network.modules())
    loss.double()  # dtype / device moves reach the hidden network
    assert loss.network.lin0.model[1].weight.dtype == torch.float64
    with pytest.raises(VqtkError, match="needs 3-channel RGB images, got 1 channels"):
        loss.generator_loss(make_inputs(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)))


def test_lpips_vgg_at_16px(tmp_path, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    path, state = write_backbone(tmp_path, "vgg")
    loss = LPIPSLoss(net="vgg", backbone_weights=str(path))  # taming's choice
    assert_backbone_is(loss, state)
    assert_linear_layers_loaded(loss, "vgg")
    real = torch.rand(1, 3, 16, 16) * 2 - 1
    value = loss.generator_loss(make_inputs(real, real.flip(-1))).value
    assert value.shape == () and value.item() > 0


# -- registry and configs -----------------------------------------------------------


def test_every_loss_builds_through_the_registry(builtins_registry, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    reg = builtins_registry
    assert reg.names("loss") == ["gan", "l1", "l2", "lpips", "quantizer"]
    built = {
        "l1": reg.get("loss", "l1").create(L1Config()),
        "l2": reg.get("loss", "l2").create(L2Config()),
        "quantizer": reg.get("loss", "quantizer").create(QuantizerLossConfig()),
        "gan": reg.get("loss", "gan").create(
            GANConfig(objective="non_saturating", start_step=10, r1_gamma=0.5)
        ),
        "lpips": reg.get("loss", "lpips").create(LPIPSConfig(net="squeeze", pretrained_backbone=False)),
    }
    assert all(isinstance(loss, Loss) for loss in built.values())
    assert [name for name, loss in built.items() if loss.adversarial] == ["gan"]
    gan = built["gan"]
    assert (gan.objective, gan.start_step, gan.r1_gamma, gan.adaptive) == ("non_saturating", 10, 0.5, True)
    assert isinstance(built["lpips"], LPIPSLoss) and built["lpips"].net_name == "squeeze"
    inputs = make_inputs(torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32))
    assert isinstance(built["l1"].generator_loss(inputs), LossTerm)
    assert built["l1"].generator_loss(inputs).value.item() == 1.0
    with pytest.raises(VqtkError, match="squeezenet1_1-b8a52dc0.pth"):
        reg.get("loss", "lpips").create(LPIPSConfig(net="squeeze"))


def test_loss_tables_are_validated(builtins_registry):
    conv = RecipeConverter(builtins_registry)
    ref = conv.structure({"type": "gan", "weight": 0.1, "objective": "vanilla", "start_step": 100}, LossRef)
    assert ref.weight == 0.1 and ref.config == GANConfig(objective="vanilla", start_step=100)
    assert conv.structure({"type": "lpips"}, LossRef).config == LPIPSConfig()
    assert LPIPSConfig().net == "vgg" and LPIPSConfig().pretrained_backbone is True
    with pytest.raises(
        RecipeError, match=r"objective: expected one of \"hinge\", \"vanilla\", \"non_saturating\""
    ):
        conv.structure({"type": "gan", "objective": "wgan"}, LossRef)
    with pytest.raises(RecipeError, match=r"start_step: must be >= 0, got -1"):
        conv.structure({"type": "gan", "start_step": -1}, LossRef)
    with pytest.raises(RecipeError, match=r"r1_gamma: must be >= 0"):
        conv.structure({"type": "gan", "r1_gamma": -0.5}, LossRef)
    with pytest.raises(
        RecipeError, match=r"net: expected one of \"vgg\", \"alex\", \"squeeze\", got \"resnet\""
    ):
        conv.structure({"type": "lpips", "net": "resnet"}, LossRef)
    with pytest.raises(RecipeError, match="extra|unknown|not a field|reduction"):
        conv.structure({"type": "l1", "reduction": "sum"}, LossRef)
    with pytest.raises(ValueError, match="backbone_weights is set but pretrained_backbone = false"):
        LPIPSConfig(backbone_weights="/x/vgg16-397923af.pth", pretrained_backbone=False)
