"""x-transformers' classes, imported without the deprecation warning its import prints.

x-transformers decorates a helper with ``torch.jit.script`` at import time, which
recent PyTorch answers with a ``FutureWarning`` that means nothing to a vqtk user
(the helper is never scripted on our path).
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from x_transformers import Decoder, Encoder, TransformerWrapper
    from x_transformers.x_transformers import Attention, FeedForward, LayerNorm, Residual

__all__ = ["Attention", "Decoder", "Encoder", "FeedForward", "LayerNorm", "Residual", "TransformerWrapper"]
