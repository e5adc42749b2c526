"""Autoregressive transformer prior over the raster-ordered code grid (taming-transformers' stage 2)."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from vqtk.interfaces import PriorOutput, SamplingOptions
from vqtk.registry.forwarding import forwards_arguments
from vqtk_builtins.priors.checks import check_grid
from vqtk_builtins.priors.conditioning import ConditionalPrior, stack_blocks
from vqtk_builtins.priors.decode import KVDecoder
from vqtk_builtins.priors.sampling import draw, guide_halves, window_context, window_origin


class GPTPrior(ConditionalPrior):
    """A causal x-transformers decoder predicting each code from the codes before it in raster order.

    The sequence starts with one prefix token: a learned start token for
    unconditional priors, the class token for conditional ones (token ids
    ``codebook_size + c``; with ``label_dropout > 0`` a null class
    ``codebook_size + num_classes`` replaces labels at that rate during training,
    which classifier-free guidance needs). Logits cover the ``codebook_size``
    codes only.

    Sampling runs its own loop so that cached and uncached decoding draw random
    numbers identically, and so that classifier-free guidance and sliding windows
    fit in: uncached, each step is a ``TransformerWrapper`` call on the whole
    context; cached, a :class:`~vqtk_builtins.priors.decode.KVDecoder` runs the
    same layers on the new token only, with a key/value cache allocated once.
    Grids larger than the training grid are sampled with taming's sliding window:
    each position is predicted from the training-size window centred on it
    (clamped to the borders), using only the window's raster context. Smaller
    grids are the top-left crop of a training-size sample.

    Multi-index codes ``(B, h, w, Q)`` from residual quantizers are refused.
    The sizes, dropout and class arguments are :class:`ConditionalPrior`'s
    (``depth`` counts decoder blocks); x-transformers is imported on first build.

    Args:
        rotary: rotary position embeddings (true) or learned absolute ones (false).
    """

    name = "gpt"
    always_prefix = True  # unconditional sequences start with a learned token
    samples_larger_grids = True  # sliding-window sampling

    @forwards_arguments(ConditionalPrior)
    def __init__(self, *, rotary: bool = True, **shared: Any):
        super().__init__(**shared)
        from vqtk_builtins.priors.xtransformers import Decoder, TransformerWrapper

        dim, heads, dropout = self.dim, self.heads, self.dropout
        seq_len = self.grid_size[0] * self.grid_size[1]  # prefix + all codes but the last
        self.net = TransformerWrapper(
            num_tokens=self.codebook_size + self.classes.num_tokens,
            logits_dim=self.codebook_size,
            max_seq_len=seq_len,
            use_abs_pos_emb=not rotary,
            emb_dropout=dropout,
            attn_layers=Decoder(
                dim=dim,
                depth=self.depth,
                heads=heads,
                attn_dim_head=dim // heads,
                attn_dropout=dropout,
                ff_dropout=dropout,
                attn_flash=True,
                rotary_pos_emb=rotary,
                # rotate at least 32 dims of each head where the head is that wide
                rotary_emb_dim=min(dim // heads, max(32, dim // heads // 2)),
                verbose=False,
            ),
        )

    def blocks(self) -> list[torch.nn.Module]:
        """Each attention and feed-forward block of the x-transformers stack (FSDP units, checkpointed activations)."""
        return stack_blocks(self.net.attn_layers)

    def loss(self, indices: torch.Tensor, labels: Optional[torch.Tensor] = None) -> PriorOutput:
        """Mean next-code negative log-likelihood (nats) of ``indices (B, h, w)``, with accuracy and bits per token."""
        tokens, labels = self._tokens(indices, labels)
        prefix = self._training_prefix(labels, tokens.shape[0], tokens.device)
        logits = self.net(torch.cat((prefix, tokens[:, :-1]), dim=1)).float()
        loss = F.cross_entropy(logits.transpose(1, 2), tokens)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=-1) == tokens).float().mean()
        return PriorOutput(
            loss=loss,
            metrics={"accuracy": accuracy, "bits_per_token": loss.detach() / math.log(2)},
        )

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
        """Sample ``(batch_size, h, w)`` code grids position by position in raster order.

        ``grid_size`` larger than the training grid (either side) switches to
        sliding-window sampling. ``options.use_cache`` reuses a key/value
        cache while the window stays put (always, at the training
        size); both paths give the same tokens under the same ``generator``.
        """
        self._check_sampling(batch_size, options, iterative=False)
        rows, cols = check_grid(grid_size or self.grid_size, name=self.name)
        labels = self._labels(labels, batch_size)
        h, w = self.grid_size
        device = next(self.parameters()).device

        guided = options.cfg_scale != 1.0
        prefix = self._sampling_prefix(labels, batch_size, device, guided=guided)

        # a narrower or shorter request is the top-left crop of a training-size grid;
        # rows below the request never influence it, columns right of it may
        height, width = max(rows, h), max(cols, w)
        out = torch.zeros(batch_size, rows, width, dtype=torch.long, device=device)
        use_cache = options.use_cache and self.net.can_cache_kv
        # inference mode: no version counters or autograd metadata per op (out, made outside, stays a normal tensor)
        with self._evaluating(), torch.inference_mode():
            if use_cache and (rows, width) == (h, w):
                self._sample_cached(out.view(batch_size, h * w), prefix, options, generator, guided)
                return out[:, :, :cols]
            # the cache holds the current window's context up to the previous position
            decoder = KVDecoder(self.net, batch=prefix.shape[0], length=h * w) if use_cache else None
            cached_window, filled, last = None, 0, None
            for i in range(rows):
                top = window_origin(i, h, height)
                for j in range(width):
                    left = window_origin(j, w, width)
                    if decoder is not None and cached_window == (top, left):
                        logits = decoder.step(last, filled)  # the window moved on by the last token only
                        filled += 1
                    else:
                        context = window_context(out, i, j, top, left, w)
                        seq = torch.cat((prefix, context.repeat(2, 1) if guided else context), dim=1)
                        if decoder is not None:
                            logits, filled = decoder.prefill(seq), seq.shape[1]
                            cached_window = (top, left)
                        else:
                            logits = self.net(seq)[:, -1]
                    tokens = self._draw(logits, options, generator, guided)
                    out[:, i, j] = tokens
                    last = (tokens.repeat(2) if guided else tokens)[:, None]
        return out[:, :, :cols]

    def _sample_cached(self, out: torch.Tensor, prefix: torch.Tensor, options: SamplingOptions,
                       generator: Optional[torch.Generator], guided: bool) -> None:
        """Fill ``out (B, h * w)`` in raster order at the training grid: one prefill, then one cached step per code.

        The same draws as the general loop (which a larger grid needs), without its window bookkeeping.
        """
        length, start = out.shape[1], prefix.shape[1]
        decoder = KVDecoder(self.net, batch=prefix.shape[0], length=length)
        logits = decoder.prefill(prefix)
        for t in range(length):
            out[:, t] = tokens = self._draw(logits, options, generator, guided)
            if t + 1 < length:  # code t sits at position start + t
                logits = decoder.step(tokens.repeat(2)[:, None] if guided else tokens[:, None], start + t)

    @staticmethod
    def _draw(logits: torch.Tensor, options: SamplingOptions, generator: Optional[torch.Generator],
              guided: bool) -> torch.Tensor:
        """The next code of each sample from the last position's logits (both halves under guidance)."""
        logits = logits.float()
        if guided:
            logits = guide_halves(logits, options.cfg_scale)
        return draw(logits, options, generator, log_probs=False).tokens
