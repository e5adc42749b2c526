"""Loading trained tokenizers as a library: ``vqtk.load(path)``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from vqtk.build import build_vqgan
from vqtk.errors import RecipeError, VqtkError
from vqtk.model import VQGAN
from vqtk.recipe import Recipe, recipe_from_dict
from vqtk.registry import Registry


def recipe_of(checkpoint, registry: Optional[Registry] = None) -> Recipe:
    """The recipe stored in a checkpoint, validated against the installed plugins."""
    try:
        data = tomllib.loads(checkpoint.recipe_toml)
    except tomllib.TOMLDecodeError as exc:
        raise VqtkError(f"{checkpoint.path}: stored recipe is not valid TOML ({exc})") from None
    try:
        return recipe_from_dict(data, registry)
    except RecipeError as exc:
        hint = ""
        try:
            written = json.loads(checkpoint.metadata.get("versions", "{}")).get("plugins", {})
        except (json.JSONDecodeError, AttributeError):
            written = {}
        from vqtk.registry import default_registry

        installed = (registry or default_registry()).plugins
        absent = [f"{name} {version}".strip() for name, version in written.items() if name not in installed]
        if absent:
            hint = f" (written with plugins not installed here: {', '.join(absent)})"
        raise VqtkError(
            f"{checkpoint.path}: its recipe does not validate with the installed plugins{hint}:\n{exc}"
        ) from None


def load_state_strict(module: torch.nn.Module, state: dict, where: str) -> None:
    """Load a state dict, naming mismatched tensors in a one-line error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]))
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:5])}")
        raise VqtkError(f"{where}: weights do not match the model ({'; '.join(parts)})")
    module.load_state_dict(state)


def load(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: Optional[torch.dtype] = None,
    registry: Optional[Registry] = None,
) -> VQGAN:
    """A trained VQGAN from a run folder, checkpoint folder or ``model.safetensors``, in eval mode.

    A taming-transformers VQModel checkpoint (``.ckpt``, ``.pt``, ``.pth``) loads
    too: converted in memory with its architecture inferred from the weights,
    without running code from the pickle (``vqtk convert taming`` writes it as a
    vqtk checkpoint instead). ``device`` defaults to CUDA when available;
    ``dtype`` to float32.
    """
    from vqtk.interop.taming import TAMING_SUFFIXES, load_taming_model
    from vqtk.train.checkpoint import load_checkpoint

    p = Path(path)
    if p.is_file() and p.suffix.lower() in TAMING_SUFFIXES:
        model, recipe = load_taming_model(p, registry)
    else:
        ckpt = load_checkpoint(path)
        recipe = recipe_of(ckpt, registry)
        model = build_vqgan(recipe, registry)
        load_state_strict(model, ckpt.tokenizer_state(), str(ckpt.path))
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device=device, dtype=dtype or torch.float32).eval()
    model.recipe = recipe  # type: ignore[attr-defined]
    return model
