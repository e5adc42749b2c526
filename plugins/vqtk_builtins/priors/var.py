"""Next-scale prediction prior over multi-scale codes (VAR, Tian et al. 2024)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import constraint, each, non_empty, positive
from vqtk.interfaces import SCALES, PriorOutput, SamplingOptions, TokenLayout
from vqtk.recipe.values import as_lists
from vqtk.registry.forwarding import forwards_arguments
from vqtk_builtins.priors.checks import PriorInputError, check_grid
from vqtk_builtins.priors.conditioning import ConditionalPrior, check_prior, stack_blocks
from vqtk_builtins.priors.sampling import draw, guide_halves
from vqtk_builtins.priors.var_attention import ScaleCache, block_causal_mask, scale_of_each_token

Interpolation = Literal["bicubic", "bilinear", "nearest"]
CfgSchedule = Literal["constant", "linear"]


@constraint("[rows, columns] >= 1")
def _pair_of_positive(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None and not (len(value) == 2 and all(v >= 1 for v in value)):
        raise ValueError(f"must be [rows, columns] of at least 1, got {list(value)!r}")


class VARPrior(ConditionalPrior):
    """Next-scale prediction (VAR): each scale of a multi-scale tokenizer's codes in parallel, coarse to fine.

    Models the ``scales`` token layout (indices ``(B, L)``, scale by scale, each row-major).
    The transformer input at scale ``k > 1`` is VAR's: the codes of all coarser scales
    embedded, each upsampled (``interpolation``) to the last scale's grid and summed (an
    ``f_hat`` of the codes so far), then area-downsampled to scale ``k``'s grid and projected
    to ``dim``. The first scale's input is the class token (VAR's start token: the class
    embedding, a learned start for unconditional priors) plus a learned position per token of
    that scale. Every token also gets a learned absolute position and its scale's level
    embedding. The class embedding also conditions every block (adaptive layer norm and
    adaptive layer scale, x-transformers' ``use_adaptive_layernorm`` /
    ``use_adaptive_layerscale``). Attention is block-causal: a scale sees every coarser scale
    and itself. Training is one teacher-forced pass, the loss the mean cross-entropy over all
    ``L`` tokens.

    Unlike VAR, the prior does not read the tokenizer's codebook: VAR embeds codes with the
    frozen VQVAE codebook and its ``Phi`` convolutions (``idxBl_to_var_input``); this prior
    learns its own code embedding of ``code_dim`` channels, so it works over any tokenizer
    with the ``scales`` layout and needs nothing from stage 1 but the indices.

    Sampling predicts scale by scale, all tokens of a scale drawn in parallel (temperature,
    top-k, top-p); with ``use_cache`` the keys and values of the coarser scales are kept
    (:class:`~vqtk_builtins.priors.var_attention.ScaleCache`), without it each scale reruns the
    sequence so far; both give the same tokens under one generator. Classifier-free guidance
    (``label_dropout > 0`` in training) mixes a conditional and a null-class batch with
    ``cfg_scale``, constant or ramped over scales (``cfg_schedule``). Only the tokenizer's own
    grid (the last scale) can be sampled. The sizes, dropout and class arguments are
    :class:`ConditionalPrior`'s (``depth`` counts encoder blocks); x-transformers is imported on
    first build.

    Args:
        scales: the tokenizer's scales [[rows, columns], ...] coarse to fine (provided by the
            tokenizer); the last is its code grid.
        code_dim: channels of the prior's own code embedding, accumulated across scales (VAR:
            its VQVAE's 32-channel codebook).
        interpolation: how each scale's code embedding is upsampled to the last scale's grid
            (VAR: bicubic); the sum is area-downsampled to the next scale.
        cfg_schedule: guidance per scale: "constant" uses cfg_scale at every scale; "linear"
            ramps it from 1 at the first scale to cfg_scale at the last (VAR's ramp: VAR's
            cfg = c is cfg_scale = 1 + c).
        qk_norm: l2-normalised queries and keys with a learned scale (x-transformers'
            attn_qk_norm; VAR trains with its similar attn_l2_norm).
    """

    name = "var"
    layouts = (SCALES,)
    always_prefix = True  # unconditional priors start from a learned token

    @forwards_arguments(ConditionalPrior)
    def __init__(
        self,
        *,
        scales: Annotated[tuple[tuple[int, int], ...], non_empty, each(_pair_of_positive)],
        code_dim: Annotated[int, positive] = 32,
        interpolation: Interpolation = "bicubic",
        cfg_schedule: CfgSchedule = "constant",
        qk_norm: bool = False,
        **shared: Any,
    ):
        super().__init__(**shared)
        from vqtk_builtins.priors.xtransformers import Encoder

        try:
            self.scales = TokenLayout.multiscale(scales).scales  # read back as Prior.layout
        except (TypeError, ValueError) as exc:
            raise PriorInputError(f"{self.name} prior: scales: {exc}") from None
        if self.scales[-1] != self.grid_size:
            raise PriorInputError(f"{self.name} prior: grid_size {list(self.grid_size)} must be the last of scales "
                                  f"{as_lists(self.scales)} (a multi-scale prior models its tokenizer's code grid only)")
        self.code_dim, self.interpolation, self.cfg_schedule = code_dim, interpolation, cfg_schedule
        sizes = [h * w for h, w in self.scales]
        self.ends = [sum(sizes[: k + 1]) for k in range(len(sizes))]
        self.length = self.ends[-1]
        dim = self.dim
        std = math.sqrt(1 / dim / 3)  # VAR's embedding init

        self.code_embed = nn.Embedding(self.codebook_size, code_dim)
        self.word_embed = nn.Linear(code_dim, dim)
        self.class_embed = nn.Embedding(self.classes.num_tokens, dim)
        self.start_pos = nn.Parameter(torch.empty(sizes[0], dim))
        self.pos_embed = nn.Parameter(torch.empty(self.length, dim))
        self.level_embed = nn.Embedding(len(self.scales), dim)
        for weight in (self.class_embed.weight, self.start_pos, self.pos_embed, self.level_embed.weight):
            nn.init.trunc_normal_(weight, std=std)
        self.emb_dropout = nn.Dropout(self.dropout)
        self.net = Encoder(
            dim=dim,
            depth=self.depth,
            heads=self.heads,
            attn_dim_head=dim // self.heads,
            attn_dropout=self.dropout,
            ff_dropout=self.dropout,
            attn_flash=True,
            use_adaptive_layernorm=True,
            use_adaptive_layerscale=True,
            dim_condition=dim,
            attn_qk_norm=qk_norm,
        )
        self.head = nn.Linear(dim, self.codebook_size)
        nn.init.trunc_normal_(self.head.weight, std=0.02 * std)  # VAR: near-uniform logits at init
        nn.init.zeros_(self.head.bias)
        # derived from scales: not stored in checkpoints
        self.register_buffer("mask", block_causal_mask(self.scales), persistent=False)
        self.register_buffer("levels", scale_of_each_token(self.scales), persistent=False)

    def blocks(self) -> list[nn.Module]:
        """Each attention and feed-forward block of the x-transformers encoder (FSDP units, checkpointed activations)."""
        return stack_blocks(self.net)

    # -- the sequence -------------------------------------------------------------------------

    def _positions(self, start: int, end: int) -> torch.Tensor:
        """Absolute position plus level embedding of tokens ``start..end-1``: ``(end - start, dim)``."""
        return self.pos_embed[start:end] + self.level_embed(self.levels[start:end])

    def _condition(self, prefix: torch.Tensor) -> torch.Tensor:
        """The class (or start / null) embedding ``(B, dim)`` of class-token ids ``prefix (B, 1)``."""
        return self.class_embed(prefix[:, 0] - self.classes.first_id)

    def _first_scale(self, condition: torch.Tensor) -> torch.Tensor:
        """The first scale's input ``(B, h_1 w_1, dim)``: the start (class) token at each of its positions."""
        return condition[:, None] + self.start_pos[None] + self._positions(0, self.ends[0])

    def _accumulate(self, f_hat: Optional[torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
        """``f_hat`` plus the embedding of one scale's ``codes (B, h, w)`` upsampled to the last scale's grid."""
        e = self.code_embed(codes).permute(0, 3, 1, 2)
        if tuple(codes.shape[1:]) != self.grid_size:
            corners = None if self.interpolation == "nearest" else False
            e = F.interpolate(e, size=self.grid_size, mode=self.interpolation, align_corners=corners)
        return e if f_hat is None else f_hat + e

    def _next_input(self, f_hat: torch.Tensor, k: int) -> torch.Tensor:
        """Scale ``k``'s input ``(B, h_k w_k, dim)``: ``f_hat`` area-downsampled to its grid, projected."""
        if self.scales[k] != self.grid_size:
            f_hat = F.interpolate(f_hat, size=self.scales[k], mode="area")
        return self.word_embed(f_hat.flatten(2).transpose(1, 2)) + self._positions(self.ends[k - 1], self.ends[k])

    def _teacher_inputs(self, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The whole input sequence ``(B, L, dim)`` for known ``tokens (B, L)``."""
        parts, f_hat = self.layout.split(tokens), None
        inputs = [self._first_scale(condition)]
        for k in range(1, len(self.scales)):
            f_hat = self._accumulate(f_hat, parts[k - 1])
            inputs.append(self._next_input(f_hat, k))
        return torch.cat(inputs, dim=1)

    def logits(self, tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, L, codebook_size)`` of every token of ``tokens (B, L)`` given the class ids ``prefix (B, 1)``
        (one forward pass under the block-causal mask; a token's logits depend on coarser scales only)."""
        condition = self._condition(prefix)
        x = self.emb_dropout(self._teacher_inputs(tokens, condition))
        return self.head(self.net(x, condition=condition, attn_mask=self.mask)).float()

    # -- training -------------------------------------------------------------------------------

    def _check_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.ndim != 2 or indices.shape[1] != self.length:
            raise PriorInputError(
                f"{self.name} prior: indices must be (B, {self.length}) for {self.layout.describe()}, "
                f"got shape {tuple(indices.shape)}"
            )
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise PriorInputError(f"{self.name} prior: indices must be integers, got {indices.dtype}")
        if indices.numel():
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= self.codebook_size:
                raise PriorInputError(f"{self.name} prior: indices must lie in [0, {self.codebook_size}), "
                                      f"got values in [{low}, {high}]")
        return indices.long()

    def loss(self, indices: torch.Tensor, labels: Optional[torch.Tensor] = None) -> PriorOutput:
        """Mean cross-entropy (nats) over all ``L`` tokens of ``indices (B, L)``, with accuracy and bits per token
        (``last_scale_loss``: the finest scale's share, VAR's ``Lt``)."""
        tokens = self._check_tokens(indices)
        labels = self._labels(labels, tokens.shape[0])
        prefix = self._training_prefix(labels, tokens.shape[0], tokens.device)
        logits = self.logits(tokens, prefix)
        each_token = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view(tokens.shape)
        loss = each_token.mean()
        with torch.no_grad():
            accuracy = (logits.argmax(dim=-1) == tokens).float().mean()
            last = each_token[:, self.ends[-2] if len(self.ends) > 1 else 0 :].mean()
        return PriorOutput(loss=loss, metrics={
            "accuracy": accuracy, "bits_per_token": loss.detach() / math.log(2), "last_scale_loss": last,
        })

    # -- sampling -------------------------------------------------------------------------------

    def guidance_scale(self, cfg_scale: float, k: int) -> float:
        """The guidance scale at scale ``k`` (``cfg_schedule``)."""
        if self.cfg_schedule == "constant" or len(self.scales) == 1:
            return cfg_scale
        return 1.0 + (cfg_scale - 1.0) * k / (len(self.scales) - 1)

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
        """Sample ``(batch_size, L)`` multi-scale codes, scale by scale coarse to fine.

        ``grid_size`` may only be the last scale's grid (a multi-scale prior cannot sample
        other sizes). ``options.use_cache`` keeps the coarser scales' keys and values; both
        paths give the same tokens under the same ``generator``.
        """
        self._check_sampling(batch_size, options, iterative=False)
        if grid_size is not None and check_grid(grid_size, name=self.name) != self.grid_size:
            h, w = self.grid_size
            raise PriorInputError(
                f"{self.name} prior samples only its tokenizer's {h}x{w} code grid (the last of "
                f"{self.layout.describe()}), asked for {grid_size[0]}x{grid_size[1]}: a multi-scale prior "
                "cannot sample other sizes"
            )
        labels = self._labels(labels, batch_size)
        device = self.pos_embed.device
        guided = options.cfg_scale != 1.0
        prefix = self._sampling_prefix(labels, batch_size, device, guided=guided)
        parts = []
        with self._evaluating():
            condition = self._condition(prefix)
            x = self._first_scale(condition)
            cache = ScaleCache(self.net) if options.use_cache else None
            seen: list[torch.Tensor] = []
            f_hat = None
            for k, (h, w) in enumerate(self.scales):
                start, end = self.ends[k] - h * w, self.ends[k]
                if cache is not None:
                    hidden = cache(x, condition)
                else:
                    seen.append(x)
                    hidden = self.net(torch.cat(seen, dim=1), condition=condition,
                                      attn_mask=self.mask[:end, :end])[:, start:]
                logits = self.head(hidden).float()
                if guided:
                    logits = guide_halves(logits, self.guidance_scale(options.cfg_scale, k))
                drawn = draw(logits.reshape(batch_size * h * w, -1), options, generator, log_probs=False)
                codes = drawn.tokens.view(batch_size, h, w)
                parts.append(codes)
                if k + 1 < len(self.scales):
                    f_hat = self._accumulate(f_hat, codes)
                    x = self._next_input(f_hat, k + 1)
                    x = x.repeat(2, 1, 1) if guided else x
        return self.layout.join(parts)


def check_var_prior(config: Any) -> None:
    """Cross-field recipe check: the shared prior checks, and ``grid_size`` is the last of ``scales``
    (both are provided by a multi-scale tokenizer, so this only fires on a hand-written table)."""
    check_prior(config)
    if config.scales is not None and config.grid_size is not None \
            and tuple(config.scales[-1]) != tuple(config.grid_size):
        raise ValueError(f"grid_size {list(config.grid_size)} must be the last of scales {as_lists(config.scales)}: "
                         "a multi-scale prior samples only its tokenizer's code grid")
