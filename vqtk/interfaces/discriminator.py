"""Discriminator: real vs. reconstructed images."""

from __future__ import annotations

import abc
from typing import ClassVar, Sequence, Union

import torch
from torch import nn

#: What a discriminator returns: one logit map, or one per scale (multi-scale critics).
Logits = Union[torch.Tensor, Sequence[torch.Tensor]]


class Discriminator(nn.Module, abc.ABC):
    """Scores images ``(B, in_channels, H, W)``; higher means "real".

    Returns logits of any shape with a leading batch dimension: a PatchGAN
    returns one logit per patch ``(B, 1, h, w)``, a global critic ``(B, 1)``.
    A multi-scale critic returns a list with one such map per scale; the GAN
    loss scores each scale on its own (with its own weight), so a larger map
    does not drown out a smaller one.
    """

    in_channels: int
    #: arguments the assembler fills in (none for discriminators)
    provided_arguments: ClassVar[tuple[str, ...]] = ()
    #: arguments every component of this kind takes (none)
    required_arguments: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> Logits: ...


def logit_maps(output: Logits) -> list[torch.Tensor]:
    """A discriminator's output as a list of logit maps (one per scale)."""
    if torch.is_tensor(output):
        return [output]
    if isinstance(output, (list, tuple)) and output and all(torch.is_tensor(t) for t in output):
        return list(output)
    raise TypeError(
        f"a discriminator must return a tensor or a non-empty list of tensors, got {type(output).__name__}"
    )
