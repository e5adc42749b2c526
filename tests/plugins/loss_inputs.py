"""Loss inputs for the loss tests: a stand-in quantizer record and LossInputs around it
(a plain module: the test_losses_* files import it by name)."""

from __future__ import annotations

import torch

from vqtk.interfaces import Loss, LossInputs, QuantizerOutput


def quantizer_output(loss: torch.Tensor | None = None, **metrics) -> QuantizerOutput:
    return QuantizerOutput(
        quantized=torch.zeros(1, 4, 2, 2),
        indices=torch.zeros(1, 2, 2, dtype=torch.long),
        loss=torch.tensor(0.0) if loss is None else loss,
        metrics=dict(metrics),
    )


def make_inputs(real, reconstruction, **kwargs) -> LossInputs:
    """Generator-phase inputs (the default phase)."""
    return LossInputs(real=real, reconstruction=reconstruction, quantizer=quantizer_output(), **kwargs)


def discriminator_inputs(real, reconstruction, *losses: Loss, **kwargs) -> LossInputs:
    """Discriminator-phase inputs as the trainer makes them: real images are scored with grad
    when one of ``losses`` declares ``needs_real_gradients`` (R1)."""
    kwargs.setdefault("real_requires_grad", any(loss.needs_real_gradients for loss in losses))
    return make_inputs(real, reconstruction, phase="discriminator", **kwargs)
