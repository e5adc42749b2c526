"""Built-in discriminators: PatchGAN (taming layout, ActNorm) and the StyleGAN2-style critic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import Discriminator
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import DiscriminatorRef
from vqtk_builtins.discriminators import ActNorm, PatchGANDiscriminator, StyleGANDiscriminator
from vqtk_builtins.discriminators.stylegan import MinibatchStd

# taming-transformers' NLayerDiscriminator(input_nc=3, ndf=64, n_layers=3), use_actnorm=False
TAMING_KEYS_BATCH = [
    "main.0.weight", "main.0.bias",
    "main.2.weight",
    "main.3.weight", "main.3.bias", "main.3.running_mean", "main.3.running_var", "main.3.num_batches_tracked",
    "main.5.weight",
    "main.6.weight", "main.6.bias", "main.6.running_mean", "main.6.running_var", "main.6.num_batches_tracked",
    "main.8.weight",
    "main.9.weight", "main.9.bias", "main.9.running_mean", "main.9.running_var", "main.9.num_batches_tracked",
    "main.11.weight", "main.11.bias",
]  # fmt: skip
# the same with use_actnorm=True (convs get biases, ActNorm has loc / scale / initialized)
TAMING_KEYS_ACTNORM = [
    "main.0.weight", "main.0.bias",
    "main.2.weight", "main.2.bias", "main.3.loc", "main.3.scale", "main.3.initialized",
    "main.5.weight", "main.5.bias", "main.6.loc", "main.6.scale", "main.6.initialized",
    "main.8.weight", "main.8.bias", "main.9.loc", "main.9.scale", "main.9.initialized",
    "main.11.weight", "main.11.bias",
]  # fmt: skip
TAMING_SHAPES = {
    "main.0.weight": (64, 3, 4, 4),
    "main.2.weight": (128, 64, 4, 4),
    "main.5.weight": (256, 128, 4, 4),
    "main.8.weight": (512, 256, 4, 4),
    "main.11.weight": (1, 512, 4, 4),
    "main.9.running_mean": (512,),
}


# -- PatchGAN ------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_layers,size,expected",
    [
        (3, (32, 32), (2, 2)),
        (3, (48, 64), (4, 6)),
        (3, (24, 24), (1, 1)),
        (2, (32, 32), (6, 6)),
        (1, (16, 20), (6, 8)),
    ],
)
def test_patchgan_output_shapes(n_layers, size, expected):
    disc = PatchGANDiscriminator(ndf=8, n_layers=n_layers)
    out = disc(torch.randn(2, 3, *size))
    assert out.shape == (2, 1, *expected)  # floor(H / 2**n) - 2 patch rows


def test_patchgan_other_channel_counts():
    disc = PatchGANDiscriminator(in_channels=1, ndf=4, n_layers=2)
    assert disc.in_channels == 1
    assert disc(torch.randn(3, 1, 16, 16)).shape == (3, 1, 2, 2)


def test_patchgan_rejects_too_small_images():
    disc = PatchGANDiscriminator(ndf=4, n_layers=3)
    with pytest.raises(VqtkError, match=r"16x16 images are too small for n_layers = 3 \(needs at least 24"):
        disc(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("norm", ["batch", "actnorm", "group", "none"])
def test_patchgan_gradients_reach_every_parameter_and_the_input(norm):
    disc = PatchGANDiscriminator(ndf=8, n_layers=3, norm=norm)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    disc(x).mean().backward()
    for name, p in disc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_patchgan_state_dict_matches_taming_layout():
    disc = PatchGANDiscriminator()  # taming defaults: 3 channels, ndf 64, 3 layers, batch norm
    state = disc.state_dict()
    assert list(state) == TAMING_KEYS_BATCH
    for key, shape in TAMING_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(p.numel() for p in disc.parameters()) == 2_765_633  # taming's count
    act = PatchGANDiscriminator(norm="actnorm").state_dict()
    assert list(act) == TAMING_KEYS_ACTNORM
    assert act["main.3.loc"].shape == (1, 128, 1, 1)
    assert act["main.3.initialized"].dtype == torch.uint8


def test_patchgan_loads_a_taming_style_checkpoint():
    """A checkpoint's ``loss.discriminator.*`` entries load after stripping the prefix."""
    src = PatchGANDiscriminator(ndf=8)
    checkpoint = {f"loss.discriminator.{k}": v.clone() for k, v in src.state_dict().items()}
    dst = PatchGANDiscriminator(ndf=8)
    prefix = "loss.discriminator."
    dst.load_state_dict({k[len(prefix) :]: v for k, v in checkpoint.items()}, strict=True)
    x = torch.randn(2, 3, 32, 32)
    src.eval(), dst.eval()
    torch.testing.assert_close(dst(x), src(x))


def test_patchgan_weight_init_is_tamings():
    torch.manual_seed(0)
    disc = PatchGANDiscriminator()  # ndf 64: big tensors give tight statistics
    w = disc.main[5].weight  # 256 x 128 x 4 x 4 conv
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = disc.main[9]
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.25)
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert disc.main[2].bias is None  # batch norm makes the conv bias redundant
    grouped = PatchGANDiscriminator(ndf=64, norm="group")
    assert isinstance(grouped.main[3], nn.GroupNorm) and grouped.main[3].num_groups == 32
    assert grouped.main[3].weight.std().item() == pytest.approx(0.02, rel=0.5)
    assert grouped.main[2].bias is not None


def test_patchgan_none_norm_has_no_norm_parameters():
    disc = PatchGANDiscriminator(ndf=8, norm="none")
    assert isinstance(disc.main[3], nn.Identity)
    assert all(k.endswith(("weight", "bias")) for k in disc.state_dict())
    assert disc(torch.randn(1, 3, 24, 24)).shape == (1, 1, 1, 1)


# -- ActNorm -------------------------------------------------------------------


def test_actnorm_initialises_from_the_first_training_batch_only():
    norm = ActNorm(num_features=4)
    x = torch.randn(8, 4, 5, 5) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1) + 7.0
    y = norm(x)
    assert norm.initialized.item() == 1
    per_channel = y.transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(4), atol=1e-4, rtol=0)
    loc, scale = norm.loc.detach().clone(), norm.scale.detach().clone()
    norm(torch.randn(8, 4, 5, 5) * 10)  # a second batch does not re-initialise
    assert torch.equal(norm.loc, loc) and torch.equal(norm.scale, scale)


def test_actnorm_does_not_initialise_in_eval_mode():
    norm = ActNorm(num_features=3).eval()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(norm(x), x)  # identity at its defaults
    assert norm.initialized.item() == 0


def test_actnorm_state_dict_round_trip():
    trained = ActNorm(num_features=3)
    trained(torch.randn(4, 3, 6, 6) * 5 + 2)
    fresh = ActNorm(num_features=3)
    fresh.load_state_dict(trained.state_dict())
    assert fresh.initialized.item() == 1
    fresh(torch.randn(4, 3, 6, 6))  # training mode, but already initialised: parameters kept
    torch.testing.assert_close(fresh.loc, trained.loc)
    torch.testing.assert_close(fresh.scale, trained.scale)
    # loading an uninitialised state into an initialised module re-arms the data-dependent init
    trained.load_state_dict(ActNorm(num_features=3).state_dict())
    trained(torch.randn(4, 3, 6, 6) + 100.0)
    assert trained.loc.mean().item() == pytest.approx(-100.0, abs=0.5)


def test_patchgan_actnorm_round_trip():
    disc = PatchGANDiscriminator(ndf=8, norm="actnorm")
    disc(torch.randn(4, 3, 32, 32))
    state = disc.state_dict()
    assert all(state[f"main.{i}.initialized"].item() == 1 for i in (3, 6, 9))
    copy = PatchGANDiscriminator(ndf=8, norm="actnorm")
    copy.load_state_dict(state)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(copy(x), disc(x))  # both in training mode; no re-init


# -- StyleGAN ------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [8, 16, 32])
@pytest.mark.parametrize("batch", [1, 3, 4])
def test_stylegan_output_shapes(resolution, batch):
    disc = StyleGANDiscriminator(resolution=resolution, channels=4, max_channels=16)
    assert disc(torch.randn(batch, 3, resolution, resolution)).shape == (batch, 1)


@pytest.mark.parametrize("mbstd,blur", [(True, True), (False, True), (True, False), (False, False)])
def test_stylegan_options_and_gradients(mbstd, blur):
    disc = StyleGANDiscriminator(resolution=16, channels=4, max_channels=8, mbstd=mbstd, blur=blur)
    assert len(disc.blocks) == 2  # 16 -> 8 -> 4
    assert disc.conv.in_channels == 8 + (1 if mbstd else 0)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    disc(x).sum().backward()
    for name, p in disc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_stylegan_activations_keep_their_scale_through_the_blocks():
    torch.manual_seed(0)
    disc = StyleGANDiscriminator(resolution=32, channels=8, max_channels=16, mbstd=False)
    with torch.no_grad():
        features = disc.blocks(disc.from_rgb(torch.randn(8, 3, 32, 32)))
    assert features.shape == (8, 16, 4, 4)
    assert 0.2 < features.std().item() < 5.0  # He init: neither vanishing nor exploding


def test_stylegan_channel_widths_are_capped():
    disc = StyleGANDiscriminator(resolution=64, channels=4, max_channels=12)
    widths = [disc.from_rgb[0].out_channels] + [b.conv2[1].out_channels for b in disc.blocks]
    assert widths == [4, 8, 12, 12, 12]


def test_stylegan_rejects_other_resolutions():
    disc = StyleGANDiscriminator(resolution=16, channels=4, max_channels=8)
    with pytest.raises(VqtkError, match=r"built for 16x16 images \(resolution = 16\), got 32x32"):
        disc(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        StyleGANDiscriminator(resolution=24)


def test_minibatch_std_matches_a_hand_computation():
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2)  # group of 2 samples
    out = MinibatchStd(group_size=4)(x)  # gcd(2, 4) = 2 members per group, one group
    assert out.shape == (2, 2, 2, 2)
    torch.testing.assert_close(out[:, :1], x)
    # each pixel differs by 4 across the two samples: population std 2 everywhere
    torch.testing.assert_close(out[:, 1], torch.full((2, 2, 2), 2.0), atol=1e-4, rtol=0)
    # batch 6, group 4 -> groups of 2: samples i and i + 3 share a statistic
    y = torch.randn(6, 3, 2, 2)
    stat = MinibatchStd(group_size=4)(y)[:, 3, 0, 0]
    expected = torch.stack([(y[[i, i + 3]].var(0, unbiased=False) + 1e-8).sqrt().mean() for i in range(3)])
    torch.testing.assert_close(stat, expected.repeat(2))


# -- configs and registry ------------------------------------------------------


def configs(registry):
    """The recipe config classes the registry derived from the discriminators' signatures."""
    return registry.get("discriminator", "patchgan").config, registry.get("discriminator", "stylegan").config


def test_build_through_the_registry(builtins_registry):
    PatchGANConfig, StyleGANConfig = configs(builtins_registry)  # noqa: N806 - classes
    patch = builtins_registry.get("discriminator", "patchgan").create(PatchGANConfig(ndf=8, norm="actnorm"))
    assert isinstance(patch, Discriminator) and isinstance(patch, PatchGANDiscriminator)
    assert isinstance(patch.main[3], ActNorm)
    style = builtins_registry.get("discriminator", "stylegan").create(
        StyleGANConfig(resolution=16, channels=4, max_channels=8, mbstd=False)
    )
    assert isinstance(style, StyleGANDiscriminator)
    assert style(torch.randn(2, 3, 16, 16)).shape == (2, 1)
    assert builtins_registry.get("discriminator", "patchgan").doc.startswith("PatchGAN")


def test_recipe_tables_are_validated(builtins_registry):
    PatchGANConfig, _ = configs(builtins_registry)  # noqa: N806 - a class
    conv = RecipeConverter(builtins_registry)
    ref = conv.structure({"type": "patchgan", "ndf": 16, "norm": "group"}, DiscriminatorRef)
    assert ref.config == PatchGANConfig(ndf=16, norm="group")
    expected = r"norm: expected one of \"batch\", \"actnorm\", \"group\", \"none\", got \"batchnorm\""
    with pytest.raises(RecipeError, match=expected):
        conv.structure({"type": "patchgan", "norm": "batchnorm"}, DiscriminatorRef)
    with pytest.raises(RecipeError, match=r"n_layers: must be > 0, got 0"):
        conv.structure({"type": "patchgan", "n_layers": 0}, DiscriminatorRef)
    with pytest.raises(RecipeError, match=r"resolution: must be a power of two >= 8, got 100"):
        conv.structure({"type": "stylegan", "resolution": 100}, DiscriminatorRef)
    with pytest.raises(RecipeError, match=r"ndf"):
        conv.structure({"type": "patchgan", "ndf": "64"}, DiscriminatorRef)


def test_stylegan_config_cross_field_check(builtins_registry):
    _, StyleGANConfig = configs(builtins_registry)  # noqa: N806 - a class
    with pytest.raises(ValueError, match=r"max_channels \(32\) must be >= channels \(64\)"):
        StyleGANConfig(channels=64, max_channels=32)
    conv = RecipeConverter(builtins_registry)
    with pytest.raises(RecipeError, match=r"max_channels \(32\) must be >= channels \(64\)"):
        conv.structure({"type": "stylegan", "channels": 64, "max_channels": 32}, DiscriminatorRef)


def test_configs_come_from_the_signatures(builtins_registry):
    """Defaults, validators and docs of the recipe tables are the classes' own."""
    import attrs

    from vqtk.config import describe
    from vqtk.registry.signature import field_doc

    for name, cls in [("patchgan", PatchGANDiscriminator), ("stylegan", StyleGANDiscriminator)]:
        fields = attrs.fields(builtins_registry.get("discriminator", name).config)
        defaults = {f.name: f.default for f in fields}
        assert defaults == cls.__init__.__kwdefaults__, name
        assert all(field_doc(f) for f in fields), name  # every argument is documented
    stylegan = attrs.fields_dict(builtins_registry.get("discriminator", "stylegan").config)
    assert [*stylegan] == ["resolution", "in_channels", "channels", "max_channels", "mbstd",
                           "mbstd_group_size", "blur"]  # fmt: skip
    assert describe(stylegan["resolution"].validator) == "a power of two >= 8"
    assert describe(stylegan["channels"].validator) == "> 0"
