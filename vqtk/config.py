"""Validators for component arguments and config fields, each with a readable constraint.

A component's keyword arguments are its recipe schema; attach a validator where
the argument is declared, with :data:`typing.Annotated`::

    from typing import Annotated
    from vqtk.config import positive

    class MyQuantizer(Quantizer):
        def __init__(self, *, dim: Annotated[int, positive] = 256, ...): ...

The explicit attrs-config form takes the same validators
(``attrs.field(default=1024, validator=positive)``). Validators raise
``ValueError`` with a short message and no field name; the recipe loader adds
the dotted path (``model.quantizer.codebook_size: must be > 0, got 0``) and
reports every failing field at once. Each validator carries a ``constraint``
string that ``vqtk describe`` prints (``> 0``, ``in [0, 1]``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

Validator = Callable[[Any, Any, Any], None]


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def constraint(text: str) -> Callable[[Validator], Validator]:
    """Decorator: attach the human-readable ``text`` (``"> 0"``) to a validator."""

    def mark(check: Validator) -> Validator:
        check.constraint = text  # type: ignore[attr-defined]
        return check

    return mark


def describe(check: Any) -> str:
    """The constraint text of a validator (or a list of them), for docs and ``vqtk describe``."""
    if check is None:
        return ""
    if isinstance(check, (list, tuple)):
        return ", ".join(t for t in (describe(c) for c in check) if t)
    inner = getattr(check, "_validators", None)  # attrs.validators.and_
    if inner is not None:
        return describe(list(inner))
    return getattr(check, "constraint", "") or getattr(check, "__name__", "").strip("_").replace("_", " ")


@constraint("> 0")
def positive(_inst: Any, _attr: Any, value: Any) -> None:
    """Number > 0 (``None`` passes, for optional fields)."""
    if value is not None and not value > 0:
        raise ValueError(f"must be > 0, got {_show(value)}")


@constraint(">= 0")
def non_negative(_inst: Any, _attr: Any, value: Any) -> None:
    """Number >= 0 (``None`` passes)."""
    if value is not None and not value >= 0:
        raise ValueError(f"must be >= 0, got {_show(value)}")


def at_least(low: float) -> Validator:
    """Number >= ``low`` (``None`` passes)."""

    @constraint(f">= {low}")
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if value is not None and not value >= low:
            raise ValueError(f"must be >= {low}, got {_show(value)}")

    return check


def in_range(low: float, high: float) -> Validator:
    """Number in the closed interval ``[low, high]`` (``None`` passes)."""

    @constraint(f"in [{low}, {high}]")
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if value is not None and not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {_show(value)}")

    return check


@constraint("in [0, 1)")
def fraction(_inst: Any, _attr: Any, value: Any) -> None:
    """A probability in ``[0, 1)`` (dropout rates; ``None`` passes)."""
    if value is not None and not 0 <= value < 1:
        raise ValueError(f"must be >= 0 and < 1, got {_show(value)}")


@constraint("in (0, 1)")
def open_unit_interval(_inst: Any, _attr: Any, value: Any) -> None:
    """Number strictly between 0 and 1 (decays; ``None`` passes)."""
    if value is not None and not 0 < value < 1:
        raise ValueError(f"must be strictly between 0 and 1, got {_show(value)}")


def each(check: Validator) -> Validator:
    """Apply ``check`` to every item of a sequence, naming the failing index."""

    @constraint(f"each {describe(check)}".strip())
    def run(inst: Any, attr: Any, values: Iterable[Any]) -> None:
        for i, value in enumerate(values or ()):
            try:
                check(inst, attr, value)
            except ValueError as exc:
                raise ValueError(f"[{i}] {exc}") from None

    return run


@constraint("not empty")
def non_empty(_inst: Any, _attr: Any, value: Any) -> None:
    """A non-empty sequence or string."""
    if value is not None and len(value) == 0:
        raise ValueError("must not be empty")


@constraint("a power of two >= 2")
def power_of_two(_inst: Any, _attr: Any, value: Any) -> None:
    """An integer power of two, at least 2 (``None`` passes)."""
    if value is not None and (value < 2 or value & (value - 1)):
        hint = f" (e.g. {2 ** max(1, math.ceil(math.log2(value)))})" if value > 0 else ""
        raise ValueError(f"must be a power of two >= 2, got {value!r}{hint}")
