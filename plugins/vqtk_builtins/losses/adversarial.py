"""Adversarial loss: generator and discriminator objectives per scale, taming's adaptive weight, R1."""

from __future__ import annotations

import logging
from typing import Annotated, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from vqtk.config import each, non_empty, non_negative, positive
from vqtk.errors import VqtkError
from vqtk.interfaces import DiscriminatorLogits, Loss, LossInputs, LossTerm

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


def r1_penalty(logits_real: Union[torch.Tensor, Sequence[torch.Tensor]], real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``mean_b ||dD(x_b)/dx_b||^2`` on real images (kept in the graph).

    ``logits_real`` is one logit map or one per scale; a multi-scale
    discriminator's logits are summed over scales, so the penalty is on the
    gradient of the whole critic.
    """
    maps = [logits_real] if torch.is_tensor(logits_real) else list(logits_real)
    total = maps[0].sum()
    for logits in maps[1:]:
        total = total + logits.sum()
    (grad,) = torch.autograd.grad(total, real, create_graph=True)
    return grad.float().square().flatten(1).sum(dim=1).mean()


class ScaleCountError(VqtkError, ValueError):
    """``scale_weights`` does not have one weight per logit map of the discriminator."""


def combine_scales(terms: Sequence[torch.Tensor], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """``sum_i weights[i] * terms[i]``; ``None`` weighs every scale ``1 / len(terms)`` (their mean).

    A single term with ``weights = None`` comes back as it is (times 1.0).
    Raises :class:`ScaleCountError` (a ``ValueError``) when the counts differ.
    """
    if weights is None:
        weights = (1.0 / len(terms),) * len(terms)
    elif len(weights) != len(terms):
        raise ScaleCountError(
            f"loss gan: scale_weights has {len(weights)} weight{'s' if len(weights) != 1 else ''} but the "
            f"discriminator returned {len(terms)} logit map{'s' if len(terms) != 1 else ''} (one per scale); "
            f"give {len(terms)} weights or leave scale_weights out to average the scales"
        )
    total = weights[0] * terms[0]
    for weight, term in zip(weights[1:], terms[1:]):
        total = total + weight * term
    return total


def mean_logit(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean logit of each map, averaged over maps (for logs)."""
    return torch.stack([m.detach().float().mean() for m in maps]).mean()


def shared_logits(inputs: LossInputs, loss: str, *, real: bool = False) -> DiscriminatorLogits:
    """The phase's shared discriminator logits (:meth:`LossInputs.discriminator_logits`) for loss ``loss``.

    Raises :class:`VqtkError` when the recipe has no discriminator, or when it
    returned a different number of maps for the real images than for the fakes.
    """
    if inputs.discriminator is None:
        raise VqtkError(f"loss {loss}: needs a discriminator; add a [model.discriminator] table to the recipe")
    logits = inputs.discriminator_logits(real=real)
    if real and len(logits.real) != len(logits.fake):
        raise VqtkError(
            f"loss {loss}: the discriminator returned {len(logits.real)} logit maps for real images "
            f"but {len(logits.fake)} for reconstructions"
        )
    return logits


class GANLoss(Loss):
    """Adversarial term: the generator learns to fool ``inputs.discriminator``, which learns to spot fakes.

    Before ``start_step`` both terms are zero and the discriminator is not run
    (taming's ``disc_start``); the zeros are leaves with ``requires_grad`` so a
    trainer may call ``backward`` on them, and they leave every gradient as it
    was. From then on the generator term is ``adaptive_weight * factor *
    g_loss`` (the recipe weight plays taming's ``disc_weight``) and the
    discriminator term is the chosen objective plus ``r1_gamma / 2`` times the
    R1 penalty.

    ``disc_warmup_steps`` starts the discriminator's own training that many
    steps before ``start_step``, so the generator's first adversarial gradients
    come from a critic that has learnt something rather than from a random
    one; ``ramp_steps`` raises the generator's factor linearly from 0 to 1 over
    that many steps from ``start_step``. Both default to 0 (taming's switch).

    The logits come from :meth:`LossInputs.discriminator_logits`, shared with
    every other loss of the phase (the discriminator runs once per phase). A
    multi-scale discriminator returns one logit map per scale: the objective
    is computed on each map and the per-scale terms are combined with
    ``scale_weights`` (their mean by default, so a single-scale discriminator
    gives the plain objective), and logged as ``g_loss/scaleI`` /
    ``d_loss/scaleI``. The adaptive weight balances the combined term.

    Args:
        objective: hinge and vanilla train the generator on -mean(D(fake)) (taming);
            non_saturating on softplus(-D(fake))
        start_step: both terms are zero before this step (taming's disc_start)
        disc_warmup_steps: the discriminator term starts this many steps before start_step
            (the generator's term still starts at start_step)
        ramp_steps: the generator's term rises linearly to full weight over this many steps
            from start_step (0: all at once)
        adaptive: scale the generator term by ||grad nll|| / ||grad g_loss|| at the decoder's last layer
        max_adaptive_weight: upper clamp of the adaptive weight
        r1_gamma: R1 gradient penalty weight on real images (0 disables); the term is
            r1_gamma / 2 * E||dD/dx||^2, summed over a multi-scale discriminator's scales
        scale_weights: for a multi-scale discriminator, the weight of each scale's objective
            (one per logit map, finest first; the terms are summed with these weights);
            default: the mean over scales
    """

    adversarial = True

    def __init__(
        self,
        *,
        objective: Objective = "hinge",
        start_step: Annotated[int, non_negative] = 0,
        disc_warmup_steps: Annotated[int, non_negative] = 0,
        ramp_steps: Annotated[int, non_negative] = 0,
        adaptive: bool = True,
        max_adaptive_weight: Annotated[float, positive] = 1e4,
        r1_gamma: Annotated[float, non_negative] = 0.0,
        scale_weights: Annotated[Optional[tuple[float, ...]], non_empty, each(non_negative)] = None,
    ):
        super().__init__()
        self.objective = objective
        self.start_step = start_step
        self.disc_warmup_steps = disc_warmup_steps
        self.ramp_steps = ramp_steps
        self.adaptive = adaptive
        self.max_adaptive_weight = max_adaptive_weight
        self.r1_gamma = r1_gamma
        self.scale_weights = None if scale_weights is None else tuple(float(w) for w in scale_weights)
        #: the trainer scores real images that require grad in the discriminator phase (R1)
        self.needs_real_gradients = r1_gamma > 0
        self._reported: set[str] = set()

    def factor(self, step: int) -> float:
        """The generator term's factor: 0 before ``start_step``, then a linear ramp to 1 over ``ramp_steps``."""
        if step < self.start_step:
            return 0.0
        if self.ramp_steps == 0:
            return 1.0
        return min(1.0, (step - self.start_step + 1) / self.ramp_steps)

    def disc_factor(self, step: int) -> float:
        """The discriminator term's factor: 1 from ``disc_warmup_steps`` before ``start_step`` on, else 0."""
        return 1.0 if step >= self.start_step - self.disc_warmup_steps else 0.0

    def _report_once(self, reason: str, level: int = logging.WARNING) -> None:
        if reason not in self._reported:
            self._reported.add(reason)
            logger.log(level, "loss gan: adaptive weight set to 0 because %s", reason)

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
        """``adaptive_weight * factor * g_loss`` on the shared ``D(reconstruction)``; logs its parts."""
        factor = self.factor(inputs.step)
        if factor == 0.0:
            zero = torch.zeros((), device=inputs.real.device)
            return LossTerm(value=self._zero(inputs), logs={"factor": zero, "adaptive_weight": zero})
        fake = shared_logits(inputs, "gan").fake
        per_scale = [generator_objective(self.objective, logits) for logits in fake]
        g_loss = combine_scales(per_scale, self.scale_weights)
        weight = self._adaptive_weight(inputs, g_loss)
        value = weight * factor * g_loss
        logs = {
            "g_loss": g_loss.detach(),
            "adaptive_weight": weight.detach(),
            "factor": torch.tensor(factor, device=g_loss.device),
        }
        if len(per_scale) > 1:
            logs.update({f"g_loss/scale{i}": term.detach() for i, term in enumerate(per_scale)})
        return LossTerm(value=value, logs=logs)

    def discriminator_loss(self, inputs: LossInputs) -> LossTerm:
        """``factor * objective(D(real), D(fake))`` (+ R1) on the shared logits; logs d_loss and mean logits.

        The fake images are the phase's: in the discriminator phase
        :class:`LossInputs` scores the detached reconstruction, so this term
        never reaches the generator.
        """
        factor = self.disc_factor(inputs.step)
        if factor == 0.0:
            zero = torch.zeros((), device=inputs.real.device)
            return LossTerm(value=self._zero(inputs), logs={"factor": zero})
        logits = shared_logits(inputs, "gan", real=True)
        per_scale = [
            discriminator_objective(self.objective, real, fake) for real, fake in zip(logits.real, logits.fake)
        ]
        d_loss = combine_scales(per_scale, self.scale_weights)
        value = factor * d_loss
        logs = {
            "d_loss": d_loss.detach(),
            "logits_real": mean_logit(logits.real),
            "logits_fake": mean_logit(logits.fake),
        }
        if len(per_scale) > 1:
            for i, (term, real, fake) in enumerate(zip(per_scale, logits.real, logits.fake)):
                logs[f"d_loss/scale{i}"] = term.detach()
                logs[f"logits_real/scale{i}"] = real.detach().float().mean()
                logs[f"logits_fake/scale{i}"] = fake.detach().float().mean()
        if self.r1_gamma > 0 and torch.is_grad_enabled():
            if not logits.real_images.requires_grad:
                raise RuntimeError(
                    "loss gan: r1_gamma > 0 needs the real images to require grad: score them in the "
                    "discriminator phase with LossInputs(phase='discriminator', real_requires_grad=True) "
                    "(the trainer does so for losses whose needs_real_gradients is true)"
                )
            penalty = r1_penalty(logits.real, logits.real_images)
            value = value + 0.5 * self.r1_gamma * penalty
            logs["r1_penalty"] = penalty.detach()
        return LossTerm(value=value, logs=logs)

    def extra_repr(self) -> str:
        weights = f", scale_weights={self.scale_weights}" if self.scale_weights is not None else ""
        return (
            f"objective={self.objective!r}, start_step={self.start_step}, "
            f"disc_warmup_steps={self.disc_warmup_steps}, ramp_steps={self.ramp_steps}, adaptive={self.adaptive}, "
            f"r1_gamma={self.r1_gamma}{weights}"
        )
