"""Gumbel-softmax quantization (taming's GumbelQuantize, DALL-E's dVAE) with a temperature annealed by the step."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import non_negative, positive
from vqtk.interfaces import Quantizer, QuantizerOutput, StepAware
from vqtk_builtins.quantizers.layout import check_latents, from_tokens, indices_to_tokens


def check_gumbel(config: Any) -> None:
    """Recipe check of ``gumbel``: the temperature anneals down to its floor, never up."""
    if config.min_temperature > config.temperature:
        raise ValueError(
            f"min_temperature ({config.min_temperature}) must be <= temperature ({config.temperature})"
        )


class GumbelQuantizer(Quantizer, StepAware):
    """Gumbel-softmax quantization: code logits from a 1x1 projection, sampled at an annealed temperature.

    A learned 1x1 convolution maps each latent to logits over the
    ``codebook_size`` codes. In training, codes are drawn with the
    Gumbel-softmax relaxation at the current temperature and the quantized
    latent is the sampled (soft, or straight-through one-hot) mix of the code
    embeddings, so gradients reach both the encoder and the codebook; in eval
    mode each position takes its most likely code (the argmax of the logits),
    deterministically. The loss is ``kl_weight * KL(softmax(logits) || uniform)``,
    which keeps the code distribution from collapsing.

    The temperature follows the training clock: the trainer calls
    :meth:`on_step` before each step, which sets it to
    ``max(min_temperature, temperature * exp(-anneal_rate * step))`` (DALL-E
    and taming anneal it similarly). It is computed from the step alone and is
    not saved, so a resumed run continues the schedule exactly; each record
    logs it as ``temperature``.

    Args:
        dim: channels of the latents (and of the codes).
        codebook_size: number of codes.
        temperature: Gumbel-softmax temperature at step 0, annealed from there.
        min_temperature: floor of the annealed temperature.
        anneal_rate: exponential decay of the temperature per training step; 0 keeps it constant.
        kl_weight: weight of KL(softmax(logits) || uniform), the pull towards using every code.
        straight_through: one-hot codes forward with the relaxation's gradients backward
            (hard Gumbel-softmax); false feeds the decoder the soft mix of codes in training.
    """

    def __init__(
        self,
        *,
        dim: Annotated[int, positive] = 256,
        codebook_size: Annotated[int, positive] = 1024,
        temperature: Annotated[float, positive] = 1.0,
        min_temperature: Annotated[float, positive] = 0.5,
        anneal_rate: Annotated[float, non_negative] = 1e-4,
        kl_weight: Annotated[float, non_negative] = 5e-4,
        straight_through: bool = True,
    ):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.num_codebooks = 1
        self.temperature = temperature
        self.min_temperature = min_temperature
        self.anneal_rate = anneal_rate
        self.kl_weight = kl_weight
        self.straight_through = straight_through
        #: the temperature of the current step: a plain float set by on_step, never in the state dict
        self.current_temperature = self.temperature_at(0)
        # taming's names (quantize.proj, quantize.embed)
        self.proj = nn.Conv2d(dim, codebook_size, 1)
        self.embed = nn.Embedding(codebook_size, dim)

    def temperature_at(self, step: int) -> float:
        """The scheduled temperature of training step ``step``."""
        return max(self.min_temperature, self.temperature * math.exp(-self.anneal_rate * step))

    def on_step(self, step: int, total_steps: int) -> None:
        """Set the temperature of the step about to run (see the class docstring)."""
        self.current_temperature = self.temperature_at(step)

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents: a Gumbel-softmax sample in training, the argmax in eval."""
        check_latents(z, self.dim, type(self).__name__)
        logits = self.proj(z)  # (B, codebook_size, h, w)
        if self.training:
            one_hot = F.gumbel_softmax(logits, tau=self.current_temperature, hard=self.straight_through, dim=1)
            indices = one_hot.argmax(dim=1)
            quantized = torch.einsum("bnhw,nd->bdhw", one_hot, self.embed.weight)
        else:
            indices = logits.argmax(dim=1)
            quantized = self.embed(indices).permute(0, 3, 1, 2)
        # KL(q || uniform) = sum_k q_k * log(q_k * codebook_size), averaged over positions
        log_q = F.log_softmax(logits, dim=1)
        kl = (log_q.exp() * (log_q + math.log(self.codebook_size))).sum(dim=1).mean()
        return QuantizerOutput(
            quantized=quantized,
            indices=indices,
            loss=self.kl_weight * kl,
            metrics={"kl": kl.detach(), "temperature": z.new_full((), self.current_temperature)},
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``(B, h, w)`` indices, as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, 1, type(self).__name__)
        return from_tokens(self.embed(idx), grid)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, min_temperature={self.min_temperature}, "
                f"anneal_rate={self.anneal_rate}, kl_weight={self.kl_weight}, "
                f"straight_through={self.straight_through}")
