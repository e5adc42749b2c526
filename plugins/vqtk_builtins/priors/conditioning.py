"""Class conditioning by a prefix token: where class, start and null tokens sit in the vocabulary."""

from __future__ import annotations

from typing import Optional

import torch


class ClassTokens:
    """Token ids of the conditioning prefix, placed after the ids a prior already uses.

    ``first_id`` is the first free id. With ``num_classes > 0`` class ``c`` is
    token ``first_id + c`` and, when ``label_dropout > 0``, the null class
    (classifier-free guidance) is ``first_id + num_classes``. Unconditional
    priors get a single learned start token ``first_id`` if ``always_prefix``
    (autoregressive priors need one), else no prefix at all.
    """

    def __init__(self, *, first_id: int, num_classes: int, label_dropout: float, always_prefix: bool):
        self.first_id = first_id
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.has_prefix = num_classes > 0 or always_prefix
        self.has_null = num_classes > 0 and label_dropout > 0
        self.null_id = first_id + num_classes if self.has_null else None
        #: how many vocabulary ids the prefix needs
        self.num_tokens = (max(num_classes, 1) if self.has_prefix else 0) + int(self.has_null)

    def prefix(self, labels: Optional[torch.Tensor], batch_size: int, device: torch.device) -> Optional[torch.Tensor]:
        """The ``(B, 1)`` prefix for ``labels`` (checked beforehand), or ``None`` without one."""
        if not self.has_prefix:
            return None
        if labels is None:
            return torch.full((batch_size, 1), self.first_id, dtype=torch.long, device=device)
        return (labels.to(device=device, dtype=torch.long) + self.first_id)[:, None]

    def null_prefix(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """The ``(B, 1)`` null-class prefix (only when the prior has one)."""
        assert self.null_id is not None
        return torch.full((batch_size, 1), self.null_id, dtype=torch.long, device=device)

    def drop(self, prefix: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Training-time label dropout: each class token becomes the null class with probability ``label_dropout``."""
        if prefix is None or not self.has_null:
            return prefix
        dropped = torch.rand(prefix.shape, device=prefix.device) < self.label_dropout
        return prefix.masked_fill(dropped, self.null_id)
