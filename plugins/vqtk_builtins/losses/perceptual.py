"""LPIPS perceptual loss (through the ``lpips`` package), frozen; its backbone weights fetched on first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import attrs
import torch
from torch import nn

from vqtk.errors import VqtkError
from vqtk.interfaces import Loss, LossInputs, LossTerm, PerceptualDistance

from vqtk_builtins.losses.lpips_weights import Net, build_lpips_network


def check_lpips(config) -> None:
    """Cross-field check of an ``lpips`` recipe table."""
    if config.backbone_weights is not None and not config.pretrained_backbone:
        raise ValueError("backbone_weights is set but pretrained_backbone = false; drop one of them")
    if config.backbone_weights is not None and not config.backbone_weights.strip():
        raise ValueError("backbone_weights must be a file path, got an empty string")


class LPIPSLoss(Loss, PerceptualDistance):
    """Mean LPIPS distance between ``inputs.real`` and ``inputs.reconstruction`` (both in ``[-1, 1]``).

    The network is frozen and always in eval mode (its dropout layers stay
    off even when the trainer calls ``.train()``). It is held outside the
    module tree on purpose: its weights come from files, not training, so they
    stay out of ``parameters()`` (no optimizer ever sees them) and out of
    ``state_dict()`` (checkpoints do not carry ~60 MB of VGG); ``.to(device)``
    and dtype casts still move it. :attr:`network` gives access to it.

    Args:
        net: backbone; taming uses "vgg"
        backbone_weights: torchvision's ImageNet weight file for the backbone (vgg16-397923af.pth,
            alexnet-owt-7be5be79.pth or squeezenet1_1-b8a52dc0.pth); default: the torch hub cache,
            $TORCH_HOME/hub/checkpoints/
        pretrained_backbone: false runs with a random backbone (plumbing only: not a meaningful metric)
    """

    distance_implementation = "lpips package, v0.1"

    def __init__(
        self,
        *,
        net: Net = "vgg",
        backbone_weights: Optional[str] = None,
        pretrained_backbone: bool = True,
    ):
        super().__init__()
        self.net_name = net
        self.pretrained_backbone = pretrained_backbone
        model = build_lpips_network(
            net=net, backbone_weights=backbone_weights, pretrained_backbone=pretrained_backbone
        )
        object.__setattr__(self, "_lpips", model)  # bypass nn.Module registration (see class doc)

    @property
    def network(self) -> nn.Module:
        """The frozen ``lpips.LPIPS`` network."""
        return self._lpips

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._lpips._apply(fn)
        return self

    @classmethod
    def evaluation_options(cls, config: Any, *, weights: Optional[str] = None) -> Any:
        """``config`` with the pretrained backbone always (``weights``, when given, as its file).

        A recipe trained with ``pretrained_backbone = false`` is still evaluated
        with the pretrained backbone: a random backbone is never reported as LPIPS.
        """
        changes: dict[str, Any] = {"pretrained_backbone": True}
        if weights is not None:
            changes["backbone_weights"] = str(Path(weights).expanduser())
        return attrs.evolve(config, **changes)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance ``(B,)`` between images in ``[-1, 1]``."""
        if a.shape[1] != 3:
            raise VqtkError(f"loss lpips: needs 3-channel RGB images, got {a.shape[1]} channels")
        return self._lpips(a, b).flatten()

    def generator_loss(self, inputs: LossInputs) -> LossTerm:
        """Mean LPIPS between the real images and their reconstructions."""
        value = self.distance(inputs.real, inputs.reconstruction).mean()
        return LossTerm(value=value)

    def extra_repr(self) -> str:
        return f"net={self.net_name!r}, pretrained_backbone={self.pretrained_backbone}"
