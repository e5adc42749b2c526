"""The run folder every built-in converter writes: a step-0 stage-1 checkpoint and its ``recipe.toml``.

``vqtk.load(out)``, ``vqtk eval``, ``vqtk run --resume`` and stage 2 then read it as
any trained tokenizer's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from vqtk.errors import VqtkError
from vqtk.io.checkpoint import save_checkpoint
from vqtk.version import __version__


def new_run_folder(out: str | Path) -> Path:
    """``out`` as a path, refused (``--out``) when it already holds a run or a converted checkpoint.

    Called before the source is read, so a wrong ``--out`` costs nothing.
    """
    out = Path(out)
    if (out / "checkpoints").exists() or (out / "recipe.toml").exists():
        raise VqtkError(f"--out: {out} already holds a run or a converted checkpoint; choose a new folder")
    return out


def write_converted_run(out: Path, modules: dict[str, nn.Module], *, recipe_text: str, source: str) -> Path:
    """Write ``modules`` (``"model"``, optionally ``"discriminator"``) as step 0 of the run folder ``out``
    with ``recipe_text`` (stored in the checkpoint and as ``out/recipe.toml``); ``source`` says where the
    weights came from. Returns the step folder."""
    metadata = {
        "recipe": recipe_text,
        "versions": json.dumps({"vqtk": __version__, "torch": torch.__version__}),
        "stage": "1",
        "source": source,
    }
    out.mkdir(parents=True, exist_ok=True)
    folder = save_checkpoint(out / "checkpoints", 0, modules, metadata)
    (out / "recipe.toml").write_text(recipe_text)
    return folder
