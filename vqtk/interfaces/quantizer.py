"""Quantizer: snaps each latent vector to a code and returns one typed record."""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import attrs
import torch
from torch import nn

from vqtk.errors import VqtkError
from vqtk.interfaces.layout import TokenLayout
from vqtk.measure import code_histogram, code_usage, perplexity


@attrs.define(eq=False)
class QuantizerOutput:
    """What every quantizer returns, whatever library backs it.

    Attributes:
        quantized: ``(B, dim, h, w)`` quantized latents, with straight-through
            gradients to the input.
        indices: code indices (``int64``) in the quantizer's :attr:`Quantizer.layout`:
            ``(B, h, w)``, ``(B, h, w, Q)`` for quantizers with ``Q`` codebooks per position
            (residual VQ, grouped codes), or ``(B, L)`` for a multi-scale quantizer.
        loss: scalar auxiliary loss to add to the generator objective (codebook
            + commitment terms, entropy penalties); zero when the method has none.
        metrics: scalar tensors for logging; always holds ``perplexity`` and
            ``usage`` (fraction of the codebook used in this batch), plus any
            method-specific terms (e.g. ``commitment``).
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = attrs.field(factory=dict)


def codebook_stats(indices: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """Perplexity and usage of a batch of indices, as :meth:`Quantizer.forward` records them.

    ``indices`` is ``(B, h, w, Q)`` for ``Q`` codebooks, ``(B, h, w)`` or ``(B, L)`` for one.
    ``perplexity`` is ``2 ** entropy`` (bits) of the batch's code histogram and
    ``usage`` the fraction of the ``codebook_size`` codes used at least once,
    each averaged over codebooks (float32 scalars). Computed with
    :mod:`vqtk.measure`, without host synchronisation.
    """
    counts = code_histogram(indices, codebook_size)
    return {
        "perplexity": perplexity(counts, dtype=torch.float32).mean(),
        "usage": code_usage(counts).mean(),
    }


class Quantizer(nn.Module, abc.ABC):
    """Maps latents ``(B, dim, h, w)`` to codes.

    Subclasses implement :meth:`quantize` and :meth:`lookup`. :meth:`forward`
    runs :meth:`quantize` in float32 with autocast disabled, because distance
    computations and code statistics degrade in reduced precision (FSQ in bf16
    uses far fewer codes), returns ``quantized`` in the memory layout of its
    input (channels_last in, channels_last out), and fills in ``perplexity`` /
    ``usage`` when the subclass did not.

    Attributes:
        dim: channels of the latents this quantizer takes and returns.
        codebook_size: number of codes per codebook (the index range).
        num_codebooks: indices per spatial position (1 for plain VQ; ``Q`` for
            residual / grouped quantizers, whose indices are ``(B, h, w, Q)``).
    """

    #: arguments the assembler fills in from other parts of the recipe
    provided_arguments: ClassVar[tuple[str, ...]] = ()
    #: arguments every component of this kind takes (none)
    required_arguments: ClassVar[tuple[str, ...]] = ()

    dim: int
    codebook_size: int
    num_codebooks: int = 1

    @abc.abstractmethod
    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize float32 latents ``(B, dim, h, w)``."""

    @abc.abstractmethod
    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Turn indices of :attr:`layout` back into latents ``(B, dim, h, w)``."""

    @property
    def layout(self) -> TokenLayout:
        """How this quantizer lays out its indices (:mod:`vqtk.interfaces.layout`).

        The default follows :attr:`num_codebooks`: a grid, or a grid with ``Q`` indices per
        position. A multi-scale quantizer overrides it with its scales; its :meth:`quantize`
        then returns indices ``(B, L)`` and :meth:`lookup` takes them.
        """
        return TokenLayout.with_depth(self.num_codebooks)

    @property
    def index_shape_suffix(self) -> tuple[int, ...]:
        """Trailing index dimensions per position of a grid or depth layout: ``()`` or ``(Q,)``.

        Meaningless for a ``scales`` layout: :meth:`TokenLayout.index_shape` covers every layout.
        """
        return () if self.num_codebooks == 1 else (self.num_codebooks,)

    @property
    def bits_per_position(self) -> float:
        return self.num_codebooks * math.log2(self.codebook_size)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(device_type=z.device.type, enabled=False):
            out = self.quantize(z.float())
        if isinstance(out, QuantizerOutput) and tuple(out.quantized.shape) != tuple(z.shape):
            # checked on every call, not only by the shape probe: a training-only path can break it
            mode = "training" if self.training else "eval"
            raise VqtkError(f"model.quantizer (quantized): returned shape {tuple(out.quantized.shape)}, "
                            f"expected {tuple(z.shape)} ({type(self).__name__}.quantize in {mode} mode)")
        # in the input's layout, whatever view the subclass returned: a decoder fed a
        # channels_last view by accident runs its GroupNorms several times slower on CPU
        out.quantized = out.quantized.contiguous(memory_format=_memory_format(z))
        for key, value in codebook_stats(out.indices, self.codebook_size).items():
            out.metrics.setdefault(key, value)
        return out


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when ``x`` is laid out so (and not also plainly contiguous, as 1x1 grids are)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
