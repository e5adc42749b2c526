"""Built-in stage-2 priors over code-index grids, both backed by x-transformers.

``gpt`` is an autoregressive decoder over the raster-ordered grid (KV-cached
sampling, sliding-window sampling of grids larger than trained); ``maskgit`` is
a bidirectional masked prior decoded iteratively (MaskGIT). ``sampling`` holds
the shared top-k / top-p filtering, classifier-free guidance mixing and the
sliding-window helpers; ``conditioning`` the class-token vocabulary and the
priors' shared base class; ``checks`` the input checks; ``schedule`` the
MaskGIT masking schedules; ``builders`` the recipe configs. The classes are
imported on first use, so importing this package (as ``vqtk list`` does through
``builders``) does not import torch modules it does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GPTPrior": "gpt",
    "MaskGITPrior": "maskgit",
    "PriorInputError": "checks",
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
