"""The Charbonnier loss: a differentiable, outlier-robust L1."""

from typing import Annotated

import torch

from vqtk import Loss, LossInputs, LossTerm
from vqtk.config import positive


class CharbonnierLoss(Loss):
    """Charbonnier (smooth L1) pixel loss: mean of ``sqrt((real - reconstruction)^2 + eps^2)``.

    Args:
        eps: smoothing; below it the loss behaves like L2, above it like L1.
    """

    def __init__(self, *, eps: Annotated[float, positive] = 1e-3):
        super().__init__()
        self.eps = eps

    def generator_loss(self, inputs: LossInputs) -> LossTerm:
        diff = inputs.real.float() - inputs.reconstruction.float()
        return LossTerm(torch.sqrt(diff * diff + self.eps**2).mean())
