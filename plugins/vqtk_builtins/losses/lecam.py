"""LeCam regularisation of the discriminator (Tseng et al. 2021), as Open-MAGVIT2 and TiTok use it."""

from __future__ import annotations

from typing import Annotated, Sequence

import torch
import torch.nn.functional as F

from vqtk.config import non_negative, open_unit_interval
from vqtk.interfaces import Loss, LossInputs, LossTerm

from vqtk_builtins.losses.adversarial import mean_logit, shared_logits


def lecam_penalty(
    logits_real: Sequence[torch.Tensor],
    logits_fake: Sequence[torch.Tensor],
    ema_real: torch.Tensor,
    ema_fake: torch.Tensor,
) -> torch.Tensor:
    """``mean(relu(D(real) - ema_fake)^2) + mean(relu(ema_real - D(fake))^2)``, averaged over scales."""
    terms = [
        F.relu(real.float() - ema_fake).square().mean() + F.relu(ema_real - fake.float()).square().mean()
        for real, fake in zip(logits_real, logits_fake)
    ]
    return torch.stack(terms).mean()


class LeCamLoss(Loss):
    """LeCam regulariser: keeps the discriminator's logits near the moving averages of the other side's.

    "Regularizing Generative Adversarial Networks under Limited Data" (Tseng
    et al. 2021): the discriminator additionally minimises
    ``mean(relu(D(real) - ema_fake)^2) + mean(relu(ema_real - D(fake))^2)``,
    where ``ema_real`` / ``ema_fake`` are exponential moving averages of its
    mean logit on real and fake images. This bounds how far it can push real
    and fake logits apart, which keeps it from overfitting a small data set.

    A discriminator-side term only (no generator term), scaled by the recipe
    weight (Open-MAGVIT2 uses 0.001 to 0.1). It reads the logits that the
    adversarial loss already caused through
    :meth:`LossInputs.discriminator_logits` and never runs the discriminator
    itself. The averages are updated, first, on every discriminator-phase call
    in training mode from ``start_step`` on: the first update sets them to the
    batch's mean logits, later ones decay towards them. They are persistent
    buffers (``ema_real``, ``ema_fake``, ``num_updates``), so checkpoints save
    them and a resumed run continues them. For a multi-scale discriminator the
    averages track the mean over scales and the penalty is averaged over scales.

    Args:
        decay: decay of the exponential moving averages of the mean real and fake logits
        start_step: the term is zero and the averages are not updated before this step
            (usually the gan loss's start_step)
    """

    def __init__(
        self,
        *,
        decay: Annotated[float, open_unit_interval] = 0.999,
        start_step: Annotated[int, non_negative] = 0,
    ):
        super().__init__()
        self.decay = decay
        self.start_step = start_step
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, logits_real: Sequence[torch.Tensor], logits_fake: Sequence[torch.Tensor]) -> None:
        """Move the averages towards this batch's mean logits (set them on the first update)."""
        real, fake = mean_logit(logits_real), mean_logit(logits_fake)
        # first update: decay 0 copies the batch's means (no bias towards the zero initialisation);
        # computed on the device, so no host sync
        decay = torch.where(self.num_updates > 0, self.decay, 0.0)
        self.ema_real.copy_(decay * self.ema_real + (1 - decay) * real.to(self.ema_real.device))
        self.ema_fake.copy_(decay * self.ema_fake + (1 - decay) * fake.to(self.ema_fake.device))
        self.num_updates += 1

    def discriminator_loss(self, inputs: LossInputs) -> LossTerm:
        """The LeCam penalty on the shared logits; logs it and both averages."""
        if inputs.step < self.start_step:  # a leaf, so a trainer may call backward on it
            return self._term(torch.zeros((), device=inputs.real.device, requires_grad=True))
        logits = shared_logits(inputs, "lecam", real=True)
        if self.training and inputs.phase == "discriminator":
            self.update(logits.real, logits.fake)
        return self._term(lecam_penalty(logits.real, logits.fake, self.ema_real, self.ema_fake))

    def _term(self, penalty: torch.Tensor) -> LossTerm:
        logs = {"penalty": penalty.detach(), "ema_real": self.ema_real.clone(), "ema_fake": self.ema_fake.clone()}
        return LossTerm(value=penalty, logs=logs)

    def extra_repr(self) -> str:
        return f"decay={self.decay}, start_step={self.start_step}"
