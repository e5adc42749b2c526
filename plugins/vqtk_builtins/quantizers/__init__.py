"""Built-in quantizers: each a :class:`vqtk.interfaces.Quantizer` whose keyword-only signature is its recipe schema.

One module per method: ``vq`` (``vq``, and ``factorized``, the same class with
other defaults), ``ema_vq`` (``ema_vq``, and ``residual``, the same class with
residual layers), ``fsq``, ``lfq``, ``simvq`` (thin wrappers over
vector-quantize-pytorch, which they import when built, so registering them, as
``vqtk list`` does, stays fast), ``gumbel``, ``ibq`` and ``msvq`` (VAR's multi-scale residual quantizer, with its
``phi`` convolutions in ``msvq_phi``; plain PyTorch).
``layout`` converts between vqtk's ``(B, D, h, w)`` grids and the library's
``(B, h*w, D)`` tokens; ``entropy`` is the LlamaGen / IBQ entropy penalty.
The names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VectorQuantizer": "vq",
    "FactorizedQuantizer": "vq",
    "EMAVectorQuantizer": "ema_vq",
    "ResidualVectorQuantizer": "ema_vq",
    "FiniteScalarQuantizer": "fsq",
    "LookupFreeQuantizer": "lfq",
    "SimVectorQuantizer": "simvq",
    "GumbelQuantizer": "gumbel",
    "IndexBackpropQuantizer": "ibq",
    "MultiScaleQuantizer": "msvq",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_components(register) -> None:
    """Register every built-in quantizer under kind ``"quantizer"``."""
    from vqtk_builtins.quantizers import ema_vq, fsq, gumbel, ibq, lfq, msvq, simvq, vq

    register("quantizer", "vq", vq.VectorQuantizer, check=vq.check_vq)
    register("quantizer", "factorized", vq.FactorizedQuantizer, check=vq.check_vq,
             doc="LlamaGen-style quantizer: l2-normalised codes in a low-dimensional factorised codebook.")
    register("quantizer", "ema_vq", ema_vq.EMAVectorQuantizer, check=vq.check_codebook_dim)
    register("quantizer", "residual", ema_vq.ResidualVectorQuantizer, check=vq.check_codebook_dim,
             doc="Residual VQ: num_quantizers EMA codebooks on successive residuals; indices (B, h, w, Q).")
    register("quantizer", "fsq", fsq.FiniteScalarQuantizer, check=fsq.check_fsq)
    register("quantizer", "lfq", lfq.LookupFreeQuantizer, check=lfq.check_lfq)
    register("quantizer", "simvq", simvq.SimVectorQuantizer, check=vq.check_codebook_dim)
    register("quantizer", "gumbel", gumbel.GumbelQuantizer, check=gumbel.check_gumbel)
    register("quantizer", "ibq", ibq.IndexBackpropQuantizer, check=vq.check_codebook_dim)
    register("quantizer", "msvq", msvq.MultiScaleQuantizer, check=msvq.check_msvq)
