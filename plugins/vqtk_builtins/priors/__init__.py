"""Built-in stage-2 priors over a tokenizer's codes, all backed by x-transformers.

``gpt`` is an autoregressive decoder over the raster-ordered grid (KV-cached
sampling, sliding-window sampling of grids larger than trained); ``maskgit`` is
a bidirectional masked prior decoded iteratively (MaskGIT); ``rq`` models
residual codes (the depth layout) with a spatial and a depth transformer
(RQ-Transformer); ``var`` predicts multi-scale codes scale by scale (VAR), with
``var_attention`` for the block-causal mask and the cache across scales. ``sampling`` holds
the shared top-k / top-p filtering, classifier-free guidance mixing and the
sliding-window helpers; ``conditioning`` the class-token vocabulary and the
priors' shared base class (whose arguments both priors take) and their
cross-field recipe check; ``checks`` the input checks; ``schedule`` the
MaskGIT masking schedules. Each prior's keyword-only signature is its recipe
schema (``codebook_size`` and ``grid_size`` are provided by the tokenizer, so
recipes may leave them out). The classes are imported on first use, and
x-transformers only when a prior is built, so registering them (as ``vqtk list``
does) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GPTPrior": "gpt",
    "MaskGITPrior": "maskgit",
    "RQPrior": "rq",
    "PriorInputError": "checks",
    "VARPrior": "var",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_components(register) -> None:
    """Register the built-in priors under kind ``"prior"``."""
    from vqtk_builtins.priors.conditioning import check_prior
    from vqtk_builtins.priors.gpt import GPTPrior
    from vqtk_builtins.priors.maskgit import MaskGITPrior
    from vqtk_builtins.priors.rq import RQPrior
    from vqtk_builtins.priors.var import VARPrior, check_var_prior

    register("prior", "gpt", GPTPrior, check=check_prior,
             doc="autoregressive transformer over raster-ordered codes: KV cache, sliding window, class guidance")
    register("prior", "maskgit", MaskGITPrior, check=check_prior,
             doc="bidirectional masked transformer, MaskGIT iterative decoding (cosine/linear schedule)")
    register("prior", "var", VARPrior, check=check_var_prior,
             doc="next-scale prediction over multi-scale codes (VAR): block-causal attention, KV cache "
                 "across scales, class guidance")
    register("prior", "rq", RQPrior, check=check_prior,
             doc="residual-depth transformer (RQ-Transformer) over (h, w, Q) codes: spatial + depth transformers, "
                 "KV cache, class guidance")
