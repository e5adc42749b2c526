"""Multi-scale PatchGAN (pix2pixHD): one PatchGAN per image scale, one logit map each."""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import at_least
from vqtk.errors import VqtkError
from vqtk.interfaces import Discriminator

from vqtk.registry.forwarding import forwards_arguments
from vqtk_builtins.discriminators.patchgan import PatchGANDiscriminator


class MultiScalePatchGANDiscriminator(Discriminator):
    """``num_scales`` PatchGANs on ever coarser copies of the image: a list of ``(B, 1, h_i, w_i)`` maps.

    Scale ``i`` scores the image average-pooled by ``2**i`` (pix2pixHD's
    multi-scale discriminator): the full-resolution critic judges fine texture,
    the coarser ones the layout at the same receptive field. Each scale is an
    independent :class:`PatchGANDiscriminator` with its own weights (module
    ``scales.i``, laid out like taming's ``NLayerDiscriminator``), and the GAN
    loss scores each scale's map on its own. ``num_scales = 1`` is a plain
    PatchGAN that returns a one-map list.

    The PatchGAN arguments (``in_channels``, ``ndf``, ``n_layers``, ``norm``)
    are declared once, by :class:`PatchGANDiscriminator`, and apply to every
    scale; the coarsest scale needs ``3 * 2**n_layers`` pixels, so images need
    ``3 * 2**(n_layers + num_scales - 1)`` a side.

    Args:
        num_scales: PatchGANs, scale i seeing the image average-pooled by 2**i
            (images need 3 * 2**(n_layers + num_scales - 1) pixels a side)
    """

    @forwards_arguments(PatchGANDiscriminator)
    def __init__(self, *, num_scales: Annotated[int, at_least(1)] = 2, **patchgan: Any):
        super().__init__()
        self.num_scales = num_scales
        self.scales = nn.ModuleList(PatchGANDiscriminator(**patchgan) for _ in range(num_scales))
        self.in_channels = self.scales[0].in_channels

    @property
    def min_input_size(self) -> int:
        """Smallest image side that still gives the coarsest scale a 1x1 logit map."""
        return self.scales[0].min_input_size * 2 ** (self.num_scales - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One patch-logit map per scale, finest first, for images ``(B, in_channels, H, W)``."""
        if min(x.shape[-2:]) < self.min_input_size:
            raise VqtkError(
                f"multiscale_patchgan discriminator: {x.shape[-2]}x{x.shape[-1]} images are too small for "
                f"n_layers = {self.scales[0].n_layers} and num_scales = {self.num_scales} "
                f"(needs at least {self.min_input_size} pixels a side)"
            )
        maps = []
        for i, scale in enumerate(self.scales):
            if i:  # pooling the previous scale by 2 is pooling the image by 2**i
                x = F.avg_pool2d(x, kernel_size=2)
            maps.append(scale(x))
        return maps
