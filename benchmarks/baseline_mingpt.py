"""A plain PyTorch minGPT with taming-transformers' sampling loops: the reference of the GPT sampling speed rows.

Written for the benchmark after ``taming/modules/transformer/mingpt.py`` and
``taming/models/cond_transformer.py``; it imports nothing from vqtk. What decides
the cost of a sampling step follows taming:

- ``GPT``: token + learned position embeddings, pre-LayerNorm blocks of
  ``CausalSelfAttention`` (separate key / query / value ``Linear`` with bias,
  ``q @ k^T / sqrt(d)``, softmax, ``att @ v``, output projection) and a GELU MLP
  (4x width), final LayerNorm, bias-free head;
- ``forward_with_past``: each block returns its ``present = stack((k, v))``, the
  model stacks them, and every step ``torch.cat``s the list of all previous
  presents into one ``past`` tensor before running the new token;
- ``sample_with_past``: logits of the last position / temperature, top-k filter
  (``logits < kth -> -inf`` as ``transformers``' ``top_k_top_p_filtering``), softmax,
  ``torch.multinomial``; ``sample``: the uncached loop that reruns the whole
  sequence every step.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int):
        super().__init__()
        self.key = nn.Linear(n_embd, n_embd)
        self.query = nn.Linear(n_embd, n_embd)
        self.value = nn.Linear(n_embd, n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))
        self.n_head = n_head

    def forward(self, x: torch.Tensor, layer_past: Optional[torch.Tensor] = None):
        B, T, C = x.size()  # noqa: N806 - taming's names
        k = self.key(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = self.query(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = self.value(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        present = torch.stack((k, v))
        if layer_past is not None:
            past_key, past_value = layer_past
            k = torch.cat((past_key, k), dim=-2)
            v = torch.cat((past_value, v), dim=-2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        if layer_past is None:
            att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y), present


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor, layer_past: Optional[torch.Tensor] = None):
        attn, present = self.attn(self.ln1(x), layer_past=layer_past)
        x = x + attn
        x = x + self.mlp(self.ln2(x))
        return x, present


class GPT(nn.Module):
    """taming's minGPT (inference only here: dropout is left out, it is off when sampling)."""

    def __init__(self, *, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size, n_embd))
        self.blocks = nn.ModuleList(Block(n_embd, n_head, block_size) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb[:, : idx.shape[1], :]
        for block in self.blocks:
            x, _ = block(x)
        return self.head(self.ln_f(x))

    def forward_with_past(self, idx: torch.Tensor, past: Optional[list] = None, past_length: Optional[int] = None):
        token_embeddings = self.tok_emb(idx)
        if past is not None:
            past = torch.cat(past, dim=-2)  # n_layer, 2, b, nh, len_past, dim_head
            position_embeddings = self.pos_emb[:, past_length, :]
        else:
            position_embeddings = self.pos_emb[:, : token_embeddings.shape[1], :]
        x = token_embeddings + position_embeddings
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, layer_past=past[i, ...] if past is not None else None)
            presents.append(present)
        return self.head(self.ln_f(x)), torch.stack(presents)


def top_k_logits(logits: torch.Tensor, top_k: Optional[int]) -> torch.Tensor:
    if top_k is None:
        return logits
    indices_to_remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
    logits = logits.clone()
    logits[indices_to_remove] = float("-inf")
    return logits


@torch.no_grad()
def sample_with_past(x: torch.Tensor, model: GPT, steps: int, *, temperature: float = 1.0,
                     top_k: Optional[int] = None) -> torch.Tensor:
    """taming's cached sampling: ``x`` is the conditioning (here the start / class token)."""
    sample, cond_len, past = x, x.shape[1], None
    for n in range(steps):
        logits, present = model.forward_with_past(x, past=past, past_length=n + cond_len - 1)
        past = [present] if past is None else past + [present]
        logits = top_k_logits(logits[:, -1, :] / temperature, top_k)
        x = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
        sample = torch.cat((sample, x), dim=1)
    return sample[:, cond_len:]


@torch.no_grad()
def sample(x: torch.Tensor, model: GPT, steps: int, *, temperature: float = 1.0,
           top_k: Optional[int] = None) -> torch.Tensor:
    """taming's uncached sampling: the whole sequence runs through the model for every new token."""
    cond_len = x.shape[1]
    for _ in range(steps):
        logits = top_k_logits(model(x)[:, -1, :] / temperature, top_k)
        x = torch.cat((x, torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)), dim=1)
    return x[:, cond_len:]
