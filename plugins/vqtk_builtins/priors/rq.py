"""Residual-depth prior over ``(B, h, w, Q)`` codes (RQ-Transformer, Lee et al. 2022)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import positive
from vqtk.interfaces import DEPTH, PriorOutput, SamplingOptions
from vqtk.registry.forwarding import forwards_arguments
from vqtk_builtins.priors.checks import PriorInputError, check_grid, check_indices
from vqtk_builtins.priors.conditioning import ClassTokens, ConditionalPrior
from vqtk_builtins.priors.decode import KVDecoder
from vqtk_builtins.priors.sampling import draw, guide_halves


class _SpatialNet(nn.Module):
    """The spatial transformer in the shape :class:`KVDecoder` reads: ``token_emb`` / ``attn_layers`` /
    ``to_logits`` (here the identity: the output is the final-normed context, not logits)."""

    def __init__(self, token_emb: nn.Module, attn_layers: nn.Module, dropout: float):
        super().__init__()
        self.token_emb = token_emb
        self.attn_layers = attn_layers
        self.emb_dropout = nn.Dropout(dropout)
        self.to_logits = nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Context ``(B, n, dim)`` of spatial tokens ``(B, n, Q)``."""
        return self.attn_layers(self.emb_dropout(self.token_emb(tokens)))


class _SummedEmbedding(nn.Module):
    """Embeds ``(..., Q)`` ids as the sum of their ``Q`` embeddings (the ``pad`` id embeds as zero)."""

    def __init__(self, num_ids: int, dim: int, pad: int):
        super().__init__()
        self.emb = nn.Embedding(num_ids, dim, padding_idx=pad)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids).sum(dim=-2)


class RQPrior(ConditionalPrior):
    """A spatial transformer over positions and a depth transformer over each position's ``Q`` codes.

    Code ``c`` of depth ``q`` has its own embedding (id ``q * codebook_size + c``: residual
    quantizers keep one codebook per depth). The spatial transformer (causal, raster order)
    reads at each position the sum of the ``Q`` code embeddings of the previous position,
    after a start token (unconditional) or class token (conditional; with ``label_dropout >
    0`` a null class replaces labels at that rate in training, for classifier-free
    guidance), and gives a context ``h_t`` per position. The depth transformer (causal over
    ``Q`` steps) reads ``h_t``, then the running sums of the embeddings of the codes already
    chosen at that position, and predicts the ``Q`` codes in order through one head of
    ``codebook_size`` logits. The loss is the mean negative log-likelihood over all
    ``h * w * Q`` codes.

    Sampling goes position by position and, within a position, depth by depth, with
    temperature, top-k, top-p and classifier-free guidance at every draw. With
    ``use_cache`` the spatial transformer runs through a
    :class:`~vqtk_builtins.priors.decode.KVDecoder` (one new position per step); without,
    each step reruns it on the whole prefix; both draw the same random numbers, so they give
    the same codes under one generator. Grids up to the training grid are sampled (a
    smaller one is the top-left crop of a training-size sample); larger ones are refused.
    The sizes, dropout and class arguments are :class:`ConditionalPrior`'s (``depth``
    counts spatial decoder blocks); x-transformers is imported on first build.

    Args:
        num_codebooks: codes per position (Q), from the tokenizer's residual quantizer.
        depth_layers: decoder blocks of the depth transformer.
    """

    name = "rq"
    layouts = (DEPTH,)
    always_prefix = True

    @forwards_arguments(ConditionalPrior)
    def __init__(self, *, num_codebooks: Annotated[int, positive], depth_layers: Annotated[int, positive] = 2,
                 **shared: Any):
        super().__init__(**shared)
        from vqtk_builtins.priors.xtransformers import Decoder

        self.num_codebooks = num_codebooks
        self.depth_layers = depth_layers
        k, q, dim, heads = self.codebook_size, num_codebooks, self.dim, self.heads
        # ids: the Q codebooks' codes, then the class (or start) tokens, then a zero padding id
        self.classes = ClassTokens(first_id=q * k, num_classes=self.num_classes, label_dropout=self.label_dropout,
                                   always_prefix=True)
        self.pad_id = q * k + self.classes.num_tokens
        self.register_buffer("code_offsets", torch.arange(q) * k, persistent=False)

        def decoder(blocks: int, rotary: bool):
            return Decoder(dim=dim, depth=blocks, heads=heads, attn_dim_head=dim // heads, attn_dropout=self.dropout,
                           ff_dropout=self.dropout, attn_flash=True, rotary_pos_emb=rotary,
                           rotary_emb_dim=min(dim // heads, max(32, dim // heads // 2)) if rotary else None,
                           verbose=False)

        self.spatial = _SpatialNet(_SummedEmbedding(self.pad_id + 1, dim, self.pad_id), decoder(self.depth, True),
                                   self.dropout)
        self.depth_net = decoder(depth_layers, False)
        self.depth_pos = nn.Parameter(torch.randn(q, dim) * 0.02)
        self.depth_dropout = nn.Dropout(self.dropout)
        self.head = nn.Linear(dim, k)

    # -- pieces --------------------------------------------------------------------------------

    @property
    def code_emb(self) -> nn.Embedding:
        """The embeddings of every code (and of the class / start tokens), shared by both transformers."""
        return self.spatial.token_emb.emb

    def _ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Embedding ids of codes ``(..., d)`` of depths ``0..d-1``."""
        return codes.long() + self.code_offsets[: codes.shape[-1]]

    def _prefix_row(self, prefix: torch.Tensor) -> torch.Tensor:
        """The ``(B, 1, Q)`` spatial token of a class / start prefix ``(B, 1)``: its id and padding."""
        pad = prefix.new_full((prefix.shape[0], 1, self.num_codebooks - 1), self.pad_id)
        return torch.cat((prefix[:, :, None], pad), dim=-1)

    def _depth_logits(self, context: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, d + 1, K)`` of depths ``0..d`` from contexts ``(N, dim)`` and the codes ``(N, d)`` before."""
        d = codes.shape[1]
        chosen = self.code_emb(self._ids(codes)).cumsum(dim=1)  # running sums of the codes chosen so far
        x = torch.cat((context[:, None], chosen), dim=1) + self.depth_pos[: d + 1]
        return self.head(self.depth_net(self.depth_dropout(x)))

    def _checked(self, indices: torch.Tensor) -> torch.Tensor:
        """``indices (B, h, w, Q)`` checked (shape, grid, range) and flattened to ``(B, h * w, Q)``."""
        q = self.num_codebooks
        if indices.ndim != 4 or indices.shape[-1] != q:
            raise PriorInputError(f"{self.name} prior: indices must be (B, h, w, {q}) ({q} codes per position), "
                                  f"got shape {tuple(indices.shape)}")
        check_indices(indices.movedim(-1, 1).flatten(0, 1), name=self.name, codebook_size=self.codebook_size,
                      grid_size=self.grid_size)
        return indices.reshape(indices.shape[0], -1, q).long()

    # -- training ------------------------------------------------------------------------------

    def loss(self, indices: torch.Tensor, labels: Optional[torch.Tensor] = None) -> PriorOutput:
        """Mean negative log-likelihood (nats) of every code of ``indices (B, h, w, Q)``."""
        codes = self._checked(indices)
        batch, n, q = codes.shape
        labels = self._labels(labels, batch)
        prefix = self._prefix_row(self._training_prefix(labels, batch, codes.device))
        context = self.spatial(torch.cat((prefix, self._ids(codes[:, :-1])), dim=1))  # (B, n, dim)
        logits = self._depth_logits(context.reshape(batch * n, -1), codes.reshape(batch * n, q)[:, :-1]).float()
        target = codes.reshape(batch * n, q)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        with torch.no_grad():
            accuracy = (logits.argmax(dim=-1) == target).float().mean()
        return PriorOutput(loss=loss, metrics={"accuracy": accuracy, "bits_per_token": loss.detach() / math.log(2)})

    # -- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        batch_size: int,
        *,
        grid_size: Optional[tuple[int, int]] = None,
        labels: Optional[torch.Tensor] = None,
        options: SamplingOptions = SamplingOptions(),
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Sample ``(batch_size, h, w, Q)`` codes, position by position in raster order, depth by depth."""
        self._check_sampling(batch_size, options, iterative=False)
        rows, cols = check_grid(grid_size or self.grid_size, name=self.name)
        h, w = self.grid_size
        if rows > h or cols > w:
            raise PriorInputError(f"{self.name} prior samples grids up to its training grid {h}x{w}, "
                                  f"asked for {rows}x{cols}")
        labels = self._labels(labels, batch_size)
        device = next(self.parameters()).device
        guided = options.cfg_scale != 1.0
        seq = self._prefix_row(self._sampling_prefix(labels, batch_size, device, guided=guided))
        out = torch.zeros(batch_size, rows * w, self.num_codebooks, dtype=torch.long, device=device)
        use_cache = options.use_cache and self.spatial.attn_layers.can_cache_kv
        with self._evaluating(), torch.inference_mode():  # out, made outside, stays a normal tensor
            decoder = KVDecoder(self.spatial, batch=seq.shape[0], length=h * w) if use_cache else None
            for t in range(rows * w):
                if decoder is None:
                    context = self.spatial(seq)[:, -1]
                else:
                    context = decoder.prefill(seq) if t == 0 else decoder.step(seq[:, -1:], t)
                out[:, t] = codes = self._sample_position(context, options, generator, guided)
                row = self._ids(codes.repeat(2, 1) if guided else codes)[:, None]
                seq = torch.cat((seq, row), dim=1) if decoder is None else row
        return out.view(batch_size, rows, w, -1)[:, :, :cols]

    def _sample_position(self, context: torch.Tensor, options: SamplingOptions,
                         generator: Optional[torch.Generator], guided: bool) -> torch.Tensor:
        """The ``Q`` codes ``(B, Q)`` of one position from its spatial context ``(B or 2B, dim)``."""
        codes = torch.zeros(context.shape[0], 0, dtype=torch.long, device=context.device)
        for _ in range(self.num_codebooks):
            logits = self._depth_logits(context, codes)[:, -1].float()
            if guided:
                logits = guide_halves(logits, options.cfg_scale)
            tokens = draw(logits, options, generator, log_probs=False).tokens
            codes = torch.cat((codes, (tokens.repeat(2) if guided else tokens)[:, None]), dim=1)
        return codes[: context.shape[0] // 2] if guided else codes
