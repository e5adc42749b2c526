"""Built-in quantizers, each a thin :class:`vqtk.interfaces.Quantizer` over vector-quantize-pytorch.

One module per method (``vq``, ``ema_vq``, ``residual``, ``fsq``, ``lfq``,
``simvq``); ``layout`` converts between vqtk's ``(B, D, h, w)`` grids and the
library's ``(B, h*w, D)`` tokens; ``builders`` holds the recipe configs. The
classes below are imported on first use, so importing this package (as
``vqtk list`` does through ``builders``) does not import the library.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VectorQuantizer": "vq",
    "EMAVectorQuantizer": "ema_vq",
    "ResidualVectorQuantizer": "residual",
    "FiniteScalarQuantizer": "fsq",
    "LookupFreeQuantizer": "lfq",
    "SimVectorQuantizer": "simvq",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_components(register) -> None:
    """Register this family's components (transitional: still through builders.py)."""
    from . import builders

    builders.register_components(register)
