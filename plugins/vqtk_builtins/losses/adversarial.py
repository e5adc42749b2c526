"""Adversarial loss: generator and discriminator objectives, taming's adaptive weight, R1."""

from __future__ import annotations

import logging
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from vqtk.errors import VqtkError
from vqtk.interfaces import Discriminator, Loss, LossInputs, LossTerm

logger = logging.getLogger("vqtk")

Objective = Literal["hinge", "vanilla", "non_saturating"]


def discriminator_objective(
    objective: Objective, logits_real: torch.Tensor, logits_fake: torch.Tensor
) -> torch.Tensor:
    """What the discriminator minimises (taming's ``hinge_d_loss`` / ``vanilla_d_loss``).

    hinge: ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``;
    vanilla and non_saturating: ``0.5 * (mean(softplus(-real)) + mean(softplus(fake)))``.
    """
    if objective == "hinge":
        return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    if objective in ("vanilla", "non_saturating"):
        return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())
    raise ValueError(f"unknown objective {objective!r}")


def generator_objective(objective: Objective, logits_fake: torch.Tensor) -> torch.Tensor:
    """What the generator minimises.

    hinge and vanilla: ``-mean(fake)`` (as taming); non_saturating: ``mean(softplus(-fake))``.
    """
    if objective in ("hinge", "vanilla"):
        return -logits_fake.mean()
    if objective == "non_saturating":
        return F.softplus(-logits_fake).mean()
    raise ValueError(f"unknown objective {objective!r}")


def adaptive_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> Optional[torch.Tensor]:
    """taming's ``calculate_adaptive_weight``: ``||dL_nll/dW|| / (||dL_g/dW|| + 1e-4)``, detached.

    ``W`` is the decoder's last layer. Balances the adversarial gradient against
    the reconstruction gradient where they meet. Clamped to ``[0, max_weight]``.
    Returns ``None`` when either loss does not depend on ``last_layer``.
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    if nll_grad is None or g_grad is None:
        return None
    weight = torch.linalg.vector_norm(nll_grad.float()) / (torch.linalg.vector_norm(g_grad.float()) + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``mean_b ||dD(x_b)/dx_b||^2`` on real images (kept in the graph)."""
    (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
    return grad.float().square().flatten(1).sum(dim=1).mean()


class GANLoss(Loss):
    """Adversarial term: the generator learns to fool ``inputs.discriminator``, which learns to spot fakes.

    Before ``start_step`` both terms are zero and the discriminator is not run
    (taming's ``disc_start``); the zeros are leaves with ``requires_grad`` so a
    trainer may call ``backward`` on them, and they leave every gradient as it
    was. From then on the generator term is ``adaptive_weight * factor *
    g_loss`` (the recipe weight plays taming's ``disc_weight``) and the
    discriminator term is the chosen objective plus ``r1_gamma / 2`` times the
    R1 penalty.
    """

    adversarial = True

    def __init__(
        self,
        *,
        objective: Objective = "hinge",
        start_step: int = 0,
        adaptive: bool = True,
        max_adaptive_weight: float = 1e4,
        r1_gamma: float = 0.0,
    ):
        super().__init__()
        self.objective = objective
        self.start_step = start_step
        self.adaptive = adaptive
        self.max_adaptive_weight = max_adaptive_weight
        self.r1_gamma = r1_gamma
        self._reported: set[str] = set()

    def factor(self, step: int) -> float:
        """0 before ``start_step``, else 1."""
        return 1.0 if step >= self.start_step else 0.0

    def _report_once(self, reason: str, level: int = logging.WARNING) -> None:
        if reason not in self._reported:
            self._reported.add(reason)
            logger.log(level, "loss gan: adaptive weight set to 0 because %s", reason)

    def _discriminator(self, inputs: LossInputs) -> Discriminator:
        if inputs.discriminator is None:
            raise VqtkError(
                "loss gan: needs a discriminator; add a [model.discriminator] table to the recipe"
            )
        return inputs.discriminator

    @staticmethod
    def _zero(inputs: LossInputs) -> torch.Tensor:
        return torch.zeros((), device=inputs.real.device, requires_grad=True)

    def _adaptive_weight(self, inputs: LossInputs, g_loss: torch.Tensor) -> torch.Tensor:
        if not self.adaptive:
            return torch.ones((), device=g_loss.device)
        zero = torch.zeros((), device=g_loss.device)
        if not torch.is_grad_enabled():
            self._report_once("gradients are disabled (evaluation)", logging.INFO)
            return zero
        nll = inputs.reconstruction_loss
        if inputs.last_layer is None:
            self._report_once("no decoder last layer was given (inputs.last_layer is None)")
            return zero
        if nll is None or not nll.requires_grad:
            self._report_once("there is no differentiable reconstruction loss (inputs.reconstruction_loss)")
            return zero
        if not g_loss.requires_grad:
            self._report_once("the generator's adversarial loss has no gradient")
            return zero
        weight = adaptive_weight(nll, g_loss, inputs.last_layer, self.max_adaptive_weight)
        if weight is None:
            self._report_once("the losses do not depend on the decoder's last layer")
            return zero
        return weight

    def generator_loss(self, inputs: LossInputs) -> LossTerm:
        """``adaptive_weight * factor * g_loss`` on ``D(reconstruction)``; logs its three parts."""
        factor = self.factor(inputs.step)
        if factor == 0.0:
            zero = torch.zeros((), device=inputs.real.device)
            return LossTerm(value=self._zero(inputs), logs={"factor": zero, "adaptive_weight": zero})
        logits_fake = self._discriminator(inputs)(inputs.reconstruction)
        g_loss = generator_objective(self.objective, logits_fake)
        weight = self._adaptive_weight(inputs, g_loss)
        value = weight * factor * g_loss
        logs = {
            "g_loss": g_loss.detach(),
            "adaptive_weight": weight.detach(),
            "factor": torch.tensor(factor, device=g_loss.device),
        }
        return LossTerm(value=value, logs=logs)

    def discriminator_loss(self, inputs: LossInputs) -> LossTerm:
        """``factor * objective(D(real), D(reconstruction.detach()))`` (+ R1); logs d_loss and mean logits."""
        factor = self.factor(inputs.step)
        if factor == 0.0:
            zero = torch.zeros((), device=inputs.real.device)
            return LossTerm(value=self._zero(inputs), logs={"factor": zero})
        disc = self._discriminator(inputs)
        real = inputs.real.detach()
        fake = inputs.reconstruction.detach()  # never let this term reach the generator
        use_r1 = self.r1_gamma > 0 and torch.is_grad_enabled()
        if use_r1:
            real.requires_grad_(True)
        logits_real = disc(real)
        logits_fake = disc(fake)
        d_loss = discriminator_objective(self.objective, logits_real, logits_fake)
        value = factor * d_loss
        logs = {
            "d_loss": d_loss.detach(),
            "logits_real": logits_real.detach().float().mean(),
            "logits_fake": logits_fake.detach().float().mean(),
        }
        if use_r1:
            penalty = r1_penalty(logits_real, real)
            value = value + 0.5 * self.r1_gamma * penalty
            logs["r1_penalty"] = penalty.detach()
        return LossTerm(value=value, logs=logs)

    def extra_repr(self) -> str:
        return (
            f"objective={self.objective!r}, start_step={self.start_step}, adaptive={self.adaptive}, "
            f"r1_gamma={self.r1_gamma}"
        )
