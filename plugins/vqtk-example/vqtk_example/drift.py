"""ProGAN's drift penalty, as a discriminator-side regulariser: the lifecycle hooks in one small file.

It shows each part of the plugin contract a regulariser needs:

- **shared logits**: it reads the logits the GAN loss already computed
  (``inputs.discriminator_logits(real=True)``), so the discriminator runs once;
- **multi-scale outputs**: it averages over every logit map the discriminator returns;
- **the step hook**: it subclasses ``StepAware`` and ramps its strength in over
  ``warmup_steps`` (computed from the step, so a resumed run continues exactly);
- **state**: a buffer (a running mean of the real logits, logged) and extra
  state (how many updates it has seen) are saved in checkpoints and restored on resume.
"""

from typing import Annotated, Any

import torch

from vqtk import Loss, LossInputs, LossTerm, StepAware
from vqtk.config import non_negative, open_unit_interval


class DriftPenalty(Loss, StepAware):
    """Drift penalty (Karras et al. 2018): keeps the discriminator's real logits near zero.

    The discriminator minimises ``mean(D(real)^2)`` (times the recipe weight, e.g. 0.001).

    Args:
        warmup_steps: steps over which the penalty ramps in linearly from 0 (0: at once).
        momentum: momentum of the running mean of the real logits that is logged.
    """

    def __init__(self, *, warmup_steps: Annotated[int, non_negative] = 0,
                 momentum: Annotated[float, open_unit_interval] = 0.01):
        super().__init__()
        self.warmup_steps, self.momentum = warmup_steps, momentum
        self.register_buffer("mean_real_logit", torch.zeros(()))
        self.updates = 0
        self.strength = 1.0

    def on_step(self, step: int, total_steps: int) -> None:
        self.strength = min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0

    def get_extra_state(self) -> Any:
        return {"updates": self.updates}

    def set_extra_state(self, state: Any) -> None:
        self.updates = int(state["updates"])

    def discriminator_loss(self, inputs: LossInputs) -> LossTerm:
        real = inputs.discriminator_logits(real=True, fake=False).real  # one map per scale
        penalty = torch.stack([m.float().square().mean() for m in real]).mean()
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                mean = torch.stack([m.float().mean() for m in real]).mean()
                self.mean_real_logit.lerp_(mean, self.momentum)
            self.updates += 1
        return LossTerm(self.strength * penalty,
                        logs={"strength": torch.tensor(self.strength), "mean_real_logit": self.mean_real_logit.clone()})
