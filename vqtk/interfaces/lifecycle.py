"""Optional capabilities any component can declare by subclassing (no attribute sniffing)."""

from __future__ import annotations

import abc

from torch import nn


class StepAware(abc.ABC):
    """A component that follows the training clock (temperature schedules, loss ramps, warm-ups).

    The trainer calls :meth:`on_step` once per optimizer step, before that
    step's forward passes (so every micro-batch of a gradient-accumulation step
    sees the same step), on every encoder, quantizer, decoder, discriminator,
    loss and prior that subclasses :class:`StepAware`, including modules nested
    inside them. After ``--resume`` the first call carries the resumed step, so
    a schedule computed from ``step`` resumes exactly; keep anything that cannot
    be recomputed from the step in buffers or ``get_extra_state``, which
    checkpoints save.

    Example::

        class GumbelQuantizer(Quantizer, StepAware):
            def on_step(self, step, total_steps):
                self.temperature = max(self.min_temperature, math.exp(-self.anneal_rate * step))
    """

    @abc.abstractmethod
    def on_step(self, step: int, total_steps: int) -> None:
        """Called with the 0-based global optimizer ``step`` about to run, of ``total_steps``."""


def step_aware_parts(*modules: object) -> list[StepAware]:
    """Every :class:`StepAware` among ``modules`` and their submodules, each once, in order."""
    seen: set[int] = set()
    found: list[StepAware] = []
    for module in modules:
        parts = module.modules() if isinstance(module, nn.Module) else [module]
        for part in parts:
            if isinstance(part, StepAware) and id(part) not in seen:
                seen.add(id(part))
                found.append(part)
    return found
