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
pointing at a complete checkpoint (while a step is saved a second time, the
previous copy waits as ``step_000500.old``, which loading falls back to).

Each file's metadata holds a SHA-256 of its tensors (names, dtypes, shapes,
bytes), checked on load: a checkpoint damaged on disk is an error, not
silently wrong weights.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import attrs
import torch

from vqtk.errors import VqtkError
from vqtk.io.files import DIGEST, FORMAT, fsync_dir, read_safetensors, tensor_digest, write_safetensors  # noqa: F401
from vqtk.io.module_state import component_state, load_component_state, load_state_strict  # noqa: F401 - re-exported
from vqtk.io.state import decode_state, encode_state

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
LAST = "last"
#: metadata key (and tensor-name prefix) of non-tensor extra state
EXTRA = "extra_state"
_STEP_NAME = re.compile(r"step_\d+")


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
        try:
            return int(self.metadata.get("step", "0"))
        except ValueError:
            raise VqtkError(f"{self.path}: corrupt metadata (step {self.metadata.get('step')!r})") from None

    def tokenizer_state(self) -> dict[str, torch.Tensor]:
        """The tokenizer weights to use: the moving average (``ema.module.*``) when the run kept one."""
        ema = self.state_dict("ema.module")
        return ema if ema else self.state_dict("model")

    @property
    def modules(self) -> list[str]:
        """The prefixes this checkpoint stored (``model``, ``discriminator``, ``loss.gan``...)."""
        return [m for m in self.metadata.get("modules", "").split(",") if m]

    def state_dict(self, prefix: str) -> dict[str, Any]:
        """The state stored under ``prefix.`` (e.g. ``model`` or ``discriminator``), extra state included."""
        p = prefix + "."
        out = {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}
        out.update({k[len(p):]: v for k, v in self.extra_state.items() if k.startswith(p)})
        return out

    @property
    def extra_state(self) -> dict[str, Any]:
        text = self.metadata.get(EXTRA)
        if not text:
            return {}
        tensors = {k: v for k, v in self.tensors.items() if k.startswith(EXTRA + ".")}
        try:
            return decode_state(tensors, text)
        except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            raise VqtkError(f"{self.path}: corrupt extra state ({type(exc).__name__}: {exc})") from None


def _split_extra(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of a state dict, and the entries that are not tensors (``get_extra_state`` values)."""
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    return tensors, {k: v for k, v in state.items() if not torch.is_tensor(v)}


def save_checkpoint(
    root: Path,
    step: int,
    modules: dict[str, torch.nn.Module | dict[str, Any]],
    metadata: dict[str, str],
    train_state: Any = None,
    keep: int = 2,
) -> Path:
    """Write ``root/step_XXXXXX`` atomically, point ``root/last`` at it, keep the newest ``keep``.

    ``modules`` maps a prefix to a module (its whole ``state_dict``) or to a
    ready state dict (e.g. :func:`component_state`). Extra state that is not a
    tensor (``get_extra_state`` returning numbers, strings, lists, dicts of
    tensors) is stored as JSON structure in the metadata, tensors beside the weights.
    """
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    final = root / name
    partial = root / f"{name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        everything = {f"{prefix}.{k}": v for prefix, m in modules.items()
                      for k, v in (m.state_dict() if isinstance(m, torch.nn.Module) else m).items()}
        tensors, extra = _split_extra(everything)
        meta = {"format": FORMAT, "step": str(step), "modules": ",".join(modules), **metadata}
        if extra:
            extra_tensors, meta[EXTRA] = encode_state(extra, prefix=EXTRA)
            tensors.update(extra_tensors)
        write_safetensors(tensors, partial / MODEL_FILE, meta)
        if train_state is not None:
            state_tensors, skeleton = encode_state(train_state)
            write_safetensors(state_tensors, partial / STATE_FILE, {"format": FORMAT, "state": skeleton})
        fsync_dir(partial)
    except BaseException:
        # a full disk: give the space back; ``last`` still names the previous checkpoint
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if final.exists():  # same step saved again (e.g. interrupt right after a periodic save)
        old = root / f"{name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)
    fsync_dir(root)
    tmp = root / f"{LAST}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / LAST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(root)
    _prune(root, keep, protect=name)
    return final


def _prune(root: Path, keep: int, protect: str) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name[5:].isdigit())
    for old in steps[:-keep] if keep > 0 else []:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)
    # leftovers of writes a kill interrupted
    for stale in [*root.glob("step_*.partial"), *root.glob("step_*.old")]:
        if stale.is_dir() and stale.name.split(".")[0] != protect:
            shutil.rmtree(stale, ignore_errors=True)


def _complete(folder: Path) -> bool:
    return (folder / MODEL_FILE).is_file()


def _newest_complete(root: Path) -> Optional[Path]:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name[5:].isdigit() and _complete(p))
    return steps[-1] if steps else None


def _follow_last(last: Path) -> Path:
    """The step folder ``last`` names (or its ``.old`` copy while a re-save was cut short)."""
    root = last.parent
    try:
        name = last.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise VqtkError(f"{last}: unreadable ({exc})") from None
    if not _STEP_NAME.fullmatch(name):
        raise VqtkError(f"{last}: does not name a step folder (holds {name[:40]!r})")
    target = root / name
    if _complete(target):
        return target
    old = root / f"{name}.old"
    if _complete(old):  # killed while the same step was being saved again
        return old
    newest = _newest_complete(root)
    hint = f"; the newest complete checkpoint is {newest}" if newest is not None else ""
    raise VqtkError(f"{last}: points at {name}, which has no {MODEL_FILE}{hint}")


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
            return _follow_last(last)
    raise VqtkError(f"{p}: no checkpoint here (expected {MODEL_FILE}, or checkpoints/{LAST})")


def load_checkpoint(path: str | Path, with_train_state: bool = False) -> Checkpoint:
    """Load a checkpoint's tensors and metadata (and training state) without unpickling."""
    folder = resolve_checkpoint(path)
    model_file = folder / MODEL_FILE if folder.is_dir() else folder
    tensors, metadata = read_safetensors(model_file)
    state = None
    if with_train_state:
        state_file = folder / STATE_FILE
        if not state_file.is_file():
            raise VqtkError(f"{folder}: no {STATE_FILE}; this checkpoint cannot resume training")
        st, smeta = read_safetensors(state_file)
        try:
            state = decode_state(st, smeta["state"])
        except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            raise VqtkError(f"{state_file}: corrupt training state ({type(exc).__name__}: {exc})") from None
    return Checkpoint(path=folder, tensors=tensors, metadata=metadata, train_state=state)
