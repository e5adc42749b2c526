"""Pixel-space reconstruction losses."""

from __future__ import annotations

from vqtk.interfaces import Loss, LossInputs, LossTerm


class L1Loss(Loss):
    """Mean absolute error between ``inputs.real`` and ``inputs.reconstruction``."""

    def __init__(self) -> None:  # no arguments: its recipe table holds only type and weight
        super().__init__()

    def generator_loss(self, inputs: LossInputs) -> LossTerm:
        """``mean(|real - reconstruction|)`` over every pixel and channel."""
        return LossTerm(value=(inputs.real - inputs.reconstruction).abs().mean())


class L2Loss(Loss):
    """Mean squared error between ``inputs.real`` and ``inputs.reconstruction``."""

    def __init__(self) -> None:  # no arguments: its recipe table holds only type and weight
        super().__init__()

    def generator_loss(self, inputs: LossInputs) -> LossTerm:
        """``mean((real - reconstruction)**2)`` over every pixel and channel."""
        return LossTerm(value=(inputs.real - inputs.reconstruction).square().mean())
