"""The Charbonnier loss: a differentiable, outlier-robust L1."""

import torch

from vqtk import Loss, LossInputs, LossTerm


class CharbonnierLoss(Loss):
    """Mean of ``sqrt((real - reconstruction)^2 + eps^2)``."""

    def __init__(self, *, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def generator_loss(self, inputs: LossInputs) -> LossTerm:
        diff = inputs.real.float() - inputs.reconstruction.float()
        return LossTerm(torch.sqrt(diff * diff + self.eps**2).mean())
