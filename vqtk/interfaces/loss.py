"""Loss: one weighted term of the stage-1 objective."""

from __future__ import annotations

import abc
from typing import Optional

import attrs
import torch
from torch import nn

from vqtk.interfaces.discriminator import Discriminator
from vqtk.interfaces.quantizer import QuantizerOutput


@attrs.define(eq=False)
class LossInputs:
    """Everything a loss may look at during one training step.

    Attributes:
        real: input images ``(B, C, H, W)`` in ``[-1, 1]``.
        reconstruction: the model's output for ``real``.
        quantizer: the quantizer's record for this batch.
        step: the global optimisation step (0-based).
        discriminator: the discriminator, when the recipe has one.
        last_layer: the decoder's output-layer weight (for adaptive weights).
        reconstruction_loss: the weighted sum of the non-adversarial terms of
            this step; set by the trainer before adversarial losses run, so they
            can balance themselves against it.
    """

    real: torch.Tensor
    reconstruction: torch.Tensor
    quantizer: QuantizerOutput
    step: int = 0
    discriminator: Optional[Discriminator] = None
    last_layer: Optional[torch.Tensor] = None
    reconstruction_loss: Optional[torch.Tensor] = None


@attrs.define(eq=False)
class LossTerm:
    """A loss value plus scalars to log (``value`` is unweighted by the recipe weight)."""

    value: torch.Tensor
    logs: dict[str, torch.Tensor] = attrs.field(factory=dict)


class Loss(nn.Module, abc.ABC):
    """One term of the objective; the recipe gives each a name and a weight.

    The trainer calls :meth:`generator_loss` for every loss, non-adversarial
    ones first, multiplies each by its recipe weight and sums them. Losses
    with ``adversarial = True`` run after the others (they receive
    ``inputs.reconstruction_loss``) and also provide
    :meth:`discriminator_loss`, which the trainer minimises with the
    discriminator's own optimizer on detached reconstructions.
    """

    adversarial: bool = False

    @abc.abstractmethod
    def generator_loss(self, inputs: LossInputs) -> LossTerm:
        """The term the encoder/quantizer/decoder minimise."""

    def discriminator_loss(self, inputs: LossInputs) -> Optional[LossTerm]:
        """The term the discriminator minimises, or ``None`` for non-adversarial losses.

        ``inputs.reconstruction`` is already detached from the generator here.
        """
        return None
