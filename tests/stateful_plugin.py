"""A plugin whose components keep state between steps, written only against vqtk's public contract.

One of each kind that can hold state: a quantizer (a buffer, extra state and a
step-driven warm-up), a discriminator (two scales, a running buffer) and a loss
(a running buffer, extra state and a step ramp). Tests use it to prove that
state is checkpointed, resumed bit-exactly and that the step hook is called.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from vqtk import hookimpl
from vqtk.config import non_negative, positive
from vqtk.interfaces import (
    Discriminator,
    Loss,
    LossInputs,
    LossTerm,
    Quantizer,
    QuantizerOutput,
    StepAware,
)

__version__ = "1.0"

#: tests set this to make RampedL1 raise inside its forward, as a plugin bug would
FAIL_WITH: Exception | None = None


class WarmupQuantizer(Quantizer, StepAware):
    """Nearest-code VQ whose commitment weight warms up over the first steps.

    Args:
        dim: channels of the latents.
        codebook_size: number of codes.
        warmup_steps: steps over which the commitment weight rises from 0 to 1.
    """

    def __init__(self, *, dim: Annotated[int, positive] = 8, codebook_size: Annotated[int, positive] = 16,
                 warmup_steps: Annotated[int, non_negative] = 3):
        super().__init__()
        self.dim, self.codebook_size, self.warmup_steps = dim, codebook_size, warmup_steps
        self.codes = nn.Parameter(torch.randn(codebook_size, dim))
        self.register_buffer("training_calls", torch.zeros((), dtype=torch.long))
        self.seen_steps: list[int] = []  # extra state: every step the hook announced
        self.commitment = 0.0

    def on_step(self, step: int, total_steps: int) -> None:
        self.seen_steps.append(step)
        self.commitment = min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0

    def get_extra_state(self) -> Any:
        return {"seen_steps": list(self.seen_steps)}

    def set_extra_state(self, state: Any) -> None:
        self.seen_steps = list(state["seen_steps"])

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = torch.cdist(flat, self.codes).argmin(1)
        q = self.codes[idx].reshape(b, h, w, d).permute(0, 3, 1, 2)
        if self.training:
            self.training_calls += 1
        loss = F.mse_loss(q, z.detach()) + self.commitment * F.mse_loss(z, q.detach())
        return QuantizerOutput(quantized=z + (q - z).detach(), indices=idx.reshape(b, h, w), loss=loss,
                               metrics={"commitment_weight": torch.tensor(self.commitment)})

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codes[indices].permute(0, 3, 1, 2)


class TwoScaleCritic(Discriminator):
    """Two small PatchGAN-like heads, at full and half resolution, whose logits are centred by a running mean.

    Args:
        in_channels: channels of the images it scores.
        width: channels of the hidden convolution.
        momentum: momentum of the running mean of the logits.
    """

    def __init__(self, *, in_channels: Annotated[int, positive] = 3, width: Annotated[int, positive] = 8,
                 momentum: float = 0.1):
        super().__init__()
        self.in_channels, self.momentum = in_channels, momentum
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 1, 3, 1, 1))
            for _ in range(2))
        self.register_buffer("running_mean", torch.zeros(2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = [self.heads[0](x), self.heads[1](F.avg_pool2d(x, 2))]
        if self.training:
            with torch.no_grad():
                means = torch.stack([m.float().mean() for m in maps])
                self.running_mean.lerp_(means, self.momentum)
        return [m - self.running_mean[i] for i, m in enumerate(maps)]


class RampedL1(Loss, StepAware):
    """L1 scaled by a ramp over the steps and divided by its own running mean (a stateful normaliser).

    Args:
        ramp_steps: steps over which the scale rises linearly to 1.
        decay: decay of the running mean of the raw L1.
    """

    def __init__(self, *, ramp_steps: Annotated[int, positive] = 4, decay: float = 0.5):
        super().__init__()
        self.ramp_steps, self.decay = ramp_steps, decay
        self.register_buffer("running_l1", torch.ones(()))
        self.updates = 0  # extra state
        self.scale = 0.0

    def on_step(self, step: int, total_steps: int) -> None:
        self.scale = min(1.0, (step + 1) / self.ramp_steps)

    def get_extra_state(self) -> Any:
        return {"updates": self.updates}

    def set_extra_state(self, state: Any) -> None:
        self.updates = int(state["updates"])

    def generator_loss(self, inputs: LossInputs) -> LossTerm:
        if FAIL_WITH is not None:
            raise FAIL_WITH
        raw = (inputs.real - inputs.reconstruction).abs().mean()
        if self.training and torch.is_grad_enabled():
            self.running_l1.mul_(self.decay).add_((1 - self.decay) * raw.detach())
            self.updates += 1
        return LossTerm(value=self.scale * raw / self.running_l1.clamp_min(1e-3),
                        logs={"scale": torch.tensor(self.scale), "running_l1": self.running_l1.clone()})


@hookimpl
def vqtk_register_components(register):
    register("quantizer", "warmup_vq", WarmupQuantizer)
    register("discriminator", "two_scale", TwoScaleCritic)
    register("loss", "ramped_l1", RampedL1)
