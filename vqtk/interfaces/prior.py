"""Prior: a generative model over a tokenizer's code indices (stage 2), in one or more token layouts."""

from __future__ import annotations

import abc
from typing import ClassVar, Optional

import attrs
import torch
from torch import nn

from vqtk.interfaces.layout import GRID, TokenLayout


@attrs.define(eq=False)
class PriorOutput:
    """Training loss of a prior on a batch of index grids, plus scalars to log."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = attrs.field(factory=dict)


@attrs.frozen
class SamplingOptions:
    """How to sample; fields a prior does not support must be left at their defaults."""

    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    cfg_scale: float = 1.0
    steps: Optional[int] = None  # iterative (MaskGIT-style) priors only
    use_cache: bool = True  # autoregressive priors: KV cache


class Prior(nn.Module, abc.ABC):
    """Models a tokenizer's indices: grids ``(B, h, w)``, ``(B, h, w, Q)`` or scales ``(B, L)``.

    Which of those it models is declared in :attr:`layouts` (see :mod:`vqtk.interfaces.layout`).

    Attributes:
        codebook_size: index range it models.
        grid_size: ``(h, w)`` grid it was trained on.
        num_classes: number of class labels for conditional priors, else 0.
        num_codebooks: indices per position of a ``depth`` layout it was built for, else 1.
        scales: the ``((h, w), ...)`` of a ``scales`` layout it was built for, else empty.
    """

    codebook_size: int
    grid_size: tuple[int, int]
    num_classes: int = 0
    num_codebooks: int = 1
    scales: tuple[tuple[int, int], ...] = ()
    #: the token layout kinds it models ("grid", "depth", "scales"); the assembler refuses a
    #: tokenizer whose quantizer lays out its codes otherwise
    layouts: ClassVar[tuple[str, ...]] = (GRID,)
    #: whether :meth:`sample` takes a ``grid_size`` larger than :attr:`grid_size` (e.g. by a
    #: sliding window); the assembler refuses ``prior_train.large_grid`` for a prior without it
    samples_larger_grids: ClassVar[bool] = False
    #: arguments the assembler takes from the tokenizer the prior models, so a recipe
    #: need not repeat them (repeating them is allowed when the values agree); ``scales``
    #: is the ``[[h, w], ...]`` list of a multi-scale layout
    provided_arguments: ClassVar[tuple[str, ...]] = ("codebook_size", "num_codebooks", "grid_size", "scales")
    #: arguments every component of this kind takes (none)
    required_arguments: ClassVar[tuple[str, ...]] = ()

    @property
    def layout(self) -> TokenLayout:
        """The layout of the indices this instance models (its :meth:`loss` input, its samples).

        Follows :attr:`scales` and :attr:`num_codebooks`, as :attr:`Quantizer.layout` does.
        """
        if self.scales:
            return TokenLayout.multiscale(self.scales)
        return TokenLayout.with_depth(self.num_codebooks)

    def blocks(self) -> list[nn.Module]:
        """The submodules that training may shard (FSDP) and checkpoint activations of, one unit each.

        Typically each transformer block, in order; each must be called through its ``forward``
        during :meth:`loss`, and its output must not be changed in place (add residuals out of
        place). The default, none, leaves the whole prior one unit.
        """
        return []

    @abc.abstractmethod
    def loss(self, indices: torch.Tensor, labels: Optional[torch.Tensor] = None) -> PriorOutput:
        """Training loss (mean negative log-likelihood in nats) on ``indices``."""

    @abc.abstractmethod
    def sample(
        self,
        batch_size: int,
        *,
        grid_size: Optional[tuple[int, int]] = None,
        labels: Optional[torch.Tensor] = None,
        options: SamplingOptions = SamplingOptions(),
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Sample indices of :attr:`layout` (``(batch_size, h, w)`` for a grid); ``grid_size``
        defaults to :attr:`grid_size` (a ``scales`` prior samples only that)."""
