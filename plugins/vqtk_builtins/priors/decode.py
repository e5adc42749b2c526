"""A focused decode loop over the GPT prior's own x-transformers layers, with a preallocated key/value cache.

x-transformers' cached forward is generic: per token it rebuilds rotary tables
for the whole sequence, re-rotates every cached key (it caches them unrotated),
grows the cache with ``torch.cat`` and walks the many optional features of its
layers. :class:`KVDecoder` runs the same weights the plain way, with as few
PyTorch calls per token as the layers allow (at a batch of a few sequences each
call costs more than its arithmetic): one fused q/k/v matmul, the rotary
rotation of q, k (and, as the identity, v) in one complex multiply with a table
computed once, keys and values written into a cache of the full sequence length
allocated once in one copy, attention by ``scaled_dot_product_attention`` over
the filled part, the residual additions folded into the output matmuls
(``addmm``), and rows kept 2-d. It supports exactly the layer configuration
:class:`~vqtk_builtins.priors.gpt.GPTPrior` and the ``rq`` prior's spatial
transformer build (pre-norm attention / feed-forward blocks, rotary or learned
absolute positions) and refuses any other.

:meth:`KVDecoder.step_static` is the fixed-shape variant for ``torch.compile``
(CUDA graphs): the position is a tensor, attention spans the whole cache under
a mask, nothing depends on host values. It gives the same logits as
:meth:`KVDecoder.step` (tested on CPU; compiling it on CUDA is untested here).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn


class _Attention(NamedTuple):
    """One attention block's weights; matrices transposed to ``(in, out)`` for ``rows @ weight``."""

    norm: torch.Tensor  # pre-norm gain (dim,)
    qkv: torch.Tensor  # fused q/k/v projection (dim, 3 * heads * dim_head)
    out: torch.Tensor  # output projection (heads * dim_head, dim), no bias


class _FeedForward(NamedTuple):
    """One feed-forward block's weights (matrices ``(in, out)``): ``gelu(norm(x) @ w1 + b1) @ w2 + b2``."""

    norm: torch.Tensor
    w1: torch.Tensor
    b1: Optional[torch.Tensor]
    w2: torch.Tensor
    b2: Optional[torch.Tensor]


def _affine(x: torch.Tensor, weight_t: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.linear`` on rows ``x (n, in)`` with the weight given transposed ``(in, out)``: one call, not three."""
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def _rotation_table(freqs: torch.Tensor, dim_head: int) -> torch.Tensor:
    """x-transformers' partial rotary as complex multipliers ``(length, 3, 1, dim_head // 2)``.

    ``freqs (length, rot)`` are x-transformers' angles, one per member of each
    interleaved pair (``t[2i], t[2i + 1]`` turn by ``freqs[:, 2i]``), which is the
    complex product ``(t[2i] + i t[2i + 1]) * exp(i freqs[:, 2i])``. Pairs past
    ``rot`` and the values (the third slot: q, k, v) are multiplied by 1.
    """
    length, rot = freqs.shape
    angles = torch.zeros(length, 3, 1, dim_head // 2, dtype=freqs.dtype, device=freqs.device)
    angles[:, :2, 0, : rot // 2] = freqs[:, None, 0::2]
    return torch.polar(torch.ones_like(angles), angles)


class KVDecoder:
    """Cached next-token logits of a ``TransformerWrapper`` decoder for ``batch`` sequences up to ``length`` tokens.

    Built per sampling call (eval mode, weights as they are then): the q/k/v
    weights are concatenated, the rotary rotations tabulated and the cache
    ``(attention layers, 2, batch, heads, length, dim_head)`` allocated once.
    :meth:`prefill` runs a context from position 0, :meth:`step` appends one
    token; both return the last position's logits ``(batch, logits_dim)``.
    """

    def __init__(self, net: nn.Module, *, batch: int, length: int):
        from vqtk_builtins.priors.xtransformers import Attention, FeedForward, LayerNorm, Residual

        layers = net.attn_layers
        ok = layers.pre_norm and not getattr(net, "num_memory_tokens", 0) and not getattr(net, "l2norm_embed", False) \
            and all(m is None for m in (*layers.layer_integrators, *layers.skip_combines)) \
            and isinstance(layers.final_norm, LayerNorm) \
            and all(type(getattr(net, name, nn.Identity())).__name__ == "Identity"
                    for name in ("post_emb_norm", "project_emb"))
        self.blocks: list[_Attention | _FeedForward] = []
        heads = set()
        for (pre, *post), block, residual in layers.layers:
            ok = ok and all(p is None for p in post) and isinstance(pre, LayerNorm) and type(residual) is Residual \
                and residual.residual_scale is None and residual.scale_residual_constant == 1
            gain = pre.gamma + float(pre.unit_offset)
            if isinstance(block, Attention):
                ok = ok and not block.qk_norm and block.kv_heads == block.heads and block.to_v_gate is None \
                    and block.rotate_num_heads == block.heads and isinstance(block.to_out, nn.Linear) \
                    and block.to_out.bias is None
                qkv = torch.cat((block.to_q.weight, block.to_k.weight, block.to_v.weight))
                self.blocks.append(_Attention(gain, qkv.t(), block.to_out.weight.t()))
                heads.add(block.heads)
            elif isinstance(block, FeedForward):
                ff = block.ff
                ok = ok and len(ff) == 3 and len(ff[0]) == 2 and isinstance(ff[0][1], nn.GELU) \
                    and ff[0][1].approximate == "none" and isinstance(ff[0][0], nn.Linear) \
                    and isinstance(ff[2], nn.Linear)
                up, down = ff[0][0], ff[2]
                self.blocks.append(_FeedForward(gain, up.weight.t(), up.bias, down.weight.t(), down.bias))
            else:
                ok = False
        ok = ok and len(heads) == 1
        if not ok:
            raise NotImplementedError("KVDecoder supports the GPT prior's x-transformers layout only")
        final = layers.final_norm
        self.final_gain = final.gamma + float(final.unit_offset)
        self.net, self.batch, self.length = net, batch, length
        self.heads = heads.pop()
        first = next(b for b in self.blocks if isinstance(b, _Attention))
        self.dim_head = first.qkv.shape[1] // 3 // self.heads
        device, dtype = first.qkv.device, first.qkv.dtype
        attention_layers = sum(isinstance(b, _Attention) for b in self.blocks)
        self.cache = torch.zeros(attention_layers, 2, batch, self.heads, length, self.dim_head,
                                 device=device, dtype=dtype)
        self._layer_caches = list(self.cache)  # (2, batch, heads, length, dim_head) per attention layer
        self.positions = torch.arange(length, device=device)
        self.rotation = None  # (length, 3, 1, dim_head // 2) complex
        if layers.rotary_pos_emb is not None:
            freqs, scale = layers.rotary_pos_emb(self.positions)
            if torch.is_tensor(scale):
                raise NotImplementedError("KVDecoder does not support xpos rotary scaling")
            table = _rotation_table(freqs[0].to("cpu", torch.float64), self.dim_head)  # in float64 on any device
            self.rotation = table.to(device, torch.complex128 if dtype == torch.float64 else torch.complex64)
        pos_emb = getattr(net, "pos_emb", None)
        self.pos_table = pos_emb(self.positions[None]) if hasattr(pos_emb, "emb") else None
        token_emb = net.token_emb
        plain = type(token_emb).__name__ == "TokenEmbedding" and isinstance(getattr(token_emb, "emb", None),
                                                                            nn.Embedding)
        self.embedding = token_emb.emb.weight if plain else None
        self.to_logits = net.to_logits

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return F.embedding(tokens, self.embedding)
        return self.net.token_emb(tokens)

    @staticmethod
    def _rotate(qkv: torch.Tensor, rotation: Optional[torch.Tensor]) -> torch.Tensor:
        """``qkv (..., 3, heads, dim_head)`` with q and k rotated by ``rotation`` (broadcast over the leading dims)."""
        if rotation is None:
            return qkv
        pairs = qkv.unflatten(-1, (-1, 2))
        if qkv.dtype in (torch.float32, torch.float64):
            return torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2)
        return torch.view_as_real(torch.view_as_complex(pairs.float()) * rotation).flatten(-2).to(qkv.dtype)

    @staticmethod
    def _feed_forward(x: torch.Tensor, block: _FeedForward) -> torch.Tensor:
        """The block with its residual on rows ``x (n, dim)``."""
        h = F.gelu(_affine(F.layer_norm(x, x.shape[-1:], block.norm), block.w1, block.b1))
        return _affine(h, block.w2, block.b2).add_(x)

    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits after ``tokens (batch, n)`` placed at positions ``0..n-1`` (the cache then holds them)."""
        b, n = tokens.shape[:2]
        x = self._embed(tokens)
        if self.pos_table is not None:
            x = x + self.pos_table[:n]
        dim = x.shape[-1]
        x = x.reshape(b * n, dim)  # rows; attention alone needs the sequences
        rotation = None if self.rotation is None else self.rotation[:n]
        a = 0
        for block in self.blocks:
            if isinstance(block, _FeedForward):
                x = self._feed_forward(x, block)
                continue
            qkv = torch.mm(F.layer_norm(x, (dim,), block.norm), block.qkv).view(b, n, 3, self.heads, -1)
            q, k, v = self._rotate(qkv, rotation).permute(2, 0, 3, 1, 4)  # (b, heads, n, d) each
            cache = self._layer_caches[a]
            cache[0, :, :, :n] = k
            cache[1, :, :, :n] = v
            y = F.scaled_dot_product_attention(q, k, v, is_causal=n > 1)
            x = torch.addmm(x, y.transpose(1, 2).reshape(b * n, -1), block.out)
            a += 1
        return self.to_logits(F.layer_norm(x.view(b, n, dim)[:, -1], (dim,), self.final_gain))

    def step(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits after ``token (batch, 1)`` at position ``pos`` (the cache holds positions ``0..pos-1``)."""
        x = self._embed(token.reshape(token.shape[0], *token.shape[2:]))  # (b, dim): one row per sequence
        if self.pos_table is not None:
            x = x + self.pos_table[pos]
        rotation = None if self.rotation is None else self.rotation[pos]
        return self._step(x, rotation, pos, None)

    def step_static(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """:meth:`step` with ``pos`` a 0-d long tensor: fixed shapes, no host sync (for ``torch.compile``).

        Attention spans the whole cache with the positions after ``pos`` masked out.
        """
        pos = pos.reshape(1)
        x = self._embed(token.reshape(token.shape[0], *token.shape[2:]))
        if self.pos_table is not None:
            x = x + self.pos_table.index_select(0, pos)
        rotation = None if self.rotation is None else self.rotation.index_select(0, pos)[0]
        return self._step(x, rotation, pos, (self.positions <= pos)[None, None, None])

    def _step(self, x: torch.Tensor, rotation, pos, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """One position's logits from its embedded rows ``x (batch, dim)``.

        ``pos`` an int: attention over the cache up to it; a 1-element tensor
        (``mask`` given): over the whole cache under ``mask``.
        """
        b, dim = x.shape
        a = 0
        for block in self.blocks:
            if isinstance(block, _FeedForward):
                x = self._feed_forward(x, block)
                continue
            qkv = self._rotate(torch.mm(F.layer_norm(x, (dim,), block.norm), block.qkv).view(b, 3, self.heads, -1),
                               rotation)
            q = qkv[:, 0, :, None]  # (b, heads, 1, d)
            cache = self._layer_caches[a]
            if mask is None:
                cache[:, :, :, pos] = qkv[:, 1:].transpose(0, 1)
                filled = cache[:, :, :, : pos + 1]
                y = F.scaled_dot_product_attention(q, filled[0], filled[1])
            else:
                cache.index_copy_(3, pos, qkv[:, 1:, :, None].transpose(0, 1))
                y = F.scaled_dot_product_attention(q, cache[0], cache[1], attn_mask=mask)
            x = torch.addmm(x, y.view(b, -1), block.out)  # the residual folded into the output projection
            a += 1
        return self.to_logits(F.layer_norm(x, (dim,), self.final_gain))
