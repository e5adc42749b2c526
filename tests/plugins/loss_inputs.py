"""Loss inputs for the loss tests: a stand-in quantizer record and LossInputs around it
(a plain module: the test_losses_* files import it by name)."""

from __future__ import annotations

import torch

from vqtk.interfaces import LossInputs, QuantizerOutput


def quantizer_output(loss: torch.Tensor | None = None, **metrics) -> QuantizerOutput:
    return QuantizerOutput(
        quantized=torch.zeros(1, 4, 2, 2),
        indices=torch.zeros(1, 2, 2, dtype=torch.long),
        loss=torch.tensor(0.0) if loss is None else loss,
        metrics=dict(metrics),
    )


def make_inputs(real, reconstruction, **kwargs) -> LossInputs:
    return LossInputs(real=real, reconstruction=reconstruction, quantizer=quantizer_output(), **kwargs)
