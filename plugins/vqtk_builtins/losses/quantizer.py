"""The quantizer's own auxiliary loss as a weighted term of the objective."""

from __future__ import annotations

import torch

from vqtk.interfaces import Loss, LossInputs, LossTerm


class QuantizerLoss(Loss):
    """``inputs.quantizer.loss`` (codebook, commitment, entropy terms), logging the quantizer's metrics.

    Which terms it holds depends on the quantizer (zero for FSQ); their
    internal balance (e.g. commitment beta) is the quantizer's config, the
    recipe weight scales the whole.
    """

    def __init__(self) -> None:  # no arguments: its recipe table holds only type and weight
        super().__init__()

    def generator_loss(self, inputs: LossInputs) -> LossTerm:
        """The quantizer's loss, with its metrics (perplexity, usage, parts) as logs."""
        q = inputs.quantizer
        logs = {name: torch.as_tensor(value).detach() for name, value in q.metrics.items()}
        return LossTerm(value=q.loss.mean(), logs=logs)
