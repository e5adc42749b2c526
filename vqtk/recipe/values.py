"""Values in recipes: strict scalar and literal checks, and the problems they report.

Each hook raises :class:`Problem` (one message at a sub-path) or :class:`Problems`
(several); :func:`collect` gathers them with their paths for the converter.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import typing
from typing import Any, Literal

from cattrs.errors import StructureHandlerNotFoundError

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "string"}


def show(value: Any) -> str:
    """A value as it would appear in TOML, for error messages."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # quoted, with newlines escaped: one line
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def as_lists(value: Any) -> Any:
    """``value`` with every tuple and list, nested ones too, as a list: how TOML arrays hold it."""
    return [as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


class Problem(ValueError):
    """A problem at a (sub)path of the value being structured."""

    def __init__(self, message: str, subpath: str = ""):
        super().__init__(message)
        self.subpath = subpath


class Problems(ValueError):
    """Every problem found in a table or array: ``(subpath, message)`` pairs."""

    def __init__(self, items: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {m}" for p, m in items))
        self.items = items


def collect(problems: list[tuple[str, str]], prefix: str, exc: Exception) -> None:
    """Add the problems of ``exc`` (raised while structuring the value at ``prefix``) to ``problems``."""
    if isinstance(exc, Problems):
        problems.extend((prefix + sub, msg) for sub, msg in exc.items)
    elif isinstance(exc, Problem):
        problems.append((prefix + exc.subpath, str(exc)))
    elif isinstance(exc, StructureHandlerNotFoundError):
        # the component's config class, not the recipe, is at fault
        problems.append((prefix, f"the component's config has a field of type {type_name(exc.type_)}, "
                                 "which a recipe cannot hold (a bug in the plugin that registered it)"))
    else:
        raise exc


def strict_scalar(t: type):
    name = TYPE_NAMES[t]

    def hook(value: Any, _t: Any) -> Any:
        if t is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                _fail(name, value)
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                raise Problem(f"expected a finite number, got {value}") from None
            if not math.isfinite(number):
                raise Problem(f"expected a finite number, got {show(value)}")
            return number
        if t is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            if ok and not _INT64_MIN <= value <= _INT64_MAX:
                # Python ints are unbounded; torch, numpy and safetensors metadata are not
                raise Problem(f"{value} is out of range (integers must fit in 64 bits)")
        else:
            ok = isinstance(value, t)
        return value if ok else _fail(name, value)

    return hook


def _fail(expected: str, value: Any):
    raise Problem(f"expected {expected}, got {show(value)}")


def literal_hook(value: Any, t: Any) -> Any:
    options = typing.get_args(t)
    if value in options and type(value) in {type(o) for o in options}:
        return value
    listed = ", ".join(show(o) for o in options)
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [o for o in options if isinstance(o, str)], n=1)
        hint = f"; did you mean {show(close[0])}?" if close else ""
    raise Problem(f"expected one of {listed}, got {show(value)}{hint}")


def is_literal(t: Any) -> bool:
    return typing.get_origin(t) is Literal


def is_fixed_tuple(t: Any) -> bool:
    args = typing.get_args(t)
    return typing.get_origin(t) is tuple and bool(args) and args[-1] is not Ellipsis


def is_var_sequence(t: Any) -> bool:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    return origin in (list, tuple) and (origin is list or (len(args) == 2 and args[1] is Ellipsis))


def toml_key(key: str) -> str:
    """A table key as TOML writes it: bare when it can be, else quoted (never spanning lines)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def type_name(t: Any) -> str:
    return t.__qualname__ if isinstance(t, type) else str(t).replace("typing.", "")
