"""Token layouts: how a tokenizer lays out its code indices, and which layouts a prior models.

Three layouts cover the tokenizers in use:

- ``grid``: one index per latent position, ``(B, h, w)`` (VQ, FSQ, LFQ, ...).
- ``depth``: ``Q`` indices per position, ``(B, h, w, Q)``, coarse to fine along the last
  axis (residual VQ, grouped codes; RQ-Transformer's layout).
- ``scales``: a sequence of grids from coarse to fine (VAR's multi-scale residual
  quantizer), stored flat as ``(B, L)`` with ``L = sum(h_k * w_k)``, scale by scale, each
  scale row-major. :meth:`TokenLayout.split` gives the per-scale grids back.

A quantizer declares its layout (:attr:`vqtk.interfaces.Quantizer.layout`); a prior
declares the layout kinds it models (:attr:`vqtk.interfaces.Prior.layouts`). The
assembler refuses a prior that does not model its tokenizer's layout, naming both.
"""

from __future__ import annotations

from typing import Sequence

import attrs
import torch

from vqtk.errors import VqtkError
from vqtk.measure import codes_by_codebook

GRID = "grid"
DEPTH = "depth"
SCALES = "scales"
#: every layout kind, in the order they are documented
LAYOUT_KINDS: tuple[str, ...] = (GRID, DEPTH, SCALES)


def _scales(value: Sequence) -> tuple[tuple[int, int], ...]:
    out = []
    for s in value:
        h, w = (s, s) if isinstance(s, int) else s
        out.append((int(h), int(w)))
    return tuple(out)


@attrs.frozen
class TokenLayout:
    """How code indices are laid out.

    Attributes:
        kind: ``"grid"``, ``"depth"`` or ``"scales"``.
        depth: indices per position (``Q``) for ``depth``; 1 otherwise.
        scales: ``((h_1, w_1), ..., (h_K, w_K))`` coarse to fine for ``scales``; empty
            otherwise. The last scale is the latent grid.
    """

    kind: str = attrs.field(validator=attrs.validators.in_(LAYOUT_KINDS))
    depth: int = 1
    scales: tuple[tuple[int, int], ...] = attrs.field(default=(), converter=_scales)

    def __attrs_post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.kind == DEPTH and self.depth < 2:
            raise ValueError("a depth layout has at least 2 indices per position")
        if self.kind != DEPTH and self.depth != 1:
            raise ValueError(f"depth={self.depth} only applies to the depth layout")
        if (self.kind == SCALES) != bool(self.scales):
            raise ValueError("scales are given exactly for the scales layout")
        if any(h < 1 or w < 1 for h, w in self.scales):
            raise ValueError(f"every scale must be at least 1x1, got {self.scales}")

    @classmethod
    def grid(cls) -> TokenLayout:
        return cls(GRID)

    @classmethod
    def with_depth(cls, depth: int) -> TokenLayout:
        """``depth`` indices per position (a plain grid when ``depth`` is 1)."""
        return cls(GRID) if depth == 1 else cls(DEPTH, depth=depth)

    @classmethod
    def multiscale(cls, scales: Sequence) -> TokenLayout:
        """Scales coarse to fine, each an int (square) or ``(h, w)``."""
        return cls(SCALES, scales=scales)

    def describe(self) -> str:
        """A few words for messages: ``one index per position`` etc."""
        if self.kind == GRID:
            return "a grid with one index per position"
        if self.kind == DEPTH:
            return f"a grid with {self.depth} indices per position"
        sizes = ", ".join(f"{h}" if h == w else f"{h}x{w}" for h, w in self.scales)
        return f"{len(self.scales)} scales ({sizes})"

    def tokens(self, grid_size: tuple[int, int]) -> int:
        """Indices per image for a latent grid of ``grid_size``."""
        h, w = grid_size
        if self.kind == SCALES:
            self.check_grid(grid_size)
            return sum(a * b for a, b in self.scales)
        return h * w * self.depth

    def index_shape(self, batch: int, grid_size: tuple[int, int]) -> tuple[int, ...]:
        """The shape of the index tensor of ``batch`` images with a latent grid of ``grid_size``."""
        h, w = grid_size
        if self.kind == GRID:
            return (batch, h, w)
        if self.kind == DEPTH:
            return (batch, h, w, self.depth)
        return (batch, self.tokens(grid_size))

    def check_grid(self, grid_size: tuple[int, int], where: str = "") -> None:
        """A scales layout only fits the latent grid of its last scale (``where`` starts the message)."""
        if self.kind == SCALES and tuple(grid_size) != self.scales[-1]:
            raise VqtkError(f"{where}the latent grid {tuple(grid_size)} is not the last of {self.describe()}: "
                            f"a multi-scale tokenizer only codes images whose latent grid is {self.scales[-1]}")

    def check_indices(self, indices: torch.Tensor) -> None:
        """Raise a :class:`VqtkError` unless ``indices`` has this layout's shape (any batch and grid)."""
        if self.kind == SCALES:
            ok = indices.dim() == 2 and indices.shape[1] == self.tokens(self.scales[-1])
            want = f"(B, {self.tokens(self.scales[-1])})"
        elif self.kind == DEPTH:
            ok, want = indices.dim() == 4 and indices.shape[-1] == self.depth, f"(B, h, w, {self.depth})"
        else:
            ok, want = indices.dim() == 3, "(B, h, w)"
        if not ok:
            raise VqtkError(f"indices of shape {tuple(indices.shape)} do not hold {self.describe()} "
                            f"(expected {want})")

    def split(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """The index tensor as a list: one ``(B, h_k, w_k)`` grid per scale (``scales``), one
        ``(B, h, w)`` grid per depth level (``depth``), or ``[indices]`` (``grid``)."""
        self.check_indices(indices)
        if self.kind == GRID:
            return [indices]
        if self.kind == DEPTH:
            return list(indices.unbind(-1))
        sizes = [h * w for h, w in self.scales]
        return [part.reshape(-1, h, w) for part, (h, w) in zip(indices.split(sizes, dim=1), self.scales)]

    def join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`split`."""
        parts = list(parts)
        want = {GRID: 1, DEPTH: self.depth, SCALES: len(self.scales)}[self.kind]
        if len(parts) != want:
            raise VqtkError(f"{len(parts)} index grids do not make {self.describe()} (expected {want})")
        if self.kind == GRID:
            return parts[0]
        if self.kind == DEPTH:
            return torch.stack(parts, dim=-1)
        shapes = [tuple(p.shape[1:]) for p in parts]
        if shapes != list(self.scales):
            raise VqtkError(f"index grids of sizes {shapes} do not make {self.describe()}")
        return torch.cat([p.flatten(1) for p in parts], dim=1)

    def per_codebook(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices as ``(Q, N)`` int64: one row per codebook (``depth``), else one row of all indices.

        The transpose of :func:`vqtk.measure.codes_by_codebook` (which code statistics use);
        raises ``ValueError`` for indices of another layout's shape.
        """
        return codes_by_codebook(indices, self.depth).T

    def to_metadata(self) -> dict:
        """``{"kind": ..., "depth": Q, "scales": [[h, w], ...]}``: plain values for checkpoint metadata."""
        return {"kind": self.kind, "depth": self.depth, "scales": [list(s) for s in self.scales]}

    @classmethod
    def from_metadata(cls, data: dict) -> TokenLayout:
        """Inverse of :meth:`to_metadata`."""
        return cls(data["kind"], depth=int(data.get("depth", 1)), scales=data.get("scales", ()))


def check_layout_supported(layout: TokenLayout, supported: Sequence[str], prior_name: str,
                           quantizer_name: str) -> None:
    """Raise the recipe error naming both components when a prior does not model ``layout``."""
    if layout.kind not in supported:
        kinds = ", ".join(supported)
        raise VqtkError(
            f"prior: {prior_name} models the {kinds} layout{'s' if len(supported) > 1 else ''}, but "
            f"model.quantizer {quantizer_name} lays out its codes as {layout.describe()} "
            f"(layout {layout.kind!r}); choose a prior that models {layout.kind!r} "
            f"(`vqtk plugins` lists each prior's layouts)"
        )


__all__ = ["DEPTH", "GRID", "LAYOUT_KINDS", "SCALES", "TokenLayout", "check_layout_supported"]
