"""Reading other projects' pickled PyTorch checkpoints without running code from them.

``torch.save`` files (Lightning ``.ckpt``, ``.pt``, ``.pth``) are pickles: loading
one with plain ``pickle`` imports and calls whatever the file names, so a
crafted file runs arbitrary code. :func:`read_torch_file` first tries
``torch.load(weights_only=True)``; when that refuses a file because it holds
foreign objects beside the tensors (OmegaConf configs, Lightning callbacks,
numpy scalars), it loads it again with the restricted unpickler below:

- globals on a short allow-list resolve to vqtk's own safe versions of
  torch's tensor-rebuild functions, plain containers, dtypes and devices;
- storages are read by torch's own ``persistent_load`` (the ``Storage`` class
  names are mapped by torch's wrapper before they reach this unpickler);
- every other global becomes a fresh :class:`Placeholder` subclass named after
  it. Nothing is imported; building, calling, ``__setstate__``, item setting
  and appending on a placeholder do nothing, so ``os.system`` in a
  ``__reduce__`` yields an inert object instead of a shell command.

This module doubles as the ``pickle_module`` handed to ``torch.load``: it
defines ``Unpickler`` and ``load``.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import logging
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from vqtk.errors import VqtkError

log = logging.getLogger("vqtk")

class Placeholder:
    """An inert stand-in for a class the checkpoint names but vqtk does not import.

    ``foreign`` (on each generated subclass) is the ``module.name`` the file
    referred to. Instances keep nothing the pickle hands them.
    """

    foreign = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "Placeholder":
        return Placeholder()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __reduce__(self) -> tuple:
        return (Placeholder, ())

    def __repr__(self) -> str:
        return f"<placeholder for {self.foreign}>"


def _placeholder_class(module: str, name: str) -> type:
    qualified = f"{module}.{name}"
    return type(f"Placeholder[{qualified}]", (Placeholder,), {"foreign": qualified, "__module__": __name__})


def _require_storage(storage: Any) -> None:
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"tensor data is not a torch storage but {type(storage).__name__}")


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any) -> torch.Tensor:
    _require_storage(storage)
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    # hooks and python-level metadata are dropped: a checkpoint's tensors are data
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter data is not a tensor but {type(data).__name__}")
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): __import__("codecs").encode,  # protocol-2 pickles of bytes
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


def _torch_constant(name: str) -> Any:
    """``torch.float32``, ``torch.strided``, ``torch.contiguous_format``...: plain values, nothing callable."""
    value = getattr(torch, name, None) if not name.startswith("_") else None
    if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
        return value
    return None


class Unpickler(pickle.Unpickler):
    """A pickle unpickler that never imports: allow-listed globals or inert placeholders."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = str(module), str(name)
        # protocol <= 2 pickles (torch.save's default) use Python 2 names: __builtin__.set...
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch":
            constant = _torch_constant(name)
            if constant is not None:
                return constant
        _FOREIGN_SEEN.add(f"{module}.{name}")
        return _placeholder_class(module, name)


# foreign globals seen by the current read_torch_file call (torch builds its own
# Unpickler subclass instances, so the names are gathered here)
_FOREIGN_SEEN: set[str] = set()


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` with :class:`Unpickler` (torch's legacy format reads headers with it)."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    """``pickle.loads`` with :class:`Unpickler`."""
    return load(io.BytesIO(data), **kwargs)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_torch_file(path: str | Path) -> tuple[Any, list[str]]:
    """The object a ``torch.save`` file holds, loaded on the CPU without running code from it.

    Returns ``(object, foreign)``: ``foreign`` lists the ``module.name`` of the
    globals replaced by placeholders (empty when ``weights_only`` loading
    sufficed). Raises :class:`VqtkError` (one line) when the file cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise VqtkError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError as exc:
        first = exc
    except Exception as exc:  # not a torch file, truncated, wrong format...
        first = exc
    log.debug("%s: weights_only loading failed (%s); retrying with placeholders for foreign objects",
              path, _one_line(first))
    _FOREIGN_SEEN.clear()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=sys.modules[__name__])
    except Exception as exc:
        raise VqtkError(f"{path}: cannot read this checkpoint ({_one_line(exc)})") from None
    foreign = sorted(_FOREIGN_SEEN)
    _FOREIGN_SEEN.clear()
    if foreign:
        shown = ", ".join(foreign[:6]) + (f" and {len(foreign) - 6} more" if len(foreign) > 6 else "")
        log.info("%s: skipped %d foreign object type(s) without importing them: %s", path.name, len(foreign), shown)
    return obj, foreign


def find_state_dict(obj: Any, path: str | Path, key: str = "state_dict") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: ``obj[key]`` (Lightning), or ``obj`` itself when it maps names to tensors.

    Raises :class:`VqtkError` naming the first entry that is not a tensor.
    """
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
        sd, where = obj[key], f"{key}"
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, where = obj, "top level"
    else:
        kind = type(obj).__name__
        keys = f" (keys: {', '.join(map(str, list(obj)[:6]))})" if isinstance(obj, dict) else ""
        raise VqtkError(f"{path}: no {key!r} dict of tensors in this checkpoint; it holds a {kind}{keys}")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        k = bad[0]
        raise VqtkError(
            f"{path}: {where} entry {k!r} is a {type(sd[k]).__name__}, not a tensor "
            f"({len(bad)} such entr{'y' if len(bad) == 1 else 'ies'})"
        )
    # detached: whatever hooks or grad state the pickle attached to a tensor stay behind
    return {k: v.detach() for k, v in sd.items()}


__all__: list[str] = ["Placeholder", "Unpickler", "find_state_dict", "load", "loads", "read_torch_file"]


def pickle_head(path: str | Path, limit: int = 16 << 20) -> bytes:
    """The first ``limit`` bytes of a ``torch.save`` file's pickle (empty when unreadable); runs nothing."""
    try:
        if zipfile.is_zipfile(path):  # torch >= 1.6: the pickle is the archive's data.pkl
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not names:
                    return b""
                with archive.open(min(names, key=len)) as member:
                    return member.read(limit)
        with open(path, "rb") as file:  # the legacy format: pickles first, tensor data after them
            return file.read(limit)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return b""
