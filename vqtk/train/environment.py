"""Devices, precision, seeds and the RNG state that exact resumption restores."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

from vqtk.errors import VqtkError


def pick_device(name: str, where: str = "train.device") -> torch.device:
    """A device this machine has: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda[:N]``, ``mps``, ``xpu[:N]``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise VqtkError(f"{where}: {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VqtkError(f"{where}: {name!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VqtkError(f"{where}: {name!r} requested but this machine has "
                            f"{torch.cuda.device_count()} CUDA devices")
        return device
    backend = {"mps": getattr(torch.backends, "mps", None), "xpu": getattr(torch, "xpu", None)}.get(device.type)
    if backend is None or not backend.is_available():
        raise VqtkError(f"{where}: {name!r} requested but it is not available here (use auto, cpu or cuda)")
    return device


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16 (disabled, i.e. a pass-through, otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *[int(x) if i < 2 else float(x) for i, x in enumerate(np_state[2:])]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
