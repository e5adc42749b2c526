"""Helpers for writing component config classes (attrs) that recipes are structured into.

Validators here raise ``ValueError`` with a short message and no field name;
the recipe loader adds the dotted path (``model.quantizer.codebook_size: must
be > 0, got 0``) and reports every failing field at once::

    @attrs.define(kw_only=True)
    class MyQuantizerConfig:
        dim: int = attrs.field(validator=positive)
        codebook_size: int = attrs.field(default=1024, validator=positive)
"""

from __future__ import annotations

from typing import Any, Callable, Iterable


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def positive(_inst: Any, _attr: Any, value: Any) -> None:
    """Number > 0 (``None`` passes, for optional fields)."""
    if value is not None and not value > 0:
        raise ValueError(f"must be > 0, got {_show(value)}")


def non_negative(_inst: Any, _attr: Any, value: Any) -> None:
    """Number >= 0 (``None`` passes)."""
    if value is not None and not value >= 0:
        raise ValueError(f"must be >= 0, got {_show(value)}")


def in_range(low: float, high: float) -> Callable[[Any, Any, Any], None]:
    """Number in the closed interval ``[low, high]`` (``None`` passes)."""

    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if value is not None and not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {_show(value)}")

    return check


def each(check: Callable[[Any, Any, Any], None]) -> Callable[[Any, Any, Any], None]:
    """Apply ``check`` to every item of a sequence, naming the failing index."""

    def run(inst: Any, attr: Any, values: Iterable[Any]) -> None:
        for i, value in enumerate(values or ()):
            try:
                check(inst, attr, value)
            except ValueError as exc:
                raise ValueError(f"[{i}] {exc}") from None

    return run


def non_empty(_inst: Any, _attr: Any, value: Any) -> None:
    """A non-empty sequence or string."""
    if value is not None and len(value) == 0:
        raise ValueError("must not be empty")
