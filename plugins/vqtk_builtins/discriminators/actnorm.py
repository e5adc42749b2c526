"""ActNorm: per-channel affine normalisation initialised from the first batch (Glow, taming)."""

from __future__ import annotations

import torch
from torch import nn


class ActNorm(nn.Module):
    """``scale * (x + loc)`` per channel, with ``loc``/``scale`` set from the first training batch.

    On the first forward pass in training mode, ``loc`` and ``scale`` are set so
    that the batch's output has zero mean and unit standard deviation per
    channel; afterwards they are ordinary learned parameters. Whether that
    initialisation happened is the ``initialized`` buffer (``uint8``, as in
    taming-transformers), so it travels with ``state_dict``: a loaded module is
    not re-initialised. Parameter and buffer names match taming's ``ActNorm``.
    """

    def __init__(self, *, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        # host-side mirror of the buffer, so the check costs no device sync once set
        self._known_initialized = False

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``loc`` and ``scale`` from the per-channel mean and std of ``x`` ``(B, C, H, W)``."""
        flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).float()
        mean = flat.mean(dim=1)
        std = flat.std(dim=1)
        self.loc.copy_(-mean.view(1, -1, 1, 1))
        self.scale.copy_((1.0 / (std + 1e-6)).view(1, -1, 1, 1))
        self.initialized.fill_(1)
        self._known_initialized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` ``(B, C, H, W)``; initialises from it on the first training call."""
        if self.training and not self._known_initialized:
            if int(self.initialized.item()) == 0:
                self.initialize(x)
            self._known_initialized = True
        return self.scale * (x + self.loc)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._known_initialized = False  # re-read the loaded buffer on the next call

    def extra_repr(self) -> str:
        return f"{self.num_features}"
