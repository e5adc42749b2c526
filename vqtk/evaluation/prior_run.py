"""A trained prior ready to sample: a stage-2 checkpoint's tokenizer and prior, and how to sample it.

Shared by ``vqtk sample`` and ``vqtk eval`` on a stage-2 run:
:func:`load_prior_checkpoint` builds both parts from the checkpoint alone (the
stored recipe names what the tokenizer provided, so no data source is needed),
:func:`check_sampling_values` refuses option values no prior could use,
:func:`recipe_sampling_options` reads the recipe's ``[prior_train]`` sampling
settings and :func:`balanced_labels` deals class labels evenly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import attrs
import torch

from vqtk.build import build_component, build_vqgan
from vqtk.errors import VqtkError
from vqtk.interfaces import Prior
from vqtk.io.checkpoint import load_checkpoint, load_state_strict
from vqtk.io.files import DIGEST
from vqtk.model import VQGAN
from vqtk.pretrained import recipe_of
from vqtk.recipe.schema import Recipe

#: what ``torch.Generator.manual_seed`` accepts
SEED_RANGE = (-(2**63), 2**64 - 1)


@attrs.define(eq=False)
class PriorCheckpoint:
    """A stage-2 checkpoint loaded for sampling: both parts in eval mode on one device."""

    path: Path
    step: int
    recipe: Recipe
    tokenizer: VQGAN
    prior: Prior
    metadata: dict[str, str]

    @property
    def digest(self) -> str:
        """The SHA-256 of the checkpoint's tensors (from its metadata): which weights made the samples."""
        return self.metadata.get(DIGEST, "")


def load_prior_checkpoint(path: str | Path, *, device: torch.device | str = "cpu",
                          registry: Any = None) -> PriorCheckpoint:
    """Tokenizer and prior of a stage-2 run folder, checkpoint folder or file, on ``device``, in eval mode.

    A stage-1 checkpoint, or one without tokenizer weights, is a one-line :class:`VqtkError`.
    """
    ckpt = load_checkpoint(path)
    if ckpt.metadata.get("stage") != "2":
        raise VqtkError(f"{ckpt.path}: a stage-1 (tokenizer) checkpoint; sample needs a stage-2 (prior) checkpoint")
    recipe = recipe_of(ckpt, registry)
    tokenizer = build_vqgan(recipe, registry)
    tok_state = ckpt.state_dict("model")
    if not tok_state:
        raise VqtkError(f"{ckpt.path}: holds no tokenizer weights")
    load_state_strict(tokenizer, tok_state, str(ckpt.path))
    prior = build_component(recipe.prior, "prior", registry)
    load_state_strict(prior, ckpt.state_dict("prior"), str(ckpt.path))
    tokenizer.to(device).eval()
    prior.to(device).eval()
    return PriorCheckpoint(path=ckpt.path, step=ckpt.step, recipe=recipe, tokenizer=tokenizer, prior=prior,
                           metadata=dict(ckpt.metadata))


def check_sampling_values(*, temperature: Optional[float] = None, top_k: Optional[int] = None,
                          top_p: Optional[float] = None, cfg_scale: Optional[float] = None,
                          steps: Optional[int] = None, seed: Optional[int] = None, cfg_option: str = "--cfg") -> None:
    """One-line errors, named by option, for sampling values no prior could use (``None``: not given)."""
    if temperature is not None and not 0 < temperature < math.inf:
        raise VqtkError(f"--temperature: must be a finite number > 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise VqtkError(f"--top-p: must be in (0, 1], got {top_p}")
    if top_k is not None and top_k <= 0:
        raise VqtkError(f"--top-k: must be > 0, got {top_k}")
    if cfg_scale is not None and (not math.isfinite(cfg_scale) or cfg_scale < 0):
        raise VqtkError(f"{cfg_option}: must be a finite number >= 0 (1 = no guidance), got {cfg_scale}")
    if steps is not None and steps <= 0:
        raise VqtkError(f"--steps: must be > 0, got {steps}")
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise VqtkError(f"--seed: must fit in 64 bits, got {seed}")


def balanced_labels(start: int, count: int, num_classes: int, device: torch.device | str = "cpu") -> \
        Optional[torch.Tensor]:
    """Labels of samples ``start .. start + count - 1``: sample ``i`` gets class ``i mod num_classes``.

    Any ``num_classes`` consecutive samples hold every class once, so ``N`` samples hold each
    class ``N // num_classes`` or one more times. ``None`` for an unconditional prior (``num_classes`` 0).
    """
    if not num_classes:
        return None
    return torch.arange(start, start + count, device=device) % num_classes
