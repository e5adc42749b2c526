"""Capabilities a component declares by subclassing, so the core asks ``isinstance`` instead of sniffing.

- :class:`RestartableQuantizer`: a quantizer whose codes can be set from
  outside (the codebook-health tracker restarts dead codes with it).
- :class:`PerceptualDistance`: a component (the built-in ``lpips`` loss) that
  measures a per-image perceptual distance; ``vqtk eval`` reports it as LPIPS.

Like :class:`~vqtk.interfaces.StepAware`, each is a mixin next to the kind's base class::

    class MyVQ(Quantizer, RestartableQuantizer): ...
    class MyPerceptualLoss(Loss, PerceptualDistance): ...
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Optional

import torch


class RestartableQuantizer(abc.ABC):
    """A quantizer whose codes can be set from outside (dead-code restarts during training).

    :meth:`restart_codes` sets codes ``code_ids`` (``(n,)`` int64) of the
    codebook to ``vectors`` (``(n, dim)`` float32), given in the quantizer's
    *input* space: latents exactly as :meth:`Quantizer.quantize` receives
    them, one per position. The quantizer maps them into its code space
    itself (projection, l2 normalisation...) and resets any per-code
    statistics (EMA counts). Quantizers with several codebooks
    (``num_codebooks > 1``) are called with ``codebook=q`` (keyword), the
    codebook to change; with one codebook the keyword is not passed.

    :meth:`supports_restarts` lets one class decide per instance (say, one
    codebook yes, residual layers no); the tracker restarts codes only when it
    returns ``True``.
    """

    def supports_restarts(self) -> bool:
        """Whether this instance can restart codes (default ``True``)."""
        return True

    @abc.abstractmethod
    def restart_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Set codes ``code_ids`` to latents ``vectors`` (see the class docstring)."""


class PerceptualDistance(abc.ABC):
    """A per-image perceptual distance between images in ``[-1, 1]`` (LPIPS and the like).

    ``vqtk eval`` finds it among the recipe's losses (else among the registered
    losses) by this class, builds it with :meth:`evaluation_options` and
    reports :meth:`distance` averaged over the evaluation set as ``lpips``.
    The component must be registered by its class (or a ``functools.partial``
    of it), so evaluation can ask the class before building it.
    """

    #: how the distance is computed, quoted in evaluation reports (e.g. ``"lpips package, v0.1"``)
    distance_implementation: ClassVar[str] = ""

    @abc.abstractmethod
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance ``(B,)`` of each image of ``a`` to the same image of ``b`` (``(B, C, H, W)``, in ``[-1, 1]``)."""

    @classmethod
    def evaluation_options(cls, config: Any, *, weights: Optional[str] = None) -> Any:
        """The structured config to build the component with when it serves as an evaluation metric.

        ``config`` is the recipe's (or the default) config of this component;
        ``weights`` a weight file the user named (``vqtk eval --lpips-weights``).
        The default returns ``config`` unchanged and ignores ``weights``;
        components with pretrained networks override it to insist on the
        pretrained weights (a metric is never computed with random weights).

        Raises:
            ValueError: the options cannot make a meaningful metric.
        """
        return config
