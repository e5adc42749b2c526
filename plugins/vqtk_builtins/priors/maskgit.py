"""Bidirectional masked prior decoded iteratively (MaskGIT, Chang et al. 2022)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

import torch
import torch.nn.functional as F

from vqtk.config import non_negative, positive
from vqtk.interfaces import PriorOutput, SamplingOptions
from vqtk.registry.forwarding import forwards_arguments
from vqtk_builtins.priors.checks import PriorInputError, check_grid
from vqtk_builtins.priors.conditioning import ConditionalPrior, stack_blocks
from vqtk_builtins.priors.sampling import draw, guide_halves, gumbel
from vqtk_builtins.priors.schedule import Schedule, mask_ratio, masked_counts


class MaskGITPrior(ConditionalPrior):
    """An x-transformers encoder that predicts masked codes from the visible ones.

    Training masks a fraction ``mask_ratio(u)``, ``u ~ U(0, 1)`` (cosine:
    ``cos(pi/2 * u)``), of each grid's codes with the mask token
    ``codebook_size``; the loss is the mean cross-entropy (nats) over the masked
    positions only. Conditional priors prepend a class token
    (``codebook_size + 1 + c``; the null class follows the classes when
    ``label_dropout > 0``).

    Sampling starts from an all-masked grid; at each step it samples every
    masked position (temperature, top-k, top-p, classifier-free guidance), then
    re-masks the least confident new tokens, confidence being the token's
    log-probability plus Gumbel noise annealed by
    ``choice_temperature * (1 - t / steps)``, so that the number still masked
    follows :func:`~vqtk_builtins.priors.schedule.masked_counts`. Grids larger
    than the training grid are refused (use the ``gpt`` prior's sliding window);
    smaller ones are the top-left crop of a training-size sample.
    The sizes, dropout and class arguments are :class:`ConditionalPrior`'s
    (``depth`` counts encoder blocks); x-transformers is imported on first build.

    Args:
        steps: decoding steps (sampling options may override).
        schedule: fraction masked as a function of progress r: cos(pi/2 r) or 1 - r.
        choice_temperature: Gumbel noise scale on token confidences at the first step, annealed to 0.
    """

    name = "maskgit"
    extra_ids = 1  # the mask token, id codebook_size

    @forwards_arguments(ConditionalPrior)
    def __init__(
        self,
        *,
        steps: Annotated[int, positive] = 8,
        schedule: Schedule = "cosine",
        choice_temperature: Annotated[float, non_negative] = 4.5,
        **shared: Any,
    ):
        super().__init__(**shared)
        from vqtk_builtins.priors.xtransformers import Encoder, TransformerWrapper

        mask_ratio(schedule, 0.5)  # raises on an unknown schedule
        self.steps = steps
        self.schedule = schedule
        self.choice_temperature = choice_temperature
        self.mask_id = self.codebook_size
        self.prefix_len = int(self.classes.has_prefix)
        dim, heads, dropout = self.dim, self.heads, self.dropout
        self.net = TransformerWrapper(
            num_tokens=self.codebook_size + 1 + self.classes.num_tokens,
            logits_dim=self.codebook_size,
            max_seq_len=self.prefix_len + self.grid_size[0] * self.grid_size[1],
            emb_dropout=dropout,
            attn_layers=Encoder(
                dim=dim,
                depth=self.depth,
                heads=heads,
                attn_dim_head=dim // heads,
                attn_dropout=dropout,
                ff_dropout=dropout,
                attn_flash=True,
            ),
        )

    def _logits(self, tokens: torch.Tensor, prefix: Optional[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, n, codebook_size)`` of the code positions of ``tokens (B, n)``."""
        seq = tokens if prefix is None else torch.cat((prefix, tokens), dim=1)
        return self.net(seq)[:, self.prefix_len :].float()

    def blocks(self) -> list[torch.nn.Module]:
        """Each attention and feed-forward block of the x-transformers stack (FSDP units, checkpointed activations)."""
        return stack_blocks(self.net.attn_layers)

    def loss(self, indices: torch.Tensor, labels: Optional[torch.Tensor] = None) -> PriorOutput:
        """Mean cross-entropy (nats) on a schedule-drawn random subset of masked positions of ``indices (B, h, w)``."""
        tokens, labels = self._tokens(indices, labels)
        batch, n = tokens.shape
        device = tokens.device

        ratio = mask_ratio(self.schedule, torch.rand(batch, device=device))
        num_masked = (ratio * n).ceil().clamp(1, n)
        rank = torch.rand(batch, n, device=device).argsort(dim=-1).argsort(dim=-1)
        masked = rank < num_masked[:, None]

        prefix = self._training_prefix(labels, batch, device)
        logits = self._logits(tokens.masked_fill(masked, self.mask_id), prefix)
        loss = F.cross_entropy(logits[masked], tokens[masked])
        with torch.no_grad():
            accuracy = (logits[masked].argmax(dim=-1) == tokens[masked]).float().mean()
        return PriorOutput(
            loss=loss,
            metrics={
                "accuracy": accuracy,
                "bits_per_token": loss.detach() / math.log(2),
                "mask_ratio": masked.float().mean(),
            },
        )

    @torch.no_grad()
    def decode(
        self,
        batch_size: int,
        *,
        labels: Optional[torch.Tensor] = None,
        options: SamplingOptions = SamplingOptions(),
        generator: Optional[torch.Generator] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Iterative decoding of training-size grids.

        Returns the tokens ``(B, h, w)`` and, for each step run, how many
        positions of each grid were still masked after it (``(steps, B)``; it
        follows :func:`~vqtk_builtins.priors.schedule.masked_counts`, and decoding
        stops early once nothing is masked, when ``steps`` exceeds the grid).
        """
        self._check_sampling(batch_size, options, iterative=True)
        labels = self._labels(labels, batch_size)
        h, w = self.grid_size
        n = h * w
        device = next(self.parameters()).device
        steps = options.steps or self.steps

        guided = options.cfg_scale != 1.0
        prefix = self._sampling_prefix(labels, batch_size, device, guided=guided)

        tokens = torch.full((batch_size, n), self.mask_id, dtype=torch.long, device=device)
        history = []
        with self._evaluating():
            for t, remaining in enumerate(masked_counts(n, steps, self.schedule)):
                if guided:
                    logits = guide_halves(self._logits(tokens.repeat(2, 1), prefix), options.cfg_scale)
                else:
                    logits = self._logits(tokens, prefix)
                drawn = draw(logits.reshape(batch_size * n, -1), options, generator)
                unknown = tokens == self.mask_id
                sampled = torch.where(unknown, drawn.tokens.view(batch_size, n), tokens)
                if remaining == 0:
                    tokens = sampled
                    history.append((tokens == self.mask_id).sum(dim=-1))
                    break
                noise = gumbel((batch_size, n), generator=generator, device=device)
                temperature = self.choice_temperature * (1 - (t + 1) / steps)
                confidence = drawn.log_probs.view(batch_size, n) + temperature * noise
                confidence = confidence.masked_fill(~unknown, float("inf"))
                remask = confidence.topk(remaining, dim=-1, largest=False).indices
                tokens = sampled.scatter(1, remask, self.mask_id)
                history.append((tokens == self.mask_id).sum(dim=-1))
        return tokens.view(batch_size, h, w), torch.stack(history)

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
        """Sample ``(batch_size, h, w)`` grids by MaskGIT decoding in ``options.steps`` (default: ``steps``) steps."""
        rows, cols = check_grid(grid_size or self.grid_size, name=self.name)
        h, w = self.grid_size
        if rows > h or cols > w:
            raise PriorInputError(
                f"maskgit prior samples grids up to its training grid {h}x{w}, asked for {rows}x{cols}; "
                "use the gpt prior (sliding-window sampling) for larger grids"
            )
        tokens, _ = self.decode(batch_size, labels=labels, options=options, generator=generator)
        return tokens[:, :rows, :cols]
