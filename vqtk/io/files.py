"""Safetensors files written durably and read defensively: a SHA-256 of the tensors in the metadata,
checked on every read; fsync before rename; "no space left" reported as the OSError it is."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vqtk.errors import VqtkError

FORMAT = "vqtk-checkpoint-1"
DIGEST = "sha256"


def fsync_dir(path: Path) -> None:
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


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def os_error_of(exc: BaseException, path: Path) -> Optional[OSError]:
    """The OSError inside a safetensors error (it reports "No space left" as SafetensorError)."""
    match = re.search(r"os error (\d+)", str(exc))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code), str(path))


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    # safetensors refuses shared storage; clone views so every tensor owns its data
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    try:
        save_file(clean, str(path), metadata={**metadata, DIGEST: tensor_digest(clean)})
    except SafetensorError as exc:
        os_error = os_error_of(exc, path)
        if os_error is None:
            raise
        raise os_error from None
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise VqtkError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError, OverflowError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VqtkError(f"{path}: not a readable safetensors checkpoint ({reason})") from None
    if metadata.get("format") != FORMAT:
        raise VqtkError(f"{path}: not a vqtk checkpoint (format {metadata.get('format')!r})")
    expected = metadata.get(DIGEST)
    if expected is not None and tensor_digest(tensors) != expected:
        raise VqtkError(f"{path}: damaged: its tensors do not match the checksum written with them")
    return tensors, metadata


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write(tmp)`` write ``path``'s content to ``PATH.partial``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.replace(tmp, path)
