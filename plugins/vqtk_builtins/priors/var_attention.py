"""Block-causal attention over scales for the ``var`` prior: the mask, and a key/value cache across scales.

VAR (Tian et al. 2024) predicts a whole scale at once: every token of scale ``k`` attends
to every token of the coarser scales and of scale ``k`` itself, never to a finer one.
Training runs the x-transformers encoder once over all scales with that block-causal
mask (:func:`block_causal_mask`, VAR's ``attn_bias_for_masking``).

x-transformers' own key/value cache (``AttentionLayers(..., cache=...)``) is for causal
decoders that append one token at a time; it refuses an attention mask. A VAR step appends
a whole scale whose tokens attend to each other and to everything cached, which needs no
mask at all. :class:`ScaleCache` therefore walks the encoder's own modules layer by layer
(adaptive norms, attention, feed-forward, adaptive layer scales, residuals: x-transformers'
code, called as the encoder's forward calls it) and hands each attention layer its cached
keys and values through the ``cache`` argument x-transformers' ``Attention`` takes. It
supports exactly the encoder :class:`~vqtk_builtins.priors.var.VARPrior` builds and refuses
any other.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def scale_of_each_token(scales: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``(L,)``: the index of the scale each token of the flat sequence belongs to."""
    return torch.cat([torch.full((h * w,), k, dtype=torch.long) for k, (h, w) in enumerate(scales)])


def block_causal_mask(scales: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``(L, L)`` boolean, ``True`` where query token ``i`` may attend to key token ``j``:
    when ``j``'s scale is not finer than ``i``'s."""
    level = scale_of_each_token(scales)
    return level[:, None] >= level[None, :]


class ScaleCache:
    """Hidden states of one scale after another through an x-transformers ``Encoder``, keys and values cached.

    Built per sampling call. Each call takes the new scale's inputs ``(batch, n, dim)`` and
    the conditioning ``(batch, dim)``, runs them through every layer attending to all keys
    cached so far plus their own, appends their keys and values, and returns the final-norm
    output ``(batch, n, dim)``: what the encoder's forward over the whole sequence so far
    under :func:`block_causal_mask` gives at those positions.
    """

    def __init__(self, encoder: nn.Module):
        from x_transformers.attend import Intermediates

        from vqtk_builtins.priors.xtransformers import Attention, FeedForward

        plain = not any(getattr(encoder, flag, False) for flag in (
            "causal", "residual_attn", "add_value_residual", "softclamp_output"))
        ok = plain and encoder.pre_norm and encoder.need_condition and encoder.rotary_pos_emb is None \
            and getattr(encoder, "rel_pos", None) is None and getattr(encoder, "num_residual_streams", 1) == 1 \
            and all(m is None for m in (*encoder.layer_integrators, *encoder.skip_combines)) \
            and all(p == 0 for p in encoder.layer_dropouts) \
            and list(encoder.layers_execute_order) == list(range(len(encoder.layers)))
        for (pre, *post), block, _ in encoder.layers:
            ok = ok and pre is not None and all(p is None for p in post) \
                and isinstance(getattr(block, "fn", None), (Attention, FeedForward))
        if not ok:
            raise NotImplementedError("ScaleCache supports the var prior's x-transformers encoder only")
        self.encoder = encoder
        self.make_cache = Intermediates
        self.kv: list = [None] * sum(isinstance(b.fn, Attention) for _, b, _ in encoder.layers)
        self.attention = [isinstance(b.fn, Attention) for _, b, _ in encoder.layers]

    def __call__(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        condition = enc.adaptive_mlp(condition[:, None])
        a = 0
        for ((pre, _, _), block, residual), is_attention in zip(enc.layers, self.attention):
            inner_residual = x
            h = pre(x, condition=condition)
            if is_attention:
                cache = None if self.kv[a] is None else self.make_cache(cached_kv=self.kv[a])
                out, inter = block(h, condition=condition, cache=cache, return_intermediates=True)
                self.kv[a] = inter.cached_kv
                a += 1
            else:
                out = block(h, condition=condition)
            x = residual(out, inner_residual)
        return enc.final_norm(x, condition=condition)
