"""A focused decode loop over the GPT prior's own x-transformers layers, with a preallocated key/value cache.

x-transformers' cached forward is generic: per token it rebuilds rotary tables
for the whole sequence, re-rotates every cached key (it caches them unrotated),
grows the cache with ``torch.cat`` and walks the many optional features of its
layers. :class:`KVDecoder` runs the same weights the plain way: one fused
q/k/v matmul, rotary from tables computed once, keys and values written into a
cache of the full sequence length allocated once. It supports exactly the
layer configuration :class:`~vqtk_builtins.priors.gpt.GPTPrior` builds (pre-norm
attention / feed-forward blocks, rotary or learned absolute positions) and
refuses any other.

:meth:`KVDecoder.step_static` is the fixed-shape variant for ``torch.compile``
(CUDA graphs): the position is a tensor, attention spans the whole cache under
a mask, nothing depends on host values. It gives the same logits as
:meth:`KVDecoder.step` (tested on CPU; compiling it on CUDA is untested here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _rotation_tables(freqs: torch.Tensor, dim_head: int) -> tuple[torch.Tensor, ...]:
    """x-transformers' partial rotary as tables: ``t * cos + t[..., perm] * sin`` rotates ``t`` at each position.

    ``freqs (length, rot)`` are x-transformers' angles (interleaved pairs); the
    full-width ``(length, d)`` cos / signed sin tables leave the dims past ``rot``
    as they are, and ``perm`` swaps the two members of each rotated pair.
    """
    cos, sin = freqs.cos(), freqs.sin()
    length, rot = cos.shape
    full_cos = torch.ones(length, dim_head, dtype=cos.dtype, device=cos.device)
    full_sin = torch.zeros_like(full_cos)
    full_cos[:, :rot] = cos
    full_sin[:, :rot] = sin * torch.tensor([-1.0, 1.0], dtype=sin.dtype, device=sin.device).repeat(rot // 2)
    perm = torch.arange(dim_head, device=cos.device)
    perm[:rot] = perm[:rot].view(-1, 2).flip(-1).reshape(-1)
    return full_cos, full_sin, perm


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
            and isinstance(layers.final_norm, LayerNorm)
        self.blocks = []  # (norm gain, attention: fused qkv weight or None, output / feed-forward linears)
        for (pre, *post), block, residual in layers.layers:
            ok = ok and all(p is None for p in post) and isinstance(pre, LayerNorm) and type(residual) is Residual \
                and residual.residual_scale is None and residual.scale_residual_constant == 1
            if isinstance(block, Attention):
                ok = ok and not block.qk_norm and block.kv_heads == block.heads and block.to_v_gate is None \
                    and block.rotate_num_heads == block.heads
                qkv = torch.cat((block.to_q.weight, block.to_k.weight, block.to_v.weight))
                self.blocks.append((pre.gamma + float(pre.unit_offset), qkv, (block.to_out,), block.heads))
            elif isinstance(block, FeedForward):
                ff = block.ff
                ok = ok and len(ff) == 3 and len(ff[0]) == 2 and isinstance(ff[0][1], nn.GELU)
                self.blocks.append((pre.gamma + float(pre.unit_offset), None, (ff[0][0], ff[0][1], ff[2]), 0))
            else:
                ok = False
        if not ok:
            raise NotImplementedError("KVDecoder supports the GPT prior's x-transformers layout only")
        final = layers.final_norm
        self.final_gain = final.gamma + float(final.unit_offset)
        self.net, self.batch, self.length = net, batch, length
        attention = [b for b in self.blocks if b[1] is not None]
        self.heads = attention[0][3]
        self.dim_head = attention[0][1].shape[0] // 3 // self.heads
        device, dtype = attention[0][1].device, attention[0][1].dtype
        self.cache = torch.zeros(len(attention), 2, batch, self.heads, length, self.dim_head,
                                 device=device, dtype=dtype)
        self.positions = torch.arange(length, device=device)
        self.tables = None
        if layers.rotary_pos_emb is not None:
            freqs, scale = layers.rotary_pos_emb(self.positions)
            if torch.is_tensor(scale):
                raise NotImplementedError("KVDecoder does not support xpos rotary scaling")
            self.tables = tuple(t.to(dtype) if t.is_floating_point() else t
                                for t in _rotation_tables(freqs[0], self.dim_head))
        pos_emb = getattr(net, "pos_emb", None)
        self.pos_table = pos_emb(self.positions[None]) if hasattr(pos_emb, "emb") else None

    def _run(self, x: torch.Tensor, attend) -> torch.Tensor:
        """Last position's logits of the blocks on ``x (batch, t, dim)``.

        ``attend(layer, qkv (batch, t, 3, heads, d))`` returns ``(batch, heads, t, d)``.
        """
        b, t, dim = x.shape
        a = 0
        for gain, qkv, linears, heads in self.blocks:
            h = F.layer_norm(x, (dim,), gain)
            if qkv is None:
                first, act, second = linears
                x = x + second(act(first(h)))
                continue
            y = attend(a, F.linear(h, qkv).view(b, t, 3, heads, -1))
            x = x + linears[0](y.transpose(1, 2).reshape(b, t, dim))
            a += 1
        return self.net.to_logits(F.layer_norm(x[:, -1], (dim,), self.final_gain))

    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits after ``tokens (batch, n)`` placed at positions ``0..n-1`` (the cache then holds them)."""
        n = tokens.shape[1]

        def attend(a, qkv):
            q, k, v = qkv.transpose(1, 3).unbind(2)  # (b, heads, n, d)
            if self.tables is not None:
                cos, sin, perm = self.tables
                q, k = (torch.addcmul(t * cos[:n], t[..., perm], sin[:n]) for t in (q, k))
            self.cache[a, 0, :, :, :n] = k
            self.cache[a, 1, :, :, :n] = v
            return F.scaled_dot_product_attention(q, k, v, is_causal=n > 1)

        x = self.net.token_emb(tokens)
        return self._run(x if self.pos_table is None else x + self.pos_table[:n], attend)

    def step(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits after ``token (batch, 1)`` at position ``pos`` (the cache holds positions ``0..pos-1``)."""
        return self._step(token, pos, pos + 1)

    def step_static(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """:meth:`step` with ``pos`` a 0-d long tensor: fixed shapes, no host sync (for ``torch.compile``).

        Attention spans the whole cache with the positions after ``pos`` masked out.
        """
        return self._step(token, pos.reshape(1), None)

    def _step(self, token: torch.Tensor, pos, end) -> torch.Tensor:
        """One token at ``pos``: an int attending to the cache up to ``end``, or (``end`` None) a 1-element tensor."""
        static = end is None
        mask = (self.positions <= pos)[None, None, None] if static else None  # (1, 1, 1, length)
        rotation = None
        if self.tables is not None:
            cos, sin, perm = self.tables
            rotation = (cos[pos], sin[pos], perm) if not static else \
                (cos.index_select(0, pos), sin.index_select(0, pos), perm)
        scale = self.dim_head ** -0.5

        def attend(a, qkv):
            qkv = qkv.view(self.batch, 3, self.heads, 1, self.dim_head)
            qk = qkv[:, :2]
            if rotation is not None:
                qk = torch.addcmul(qk * rotation[0], qk[..., rotation[2]], rotation[1])
            kv = torch.stack((qk[:, 1], qkv[:, 2]))  # (2, b, heads, 1, d)
            if static:
                self.cache[a].index_copy_(3, pos, kv)
                return F.scaled_dot_product_attention(qk[:, 0], self.cache[a, 0], self.cache[a, 1], attn_mask=mask)
            self.cache[a, :, :, :, pos : pos + 1] = kv
            keys, values = self.cache[a, :, :, :, :end].unbind(0)  # (b, heads, pos + 1, d)
            weights = (qk[:, 0] @ keys.transpose(-1, -2)).mul_(scale).softmax(dim=-1)
            return weights @ values  # (b, heads, 1, d)

        x = self.net.token_emb(token)
        if self.pos_table is not None:
            x = x + (self.pos_table.index_select(0, pos) if static else self.pos_table[pos])
        return self._run(x, attend)
