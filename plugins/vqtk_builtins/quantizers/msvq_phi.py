"""The per-scale refinement convolutions of VAR's multi-scale quantizer (``phi``), and which scale uses which.

VAR (Tian et al. 2024, ``models/quant.py`` of FoundationVision/VAR) blends each
upsampled scale ``h`` with a 3x3 convolution of itself before adding it to the
running reconstruction: ``phi(h) = (1 - r) * h + r * conv(h)`` with ``r`` its
``quant_resi`` ratio. ``share_quant_resi`` says how many such convolutions the
``K`` scales share:

- ``0``: one per scale (or ``num_phi`` of them, VAR's ``default_qresi_counts``);
- ``1``: one for every scale;
- ``n >= 2``: ``n`` of them (VAR's default 4), spread over the scales.

Scale ``k`` (of ``K``, counted from 0) sits at ``t = k / (K - 1)`` on ``[0, 1]``;
with ``n`` convolutions it takes the one whose tick is nearest to ``t``, ticks
``n`` evenly spaced points from ``1/(3n)`` to ``1 - 1/(3n)`` when ``n == 4`` and
from ``1/(2n)`` to ``1 - 1/(2n)`` otherwise (first one on ties). The ticks are
computed as numpy's float64 ``linspace``, as VAR computes them: with VAR's ten
scales and four convolutions, scales 2 and 7 sit exactly halfway between two
ticks, and only the same rounding picks the same convolution.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: ratios below this make phi the identity (no convolution, no parameters), as in VAR
IDENTITY_BELOW = 1e-6


class Phi(nn.Conv2d):
    """``(1 - ratio) * h + ratio * conv3x3(h)``, channels kept (VAR's ``Phi``)."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.ratio = float(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1 - self.ratio) + super().forward(h) * self.ratio


def phi_count(share_quant_resi: int, num_scales: int, num_phi: int = 0) -> int:
    """How many phi modules a quantizer with these settings holds (see the module docstring)."""
    if share_quant_resi == 0:
        return num_phi or num_scales
    return 1 if share_quant_resi == 1 else share_quant_resi


def phi_for_scales(count: int, num_scales: int) -> tuple[int, ...]:
    """The phi module each scale uses (``count`` modules shared by ``num_scales`` scales)."""
    if count == 1:
        return (0,) * num_scales
    margin = 1 / 3 / count if count == 4 else 1 / 2 / count
    ticks = np.linspace(margin, 1 - margin, count)
    last = max(num_scales - 1, 1)
    return tuple(int(np.argmin(np.abs(ticks - k / last))) for k in range(num_scales))


def make_phis(channels: int, ratio: float, count: int) -> nn.ModuleList:
    """``count`` phi modules (identities when ``ratio`` is below :data:`IDENTITY_BELOW`)."""
    return nn.ModuleList(
        Phi(channels, ratio) if abs(ratio) >= IDENTITY_BELOW else nn.Identity() for _ in range(count)
    )
