"""Class conditioning by a prefix token, and the base class of the built-in priors.

:class:`ClassTokens` places class, start and null tokens in the vocabulary;
:class:`ConditionalPrior` declares the arguments both priors take (their shared
recipe fields) and sets the tokens up, with label dropout and the input checks
that depend on them; :func:`check_prior` is both priors' cross-field recipe check.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, ClassVar, Iterator, Optional

import torch

from vqtk.config import each, fraction, non_negative, positive
from vqtk.interfaces import Prior, SamplingOptions
from vqtk_builtins.priors.checks import check_batch_size, check_indices, check_labels, check_options


class ClassTokens:
    """Token ids of the conditioning prefix, placed after the ids a prior already uses.

    ``first_id`` is the first free id. With ``num_classes > 0`` class ``c`` is
    token ``first_id + c`` and, when ``label_dropout > 0``, the null class
    (classifier-free guidance) is ``first_id + num_classes``. Unconditional
    priors get a single learned start token ``first_id`` if ``always_prefix``
    (autoregressive priors need one), else no prefix at all.
    """

    def __init__(self, *, first_id: int, num_classes: int, label_dropout: float, always_prefix: bool):
        self.first_id = first_id
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.has_prefix = num_classes > 0 or always_prefix
        self.has_null = num_classes > 0 and label_dropout > 0
        self.null_id = first_id + num_classes if self.has_null else None
        #: how many vocabulary ids the prefix needs
        self.num_tokens = (max(num_classes, 1) if self.has_prefix else 0) + int(self.has_null)

    def prefix(self, labels: Optional[torch.Tensor], batch_size: int, device: torch.device) -> Optional[torch.Tensor]:
        """The ``(B, 1)`` prefix for ``labels`` (checked beforehand), or ``None`` without one."""
        if not self.has_prefix:
            return None
        if labels is None:
            return torch.full((batch_size, 1), self.first_id, dtype=torch.long, device=device)
        return (labels.to(device=device, dtype=torch.long) + self.first_id)[:, None]

    def null_prefix(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """The ``(B, 1)`` null-class prefix (only when the prior has one)."""
        assert self.null_id is not None
        return torch.full((batch_size, 1), self.null_id, dtype=torch.long, device=device)

    def drop(self, prefix: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Training-time label dropout: each class token becomes the null class with probability ``label_dropout``."""
        if prefix is None or not self.has_null:
            return prefix
        dropped = torch.rand(prefix.shape, device=prefix.device) < self.label_dropout
        return prefix.masked_fill(dropped, self.null_id)


class ConditionalPrior(Prior):
    """What the built-in priors share: sizes, class tokens (``classes``), label dropout and input checks.

    Its keyword-only arguments are the ones both priors take (each prior's
    ``__init__`` forwards them here with
    :func:`~vqtk.registry.forwarding.forwards_arguments`), so each
    default, validator and doc is declared once. Checks ``dim % heads`` and
    that ``label_dropout > 0`` comes with classes, then places the class tokens
    after the codes and the ``extra_ids`` the subclass uses (see
    :class:`ClassTokens`). Subclasses set ``name``, ``extra_ids`` and
    ``always_prefix`` and build the network. ``codebook_size`` and
    ``grid_size`` are provided by the tokenizer the prior models (a recipe may
    leave them out).

    Args:
        codebook_size: number of codes of the tokenizer (its quantizer's codebook_size); for
            maskgit, id codebook_size is the mask token.
        grid_size: code grid (rows, columns) it is trained on: image size / downsampling factor.
        dim: transformer width.
        depth: transformer blocks (decoder blocks for gpt, encoder blocks for maskgit).
        heads: attention heads; dim must be divisible by heads.
        dropout: dropout on embeddings, attention and feed-forward layers.
        num_classes: class labels for a class-conditional prior; 0 = unconditional.
        label_dropout: probability of replacing a label by the null class in training (needed
            for cfg_scale != 1).
    """

    name: str
    #: token ids right after the codes that the prior uses itself (maskgit's mask token)
    extra_ids: ClassVar[int] = 0
    #: an unconditional prior still starts with a learned token (autoregressive priors need one)
    always_prefix: ClassVar[bool] = False

    def __init__(
        self,
        *,
        codebook_size: Annotated[int, positive],
        grid_size: Annotated[tuple[int, int], each(positive)],
        dim: Annotated[int, positive] = 512,
        depth: Annotated[int, positive] = 8,
        heads: Annotated[int, positive] = 8,
        dropout: Annotated[float, fraction] = 0.0,
        num_classes: Annotated[int, non_negative] = 0,
        label_dropout: Annotated[float, fraction] = 0.0,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if label_dropout > 0 and num_classes == 0:
            raise ValueError("label_dropout > 0 needs num_classes > 0 (it trains the null class of guidance)")
        self.codebook_size = codebook_size
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.dim = dim
        self.depth = depth
        self.heads = heads
        self.dropout = dropout
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.classes = ClassTokens(
            first_id=codebook_size + self.extra_ids, num_classes=num_classes, label_dropout=label_dropout,
            always_prefix=self.always_prefix,
        )

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) while sampling, then back to the mode the prior was in."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def _labels(self, labels: Optional[torch.Tensor], batch_size: int) -> Optional[torch.Tensor]:
        """``labels`` checked against ``num_classes`` (``None`` for unconditional priors)."""
        return check_labels(labels, name=self.name, batch_size=batch_size, num_classes=self.num_classes)

    def _tokens(
        self, indices: torch.Tensor, labels: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Checked training input: ``indices (B, h, w)`` flattened to ``(B, h * w)`` int64 tokens, and the labels."""
        check_indices(indices, name=self.name, codebook_size=self.codebook_size, grid_size=self.grid_size)
        batch = indices.shape[0]
        labels = self._labels(labels, batch)
        return indices.reshape(batch, -1).long(), labels

    def _training_prefix(
        self, labels: Optional[torch.Tensor], batch_size: int, device: torch.device
    ) -> Optional[torch.Tensor]:
        """The class prefix of a loss, with label dropout in training mode."""
        prefix = self.classes.prefix(labels, batch_size, device)
        return self.classes.drop(prefix) if self.training else prefix

    def _check_sampling(self, batch_size: int, options: SamplingOptions, *, iterative: bool) -> None:
        """Batch size and sampling options checked against what this prior supports."""
        check_batch_size(batch_size, name=self.name)
        check_options(
            options, name=self.name, num_classes=self.num_classes,
            label_dropout=self.label_dropout, iterative=iterative,
        )

    def _sampling_prefix(
        self, labels: Optional[torch.Tensor], batch_size: int, device: torch.device, *, guided: bool
    ) -> Optional[torch.Tensor]:
        """The class prefix of sampling; ``guided`` appends the null-class prefix (batch ``2 * batch_size``)."""
        prefix = self.classes.prefix(labels, batch_size, device)
        if guided:
            prefix = torch.cat((prefix, self.classes.null_prefix(batch_size, device)), dim=0)
        return prefix


def stack_blocks(attn_layers: torch.nn.Module) -> list[torch.nn.Module]:
    """Each attention and feed-forward block of an x-transformers ``AttentionLayers`` stack, in order:
    what the built-in priors return from ``Prior.blocks()`` (FSDP units, checkpointed activations)."""
    return [layer[1] for layer in attn_layers.layers]


def check_prior(config: Any) -> None:
    """Cross-field check of a prior's recipe table (both priors register it as their ``check``).

    ``codebook_size`` and ``grid_size`` may be ``None`` here: the assembler
    provides them from the tokenizer, and the prior checks them when built.
    """
    if config.grid_size is not None and len(config.grid_size) != 2:
        raise ValueError(f"grid_size must be (rows, columns), got {tuple(config.grid_size)!r}")
    if config.dim % config.heads:
        raise ValueError(f"dim ({config.dim}) must be divisible by heads ({config.heads})")
    if config.label_dropout > 0 and config.num_classes == 0:
        raise ValueError(
            "label_dropout > 0 needs num_classes > 0: it trains the null class that "
            "classifier-free guidance uses"
        )
