"""Building an ``lpips.LPIPS`` network: its backbone weights fetched and verified by vqtk.

``lpips.LPIPS(pnet_rand=False)`` asks torchvision for the ImageNet backbone,
which downloads it unverified. vqtk builds LPIPS with a random backbone
(``pnet_rand=True``) and then loads the backbone from a local file: either
given explicitly, or torchvision's own file fetched by
:func:`vqtk.io.weights.fetch` (found in torch's hub cache or
``$VQTK_WEIGHTS_DIR`` and SHA-256 checked, downloaded on first use unless
``VQTK_OFFLINE=1``). The calibrated linear layers ship inside the lpips
package; they are loaded here too, strictly, so a naming slip cannot leave
them at their random initialisation.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Literal, Optional

import torch
from torch import nn

from vqtk.errors import MissingFileError, VqtkError
from vqtk.io import weights

logger = logging.getLogger("vqtk")

Net = Literal["vgg", "alex", "squeeze"]

#: the :data:`vqtk.io.weights.KNOWN` key of each backbone's ImageNet weights
BACKBONE_KEYS: dict[str, str] = {"vgg": "lpips-vgg", "alex": "lpips-alex", "squeeze": "lpips-squeeze"}

#: torchvision's file names for the ImageNet backbones (``*_Weights.IMAGENET1K_V1``).
BACKBONE_FILES: dict[str, str] = {net: weights.KNOWN[key].file for net, key in BACKBONE_KEYS.items()}


def find_backbone_weights(net: Net, explicit: Optional[str] = None) -> Path:
    """The backbone weight file to load: ``explicit`` if given, else torchvision's, fetched.

    Raises:
        MissingFileError: ``explicit`` does not exist, or the file is not on
            disk and cannot be downloaded (offline, network failure).
        VqtkError: a cached copy is corrupt.
    """
    if explicit is not None:
        path = Path(os.path.expanduser(explicit))
        if not path.is_file():
            raise MissingFileError(f"loss lpips: backbone_weights file {str(path)!r} does not exist")
        return path
    try:
        return weights.fetch(BACKBONE_KEYS[net])
    except MissingFileError as exc:
        raise MissingFileError(
            f"loss lpips: {exc}; or set backbone_weights = \"/path/to/{weights.KNOWN[BACKBONE_KEYS[net]].file}\", "
            "or pretrained_backbone = false (an untrained backbone: not a meaningful perceptual loss)"
        ) from None
    except VqtkError as exc:
        raise VqtkError(f"loss lpips: {exc}") from None


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        # torch's own messages span many lines and suggest weights_only=False: keep one line
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else type(exc).__name__
        raise VqtkError(
            f"loss lpips: cannot read {what} {str(path)!r}: not a torch file of plain tensors ({detail})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VqtkError(f"loss lpips: {what} {str(path)!r} does not hold a state dict")
    return state


def load_backbone_weights(backbone: nn.Module, path: Path, net: Net) -> None:
    """Load torchvision's ``features.N.*`` weights into lpips's sliced backbone.

    lpips splits torchvision's ``features`` into ``slice1..sliceK`` keeping each
    layer's index as its name (``slice2.5.weight`` is ``features.5.weight``).
    Every backbone tensor must be in the file with the right shape, else a
    one-line :class:`VqtkError`.
    """
    state = _read_state_dict(path, f"{net} backbone weights")
    remapped: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for name, tensor in backbone.state_dict().items():
        _slice, index, rest = name.split(".", 2)
        key = f"features.{index}.{rest}"
        value = state.get(key)
        if value is None:
            missing.append(key)
        elif tuple(value.shape) != tuple(tensor.shape):
            raise VqtkError(
                f"loss lpips: {str(path)!r} is not torchvision's {BACKBONE_FILES[net]}: {key} has shape "
                f"{tuple(value.shape)}, expected {tuple(tensor.shape)}"
            )
        else:
            remapped[name] = value
    if missing:
        raise VqtkError(
            f"loss lpips: {str(path)!r} is not torchvision's {BACKBONE_FILES[net]}: "
            f"{len(missing)} backbone tensors missing (first: {missing[0]})"
        )
    backbone.load_state_dict(remapped, strict=True)


def lpips_linear_weights_path(net: Net) -> Path:
    """The calibrated linear-layer weights shipped inside the lpips package."""
    import lpips

    return Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"


def load_linear_weights(model: nn.Module, net: Net) -> None:
    """Load lpips's ``lin*`` layers from the package, failing loudly if any is left unloaded."""
    path = lpips_linear_weights_path(net)
    if not path.is_file():
        raise VqtkError(
            f"loss lpips: the lpips package lacks its weights file {str(path)!r}; reinstall lpips"
        )
    state = _read_state_dict(path, "lpips linear weights")
    result = model.load_state_dict(state, strict=False)
    # ``lins.N`` aliases ``linN`` (same tensors), so only the ``linN.`` names must be present
    lin_missing = [k for k in result.missing_keys if re.match(r"lin\d+\.", k)]
    if result.unexpected_keys or lin_missing:
        raise VqtkError(
            f"loss lpips: {str(path)!r} does not match lpips's linear layers "
            f"(missing {lin_missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )


def build_lpips_network(
    *, net: Net = "vgg", backbone_weights: Optional[str] = None, pretrained_backbone: bool = True
) -> nn.Module:
    """A frozen, eval-mode ``lpips.LPIPS`` (version 0.1); only vqtk's :func:`~vqtk.io.weights.fetch` downloads.

    Args:
        net: backbone, as in ``lpips.LPIPS(net=...)``.
        backbone_weights: path of torchvision's backbone file; default:
            :func:`vqtk.io.weights.fetch` it (torch hub cache, downloaded on first use).
        pretrained_backbone: ``False`` keeps the backbone random (and logs a
            warning): fine for plumbing, meaningless as a perceptual metric.

    Raises:
        MissingFileError: the backbone file is needed but absent and cannot be downloaded.
        VqtkError: the backbone file is unreadable, corrupt or wrong.
    """
    if net not in BACKBONE_KEYS:
        raise VqtkError(f"loss lpips: unknown net {net!r}; choose one of {', '.join(BACKBONE_KEYS)}")
    path = find_backbone_weights(net, backbone_weights) if pretrained_backbone else None

    import lpips

    with warnings.catch_warnings():  # torchvision's notice about the legacy `pretrained` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    load_linear_weights(model, net)
    if path is not None:
        load_backbone_weights(model.net, path, net)
        logger.debug("lpips: loaded %s backbone from %s", net, path)
    else:
        logger.warning(
            "loss lpips: pretrained_backbone = false, so the perceptual loss uses an untrained %s "
            "backbone and is not a meaningful perceptual metric",
            net,
        )
    model.eval()
    model.requires_grad_(False)
    return model
