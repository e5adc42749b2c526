"""Nested state (optimizer state dicts, RNG states, counters) stored in safetensors, no pickle.

Tensors go into the safetensors file under generated keys; the structure around
them (dicts with int or str keys, lists, numbers, strings) goes into the file's
metadata as JSON. Loading therefore never executes anything.
"""

from __future__ import annotations

import json
from typing import Any

import torch

_T = "__tensor__"
_D = "__dict__"
_TUP = "__tuple__"


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """A JSON-able skeleton of ``obj``; its tensors are moved into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_T: key}
    if isinstance(obj, dict):
        return {_D: [[k, flatten(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUP: [flatten(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [flatten(v, tensors, prefix) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if _T in skeleton:
            return tensors[skeleton[_T]]
        if _D in skeleton:
            return {k: unflatten(v, tensors) for k, v in skeleton[_D]}
        if _TUP in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton[_TUP])
        raise ValueError("malformed state skeleton")
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def encode_state(state: Any, prefix: str = "s") -> tuple[dict[str, torch.Tensor], str]:
    """``(tensors, json_text)`` for a nested state."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors, prefix)
    return tensors, json.dumps(skeleton)


def decode_state(tensors: dict[str, torch.Tensor], text: str) -> Any:
    return unflatten(json.loads(text), tensors)
