"""The built-in lpips loss: finding and verifying backbone weights (offline here), linear layers, values, gradients."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging

import pytest
import torch
from loss_inputs import make_inputs

from vqtk.errors import MissingFileError, VqtkError
from vqtk.io import weights
from vqtk_builtins.losses.lpips_weights import BACKBONE_FILES, BACKBONE_KEYS, lpips_linear_weights_path

pytestmark = pytest.mark.usefixtures("empty_hub_dir")


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


def install_backbone(directory, net: str, monkeypatch) -> dict:
    """A fake backbone saved in ``directory`` under a torch-hub name carrying its own hash, made the
    net's known weight file (vqtk.io.weights.KNOWN) for the test: the real files' hashes cannot be faked."""
    state = torchvision_features(net)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    prefix = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    record = weights.KNOWN[BACKBONE_KEYS[net]]
    record = dataclasses.replace(record, file=f"{record.file.rsplit('-', 1)[0]}-{prefix}.pth", sha256_prefix=prefix)
    monkeypatch.setitem(weights.KNOWN, record.key, record)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / record.file).write_bytes(buffer.getvalue())
    return state


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
    """Proof that the empty_hub_dir and no_network fixtures (conftest.py) patch where lpips / torchvision would download."""
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
    state = install_backbone(tmp_path / "torch_home" / "hub" / "checkpoints", "squeeze", monkeypatch)
    assert_backbone_is(LPIPSLoss(net="squeeze"), state)


def test_lpips_finds_the_backbone_in_a_hub_dir_set_by_torch(tmp_path, monkeypatch, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    torch.hub.set_dir(str(tmp_path / "elsewhere"))  # restored by the empty_hub_dir fixture's monkeypatch
    state = install_backbone(tmp_path / "elsewhere" / "checkpoints", "squeeze", monkeypatch)
    assert_backbone_is(LPIPSLoss(net="squeeze"), state)


def test_lpips_finds_the_backbone_in_vqtk_weights_dir(tmp_path, monkeypatch, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    monkeypatch.setenv("VQTK_WEIGHTS_DIR", str(tmp_path / "shared"))
    state = install_backbone(tmp_path / "shared", "squeeze", monkeypatch)
    assert_backbone_is(LPIPSLoss(net="squeeze"), state)


def test_lpips_refuses_a_cached_backbone_whose_hash_is_wrong(empty_hub_dir, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    path, _ = write_backbone(empty_hub_dir / "checkpoints", "squeeze")  # the real name, not the real bytes
    with pytest.raises(VqtkError) as err:
        LPIPSLoss(net="squeeze")
    message = str(err.value)
    assert "\n" not in message and not isinstance(err.value, MissingFileError)
    assert message.startswith(f"loss lpips: {path}: SHA-256 ") and "does not start with b8a52dc0" in message
    assert "`vqtk download lpips-squeeze`" in message


@pytest.mark.parametrize("net", ["vgg", "alex", "squeeze"])
def test_lpips_missing_backbone_is_one_actionable_line(net, empty_hub_dir, no_network):
    from vqtk_builtins.losses.perceptual import LPIPSLoss

    with pytest.raises(VqtkError) as err:
        LPIPSLoss(net=net)
    message = str(err.value)
    assert "\n" not in message
    assert BACKBONE_FILES[net] in message
    assert str(empty_hub_dir / "checkpoints") in message
    assert "VQTK_OFFLINE=1" in message and f"`vqtk download lpips-{net}`" in message
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
