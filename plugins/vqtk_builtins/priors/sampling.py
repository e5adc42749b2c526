"""Shared sampling pieces: logit filtering, guidance mixing, seeded draws, sliding windows.

Every random number comes from the caller's ``torch.Generator`` when one is
given (on the generator's own device, so a CPU generator gives the same
samples whatever device the model is on), else from torch's global RNG.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from vqtk.interfaces import SamplingOptions


def filter_logits(logits: torch.Tensor, *, top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """Set to ``-inf`` all logits outside the top ``k`` and outside the nucleus of mass ``top_p``.

    The nucleus is the smallest set of most likely tokens whose probability
    reaches ``top_p`` (the most likely token always stays). Top-k applies first.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        remove = mass_before >= top_p
        remove[..., 0] = False
        ordered = ordered.masked_fill(remove, float("-inf"))
        logits = torch.empty_like(logits).scatter(-1, order, ordered)
    return logits


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)`` (``scale = 1`` gives ``cond``)."""
    return uncond + scale * (cond - uncond)


def guide_halves(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """:func:`guide` on a doubled batch: the conditional rows first, then the unconditional ones."""
    cond, uncond = logits.chunk(2, dim=0)
    return guide(cond, uncond, scale)


def uniform(shape: tuple[int, ...], *, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """``U[0, 1)`` noise drawn from ``generator`` (on its device) and moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def gumbel(shape: tuple[int, ...], *, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))``."""
    u = uniform(shape, generator=generator, device=device)
    return -torch.log(-torch.log(u.clamp(min=1e-20)).clamp(min=1e-20))


class Draw(NamedTuple):
    """Sampled tokens and their log-probability under the distribution they were drawn from."""

    tokens: torch.Tensor
    log_probs: Optional[torch.Tensor]


def draw(
    logits: torch.Tensor, options: SamplingOptions, generator: Optional[torch.Generator], *, log_probs: bool = True
) -> Draw:
    """Sample one token per row of ``logits (N, K)``: temperature, then top-k / top-p, then a multinomial draw.

    ``temperature = 0`` is greedy (argmax, no randomness). Each call consumes the
    generator the same way for a given ``N``, whatever produced the logits, so
    cached and uncached decoding give identical tokens under one seed.
    ``log_probs=False`` skips the log-probabilities (``Draw.log_probs`` is ``None``).
    """
    logits = logits.float()
    if options.temperature == 0:
        filtered = filter_logits(logits, top_k=options.top_k, top_p=options.top_p)
        tokens = filtered.argmax(dim=-1)
    else:
        if options.temperature != 1:
            logits = logits / options.temperature
        if options.top_p is None and options.top_k is not None and options.top_k < logits.shape[-1]:
            # top-k alone: draw among the k best only (ties at the k-th logit keep k of them)
            best, order = logits.topk(options.top_k, dim=-1)
            choice = _multinomial(best.softmax(dim=-1), generator)
            tokens = order.gather(-1, choice[:, None]).squeeze(-1)
            if not log_probs:
                return Draw(tokens, None)
            return Draw(tokens, best.log_softmax(dim=-1).gather(-1, choice[:, None]).squeeze(-1))
        filtered = filter_logits(logits, top_k=options.top_k, top_p=options.top_p)
        tokens = _multinomial(filtered.softmax(dim=-1), generator)
    if not log_probs:
        return Draw(tokens, None)
    return Draw(tokens, filtered.log_softmax(dim=-1).gather(-1, tokens[:, None]).squeeze(-1))


def _multinomial(probs: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One index per row of ``probs``, drawn on the generator's device.

    This is the exponential race ``torch.multinomial(probs, 1)`` runs for a single
    draw (``argmax(probs / E)``, ``E ~ Exp(1)`` from the same generator: the same
    index, tested), without its separate max / min validity reductions; rows with
    NaN (a diverged model) are refused by one check instead.
    """
    if generator is not None and generator.device != probs.device:
        return _multinomial(probs.to(generator.device), generator).to(probs.device)
    if torch.isnan(probs).any():
        raise RuntimeError("cannot sample: the model's logits contain NaN")
    race = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.div(probs, race, out=race).argmax(dim=-1)


def window_origin(index: int, window: int, extent: int) -> int:
    """First row (or column) of the ``window``-long span centred on ``index`` and clamped inside ``extent``.

    This is taming-transformers' sliding window: the position sits at the
    window's centre, except near the borders where the window stops at the edge.
    """
    return min(max(index - window // 2, 0), extent - window)


def window_context(grid: torch.Tensor, i: int, j: int, top: int, left: int, width: int) -> torch.Tensor:
    """Tokens of the window at ``(top, left)`` of ``width`` columns that precede ``(i, j)`` in raster order.

    ``grid`` is ``(B, H, W)``; the result is ``(B, (i - top) * width + (j - left))``:
    the window's full rows above row ``i``, then row ``i`` left of column ``j``.
    """
    above = grid[:, top:i, left : left + width].reshape(grid.shape[0], -1)
    return torch.cat((above, grid[:, i, left:j]), dim=1)
