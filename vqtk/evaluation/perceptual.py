"""LPIPS for evaluation: the recipe's (or a registered) loss that declares :class:`PerceptualDistance`.

Evaluation names no component: it takes the recipe's first loss whose class
subclasses :class:`vqtk.interfaces.PerceptualDistance`, else the first such
registered loss (by name) with its default options, and builds it with the
options the class gives for evaluation (:meth:`PerceptualDistance.evaluation_options`:
the built-in ``lpips`` insists on its pretrained backbone).
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch

from vqtk.errors import MissingFileError, VqtkError
from vqtk.evaluation.metrics import Unavailable
from vqtk.interfaces import PerceptualDistance
from vqtk.registry import default_registry


@attrs.define(eq=False)
class LPIPSMetric:
    """A :class:`PerceptualDistance` loss serving as the report's ``lpips`` metric.

    ``distance(real, fake)`` takes images in ``[-1, 1]`` and returns ``(B,)``.
    ``implementation`` and ``config`` (the options used, as plain values) go into the report.
    """

    loss: Any
    plugin: str
    config: dict[str, Any]
    implementation: str = ""

    def distance(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return self.loss.distance(real, fake).detach().float().reshape(-1)

    def to(self, device: torch.device) -> "LPIPSMetric":
        self.loss.to(device)
        return self


def perceptual_class(spec: Any) -> Optional[type]:
    """The :class:`PerceptualDistance` class a registered component builds, or ``None``.

    Only components registered by their class (or a ``functools.partial`` of
    it) can be asked before they are built.
    """
    cls = spec.component_class
    return cls if cls is not None and issubclass(cls, PerceptualDistance) else None


def _find(recipe: Any, registry: Any) -> Optional[tuple[Any, Any]]:
    """``(spec, config)`` of the recipe's perceptual loss, else of the first registered one (defaults)."""
    registered = set(registry.names("loss"))
    if recipe is not None:
        for ref in recipe.loss.values():
            if ref.type in registered and perceptual_class(registry.get("loss", ref.type)) is not None:
                return registry.get("loss", ref.type), ref.config
    for spec in registry.components("loss"):
        if perceptual_class(spec) is not None:
            return spec, None
    return None


def build_lpips_metric(
    *, recipe: Any = None, registry: Any = None, backbone_weights: Optional[str] = None
) -> LPIPSMetric | Unavailable:
    """The perceptual-distance loss as a metric, or :class:`Unavailable` saying why not.

    The options come from the recipe's own perceptual loss when it has one,
    else the component's defaults, passed through the class's
    :meth:`~vqtk.interfaces.PerceptualDistance.evaluation_options` with
    ``backbone_weights`` (a weight file the user named).
    """
    registry = registry or default_registry()
    found = _find(recipe, registry)
    if found is None:
        return Unavailable("no registered loss component implements vqtk.interfaces.PerceptualDistance "
                           "(the built-in plugin provides one)")
    spec, config = found
    cls = perceptual_class(spec)
    try:
        config = cls.evaluation_options(config if config is not None else spec.config(), weights=backbone_weights)
        loss = spec.create(config)
    except MissingFileError as exc:
        return Unavailable(str(exc))
    except (VqtkError, ValueError, TypeError) as exc:
        return Unavailable(f"the {spec.name} loss could not be built: {exc}")
    implementation = f"loss component {spec.name!r} of plugin {spec.plugin!r}"
    if cls.distance_implementation:
        implementation += f" ({cls.distance_implementation})"
    return LPIPSMetric(loss=loss, plugin=spec.plugin, config=_plain(attrs.asdict(config)),
                       implementation=implementation)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in d.items()}
