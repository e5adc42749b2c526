"""Built-in pixel (l1, l2) and quantizer losses, and every loss through the registry and recipe tables."""

from __future__ import annotations

import pytest
import torch
from loss_inputs import make_inputs, quantizer_output

from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import Loss, LossInputs, LossTerm
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import LossRef
from vqtk_builtins.losses import GANLoss, L1Loss, L2Loss, LeCamLoss, QuantizerLoss

pytestmark = pytest.mark.usefixtures("empty_hub_dir")


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


# -- registry and configs -----------------------------------------------------------


def config(registry, name: str):
    """The recipe config class the registry derived from loss ``name``'s signature."""
    return registry.get("loss", name).config


def test_every_loss_builds_through_the_registry(builtins_registry, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    reg = builtins_registry
    assert reg.names("loss") == ["gan", "l1", "l2", "lecam", "lpips", "quantizer"]
    built = {
        "l1": reg.get("loss", "l1").create(config(reg, "l1")()),
        "l2": reg.get("loss", "l2").create(config(reg, "l2")()),
        "quantizer": reg.get("loss", "quantizer").create(config(reg, "quantizer")()),
        "gan": reg.get("loss", "gan").create(
            config(reg, "gan")(objective="non_saturating", start_step=10, r1_gamma=0.5)
        ),
        "lpips": reg.get("loss", "lpips").create(config(reg, "lpips")(net="squeeze", pretrained_backbone=False)),
        "lecam": reg.get("loss", "lecam").create(config(reg, "lecam")(decay=0.9)),
    }
    assert all(isinstance(loss, Loss) for loss in built.values())
    assert [name for name, loss in built.items() if loss.adversarial] == ["gan"]
    gan = built["gan"]
    assert isinstance(gan, GANLoss) and gan.needs_real_gradients  # r1_gamma > 0
    assert (gan.objective, gan.start_step, gan.r1_gamma, gan.adaptive) == ("non_saturating", 10, 0.5, True)
    assert gan.scale_weights is None
    assert isinstance(built["lecam"], LeCamLoss) and built["lecam"].decay == 0.9
    assert LeCamLoss.terms() == (False, True) and GANLoss.terms() == (True, True)
    assert isinstance(built["lpips"], LPIPSLoss) and built["lpips"].net_name == "squeeze"
    inputs = make_inputs(torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32))
    assert isinstance(built["l1"].generator_loss(inputs), LossTerm)
    assert built["l1"].generator_loss(inputs).value.item() == 1.0
    with pytest.raises(VqtkError, match="squeezenet1_1-b8a52dc0.pth"):
        reg.get("loss", "lpips").create(config(reg, "lpips")(net="squeeze"))


def test_loss_tables_are_validated(builtins_registry):
    GANConfig, LPIPSConfig = config(builtins_registry, "gan"), config(builtins_registry, "lpips")  # noqa: N806
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
    with pytest.raises(RecipeError, match="backbone_weights is set but pretrained_backbone = false"):
        conv.structure({"type": "lpips", "backbone_weights": "/x/vgg16-397923af.pth",
                        "pretrained_backbone": False}, LossRef)  # fmt: skip
    with pytest.raises(RecipeError, match="backbone_weights must be a file path, got an empty string"):
        conv.structure({"type": "lpips", "backbone_weights": " "}, LossRef)
    # gan's scale_weights: an array of non-negative numbers
    ref = conv.structure({"type": "gan", "scale_weights": [1, 0.5]}, LossRef)
    assert ref.config.scale_weights == (1.0, 0.5)
    with pytest.raises(RecipeError, match=r"scale_weights: must not be empty"):
        conv.structure({"type": "gan", "scale_weights": []}, LossRef)
    with pytest.raises(RecipeError, match=r"scale_weights: \[1\] must be >= 0, got -0.5"):
        conv.structure({"type": "gan", "scale_weights": [1.0, -0.5]}, LossRef)
    # lecam
    assert conv.structure({"type": "lecam"}, LossRef).config == config(builtins_registry, "lecam")()
    with pytest.raises(RecipeError, match=r"decay: must be strictly between 0 and 1, got 1.0"):
        conv.structure({"type": "lecam", "decay": 1.0}, LossRef)
    with pytest.raises(RecipeError, match=r"start_step: must be >= 0, got -3"):
        conv.structure({"type": "lecam", "start_step": -3}, LossRef)


def test_loss_configs_come_from_the_signatures(builtins_registry):
    """Defaults and docs of the recipe tables are the classes' own; argument-free losses have empty tables."""
    import attrs

    from vqtk.registry.signature import field_doc
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    for name, cls in [("gan", GANLoss), ("lpips", LPIPSLoss), ("lecam", LeCamLoss)]:
        fields = attrs.fields(config(builtins_registry, name))
        assert {f.name: f.default for f in fields} == cls.__init__.__kwdefaults__, name
        assert all(field_doc(f) for f in fields), name  # every argument is documented
    for name in ("l1", "l2", "quantizer"):
        assert attrs.fields(config(builtins_registry, name)) == ()
    gan = [f.name for f in attrs.fields(config(builtins_registry, "gan"))]
    assert gan == ["objective", "start_step", "disc_warmup_steps", "ramp_steps", "adaptive", "max_adaptive_weight",
                   "r1_gamma", "scale_weights"]
