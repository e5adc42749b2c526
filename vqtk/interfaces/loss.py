"""Loss: one weighted term of the stage-1 objective, on the generator side, the discriminator side, or both."""

from __future__ import annotations

import abc
from typing import ClassVar, Literal, Optional

import attrs
import torch
from torch import nn

from vqtk.interfaces.discriminator import Discriminator, logit_maps
from vqtk.interfaces.quantizer import QuantizerOutput


@attrs.define(eq=False)
class DiscriminatorLogits:
    """The discriminator's logits on one batch, computed once per phase and shared by every loss.

    Attributes:
        fake: one logit map per scale on ``fake_images`` (``None`` until a loss asks for them).
        fake_images: the reconstructions scored; in the generator phase gradients
            flow through them to the generator, in the discriminator phase they
            are detached.
        real: one logit map per scale on ``real_images`` (``None`` until a loss asks for them).
        real_images: the real images scored; they require grad in the discriminator
            phase when a loss declares ``needs_real_gradients`` (R1).
    """

    fake: Optional[list[torch.Tensor]] = None
    fake_images: Optional[torch.Tensor] = None
    real: Optional[list[torch.Tensor]] = None
    real_images: Optional[torch.Tensor] = None


@attrs.define(eq=False)
class LossInputs:
    """Everything a loss may look at during one training step.

    Attributes:
        real: input images ``(B, C, H, W)`` in ``[-1, 1]``.
        reconstruction: the model's output for ``real`` (detached in the discriminator phase).
        quantizer: the quantizer's record for this batch.
        step: the global optimisation step (0-based).
        discriminator: the discriminator, when the recipe has one.
        last_layer: the decoder's output-layer weight (for adaptive weights).
        reconstruction_loss: the weighted sum of the non-adversarial terms of
            this step; set by the trainer before adversarial losses run, so they
            can balance themselves against it.
        phase: ``"generator"`` while the tokenizer's loss is computed,
            ``"discriminator"`` while the discriminator's is.
        real_requires_grad: in the discriminator phase, score real images that
            require grad (set by the trainer when a loss declares
            ``needs_real_gradients``).
    """

    real: torch.Tensor
    reconstruction: torch.Tensor
    quantizer: QuantizerOutput
    step: int = 0
    discriminator: Optional[Discriminator] = None
    last_layer: Optional[torch.Tensor] = None
    reconstruction_loss: Optional[torch.Tensor] = None
    phase: Literal["generator", "discriminator"] = "generator"
    real_requires_grad: bool = False
    _logits: Optional[DiscriminatorLogits] = attrs.field(default=None, init=False, repr=False)

    def discriminator_logits(self, *, real: bool = False, fake: bool = True) -> DiscriminatorLogits:
        """The discriminator's logits on this batch, each side computed at most once per phase.

        ``fake=True`` (the default) scores the reconstructions, ``real=True``
        the real images; what an earlier loss already caused is reused, so
        losses that regularise the discriminator (LeCam) read the logits the
        adversarial loss computed instead of running the discriminator again
        (which would also update BatchNorm statistics twice).
        """
        if self.discriminator is None:
            raise ValueError("this recipe has no discriminator ([model.discriminator])")
        if self._logits is None:
            self._logits = DiscriminatorLogits()
        logits = self._logits
        if fake and logits.fake is None:
            images = self.reconstruction.detach() if self.phase == "discriminator" else self.reconstruction
            logits.fake = logit_maps(self.discriminator(images))
            logits.fake_images = images
        if real and logits.real is None:
            images = self.real.detach()
            if self.phase == "discriminator" and self.real_requires_grad and torch.is_grad_enabled():
                images.requires_grad_(True)
            logits.real = logit_maps(self.discriminator(images))
            logits.real_images = images
        return logits


@attrs.define(eq=False)
class LossTerm:
    """A loss value plus scalars to log (``value`` is unweighted by the recipe weight)."""

    value: torch.Tensor
    logs: dict[str, torch.Tensor] = attrs.field(factory=dict)


class Loss(nn.Module, abc.ABC):
    """One term of the objective; the recipe gives each a name and a weight.

    A loss implements :meth:`generator_loss` (what the encoder, quantizer and
    decoder minimise), :meth:`discriminator_loss` (what the discriminator
    minimises), or both; the other returns ``None``.

    - The trainer sums ``weight * generator_loss`` over losses, non-adversarial
      ones first. Losses with ``adversarial = True`` run after them and receive
      ``inputs.reconstruction_loss`` to balance against (taming's adaptive weight).
    - In the discriminator phase the trainer sums the discriminator terms,
      adversarial losses first (their logits are then shared through
      :meth:`LossInputs.discriminator_logits`). The recipe weight of an
      adversarial loss scales its generator term only (taming's ``disc_weight``:
      the discriminator minimises its own objective unweighted); every other
      loss's discriminator term (a regulariser such as LeCam) is scaled by its
      recipe weight. Both are logged as ``loss_d/NAME``.
    - Buffers and ``get_extra_state`` are saved in checkpoints and restored on
      resume; subclass :class:`vqtk.interfaces.StepAware` to follow the step.
    """

    #: balances itself against the reconstruction loss and runs after the other terms
    adversarial: bool = False
    #: the discriminator phase must score real images that require grad (R1 penalty)
    needs_real_gradients: bool = False
    #: arguments the assembler fills in (none for losses)
    provided_arguments: ClassVar[tuple[str, ...]] = ()
    #: arguments every component of this kind takes (none)
    required_arguments: ClassVar[tuple[str, ...]] = ()

    def generator_loss(self, inputs: LossInputs) -> Optional[LossTerm]:
        """The term the encoder/quantizer/decoder minimise, or ``None`` when this loss has none."""
        return None

    def discriminator_loss(self, inputs: LossInputs) -> Optional[LossTerm]:
        """The term the discriminator minimises, or ``None`` for a loss without one.

        ``inputs.reconstruction`` is already detached from the generator here.
        """
        return None

    @classmethod
    def terms(cls) -> tuple[bool, bool]:
        """Whether the class overrides ``(generator_loss, discriminator_loss)``."""
        return (cls.generator_loss is not Loss.generator_loss,
                cls.discriminator_loss is not Loss.discriminator_loss)
