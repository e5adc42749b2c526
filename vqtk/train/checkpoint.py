"""Checkpoints: safetensors files written atomically, loaded without unpickling.

Layout of a run's ``checkpoints/`` folder::

    checkpoints/
      step_000500/
        model.safetensors        model (+ discriminator) weights and buffers;
                                 metadata: resolved recipe (TOML), versions, step
        train_state.safetensors  optimizers, RNG states, data position, counters
      last                       text file naming the newest complete step folder

A step folder is written as ``step_000500.partial`` and renamed when complete;
``last`` is replaced atomically afterwards. A kill at any moment leaves ``last``
pointing at a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import attrs
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqtk.errors import VqtkError
from vqtk.train.state_io import decode_state, encode_state

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
LAST = "last"
FORMAT = "vqtk-checkpoint-1"


@attrs.define
class Checkpoint:
    """A loaded checkpoint: tensors by module prefix, its metadata, and optional training state."""

    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    train_state: Optional[Any] = None

    @property
    def recipe_toml(self) -> str:
        return self.metadata.get("recipe", "")

    @property
    def step(self) -> int:
        return int(self.metadata.get("step", "0"))

    def tokenizer_state(self) -> dict[str, torch.Tensor]:
        """The tokenizer weights to use: the moving average (``ema.module.*``) when the run kept one."""
        ema = self.state_dict("ema.module")
        return ema if ema else self.state_dict("model")

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors stored under ``prefix.`` (e.g. ``model`` or ``discriminator``)."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    # safetensors refuses shared storage; clone views so every tensor owns its data
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    save_file(clean, str(path), metadata=metadata)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(
    root: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    metadata: dict[str, str],
    train_state: Any = None,
    keep: int = 2,
) -> Path:
    """Write ``root/step_XXXXXX`` atomically, point ``root/last`` at it, keep the newest ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    final = root / name
    partial = root / f"{name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    tensors = {f"{prefix}.{k}": v for prefix, m in modules.items() for k, v in m.state_dict().items()}
    meta = {"format": FORMAT, "step": str(step), "modules": ",".join(modules), **metadata}
    _save_safetensors(tensors, partial / MODEL_FILE, meta)
    if train_state is not None:
        state_tensors, skeleton = encode_state(train_state)
        _save_safetensors(state_tensors, partial / STATE_FILE, {"format": FORMAT, "state": skeleton})
    _fsync_dir(partial)
    if final.exists():  # same step saved again (e.g. interrupt right after a periodic save)
        old = root / f"{name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)
    _fsync_dir(root)
    tmp = root / f"{LAST}.tmp"
    tmp.write_text(name + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, root / LAST)
    _fsync_dir(root)
    _prune(root, keep, protect=name)
    return final


def _prune(root: Path, keep: int, protect: str) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name[5:].isdigit())
    for old in steps[:-keep] if keep > 0 else []:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, its ``checkpoints`` folder, a step folder or a ``model.safetensors`` file -> step folder."""
    p = Path(path)
    if p.is_file():
        if p.name == LAST:
            return resolve_checkpoint(p.parent)
        return p.parent if p.name in (MODEL_FILE, STATE_FILE) else p
    if not p.exists():
        raise VqtkError(f"{p}: no such checkpoint file or folder")
    if (p / MODEL_FILE).is_file():
        return p
    for root in (p / "checkpoints", p):
        last = root / LAST
        if last.is_file():
            target = root / last.read_text().strip()
            if (target / MODEL_FILE).is_file():
                return target
            raise VqtkError(f"{last}: points at {target.name}, which has no {MODEL_FILE}")
    raise VqtkError(f"{p}: no checkpoint here (expected {MODEL_FILE}, or checkpoints/{LAST})")


def load_checkpoint(path: str | Path, with_train_state: bool = False) -> Checkpoint:
    """Load a checkpoint's tensors and metadata (and training state) without unpickling."""
    folder = resolve_checkpoint(path)
    model_file = folder / MODEL_FILE if folder.is_dir() else folder
    tensors, metadata = _read_safetensors(model_file)
    state = None
    if with_train_state:
        state_file = folder / STATE_FILE
        if not state_file.is_file():
            raise VqtkError(f"{folder}: no {STATE_FILE}; this checkpoint cannot resume training")
        st, smeta = _read_safetensors(state_file)
        try:
            state = decode_state(st, smeta["state"])
        except (KeyError, ValueError, json.JSONDecodeError) as exc:
            raise VqtkError(f"{state_file}: corrupt training state ({exc})") from None
    return Checkpoint(path=folder, tensors=tensors, metadata=metadata, train_state=state)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise VqtkError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise VqtkError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise VqtkError(f"{path}: not a vqtk checkpoint (format {metadata.get('format')!r})")
    return tensors, metadata
