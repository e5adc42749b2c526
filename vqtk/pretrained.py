"""Loading trained tokenizers as a library: ``vqtk.load(path)``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from vqtk.build import build_vqgan
from vqtk.errors import RecipeError, VqtkError
from vqtk.io.checkpoint import Checkpoint, load_checkpoint, load_state_strict
from vqtk.model import VQGAN
from vqtk.recipe import Recipe, recipe_from_dict
from vqtk.registry import Registry, default_registry

log = logging.getLogger("vqtk")


#: component tables inference never builds: a checkpoint loads without their plugins
TRAINING_ONLY = ("loss", "model.discriminator")


def _provenance(checkpoint) -> dict[str, dict[str, str]]:
    try:
        found = json.loads(checkpoint.metadata.get("components", "{}"))
    except json.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def _provider(info: Any) -> str:
    """``plugin 'x' (pip install vqtk-x==1.0)``, from a checkpoint's component provenance."""
    if not isinstance(info, dict) or not info.get("plugin"):
        return "an unknown plugin"
    dist, version = info.get("distribution"), info.get("version")
    hint = f" (pip install {dist}{'==' + version if version else ''})" if dist else ""
    return f"plugin {info['plugin']!r}{hint}"


def _drop_training_only(data: dict, checkpoint, registry: Registry) -> dict:
    """``data`` without the training-only component tables whose type is not installed (each a warning)."""
    provenance = _provenance(checkpoint)
    tables: list[tuple[str, dict, str, str]] = []  # (path, parent table, key, kind)
    for name, table in (data.get("loss") or {}).items():
        tables.append((f"loss.{name}", data["loss"], name, "loss"))
    if isinstance(data.get("model"), dict) and "discriminator" in data["model"]:
        tables.append(("model.discriminator", data["model"], "discriminator", "discriminator"))
    for path, parent, key, kind in tables:
        table = parent.get(key)
        name = table.get("type") if isinstance(table, dict) else None
        if isinstance(name, str) and name not in registry.names(kind):
            log.warning("%s: %s %r is not installed (%s); it is only needed for training, so it is left out",
                        path, kind, name, _provider(provenance.get(path)))
            del parent[key]
    return data


def recipe_of(checkpoint, registry: Optional[Registry] = None, *, inference: bool = True) -> Recipe:
    """The recipe stored in a checkpoint, validated against the installed plugins.

    With ``inference`` (loading, evaluating, sampling, converting), losses and
    the discriminator whose plugins are not installed are left out with a
    warning: only what inference builds must be installed. Errors about a
    missing component name the plugin and the pip distribution that provided it.
    """
    registry = registry or default_registry()
    try:
        data = tomllib.loads(checkpoint.recipe_toml)
    except tomllib.TOMLDecodeError as exc:
        raise VqtkError(f"{checkpoint.path}: stored recipe is not valid TOML ({exc})") from None
    if inference:
        data = _drop_training_only(data, checkpoint, registry)
    try:
        return recipe_from_dict(data, registry)
    except RecipeError as exc:
        provenance = _provenance(checkpoint)
        lines = []
        for problem in exc.problems:
            path = problem.split(": ")[0].removesuffix(".type")
            lines.append(problem + (f" (written with {_provider(provenance[path])})" if path in provenance else ""))
        hint = ""
        try:
            written = json.loads(checkpoint.metadata.get("versions", "{}")).get("plugins", {})
        except (json.JSONDecodeError, AttributeError):
            written = {}
        absent = [f"{name} {version}".strip() for name, version in written.items() if name not in registry.plugins]
        if absent:
            hint = f" (written with plugins not installed here: {', '.join(absent)})"
        raise VqtkError(
            f"{checkpoint.path}: its recipe does not validate with the installed plugins{hint}:\n" + "\n".join(lines)
        ) from None


def load(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: Optional[torch.dtype] = None,
    registry: Optional[Registry] = None,
) -> VQGAN:
    """A trained VQGAN from a run folder, checkpoint folder or ``model.safetensors``, in eval mode.

    Another project's checkpoint file (a taming-transformers ``.ckpt``, say)
    loads too when an installed converter recognises it: converted in memory by
    the converter, nothing written (``vqtk convert NAME`` writes it as a vqtk
    checkpoint instead; ``vqtk convert`` lists the converters).
    ``device`` defaults to CUDA when available; ``dtype`` to float32.
    """
    registry = registry or default_registry()
    p = Path(path)
    converter = registry.converter_for(p) if p.is_file() else None
    if converter is not None:
        model, recipe = converter.converter.load(p, registry=registry)
    else:
        ckpt = _load_vqtk_checkpoint(p, registry)
        recipe = recipe_of(ckpt, registry)
        model = build_vqgan(recipe, registry)
        load_state_strict(model, ckpt.tokenizer_state(), str(ckpt.path))
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device=device, dtype=dtype or torch.float32).eval()
    model.recipe = recipe  # type: ignore[attr-defined]
    return model


def _load_vqtk_checkpoint(path: Path, registry: Registry) -> Checkpoint:
    """:func:`load_checkpoint`, saying which converters were asked about a foreign-looking file."""
    try:
        return load_checkpoint(path)
    except VqtkError as exc:
        if not path.is_file() or path.suffix == ".safetensors":
            raise
        names = ", ".join(s.name for s in registry.converters()) or "none installed"
        raise VqtkError(f"{exc}; no converter recognises this file either (converters: {names})") from None
