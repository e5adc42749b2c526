"""Strict structuring of recipe data into attrs classes, with every error reported at once.

cattrs does the walking; this module makes it strict (no ``"1"`` -> ``1``
coercion, no unknown keys), dispatches component tables on their ``type``
through the registry, runs field validators, and turns cattrs' nested
exceptions into ``dotted.path: message`` lines.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import typing
from typing import Any, Literal, Optional

import attrs
import cattrs
from cattrs.cols import is_mapping, mapping_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, StructureHandlerNotFoundError
from cattrs.gen import make_dict_structure_fn
from cattrs.v import transform_error

from vqtk.errors import RecipeError
from vqtk.recipe.schema import ComponentRef, LossRef
from vqtk.registry import Registry

_EXTRA = "\x00extra\x00"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "string"}


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


class _Problem(ValueError):
    """A problem at a (sub)path of the value being structured."""

    def __init__(self, message: str, subpath: str = ""):
        super().__init__(message)
        self.subpath = subpath


def _strict_scalar(t: type):
    name = _TYPE_NAMES[t]

    def hook(value: Any, _t: Any) -> Any:
        if t is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                _fail(name, value)
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                raise _Problem(f"expected a finite number, got {value}") from None
            if not math.isfinite(number):
                raise _Problem(f"expected a finite number, got {show(value)}")
            return number
        if t is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            if ok and not _INT64_MIN <= value <= _INT64_MAX:
                # Python ints are unbounded; torch, numpy and safetensors metadata are not
                raise _Problem(f"{value} is out of range (integers must fit in 64 bits)")
        else:
            ok = isinstance(value, t)
        return value if ok else _fail(name, value)

    return hook


def _fail(expected: str, value: Any):
    raise _Problem(f"expected {expected}, got {show(value)}")


def _literal_hook(value: Any, t: Any) -> Any:
    options = typing.get_args(t)
    if value in options and type(value) in {type(o) for o in options}:
        return value
    listed = ", ".join(show(o) for o in options)
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [o for o in options if isinstance(o, str)], n=1)
        hint = f"; did you mean {show(close[0])}?" if close else ""
    raise _Problem(f"expected one of {listed}, got {show(value)}{hint}")


def _is_literal(t: Any) -> bool:
    return typing.get_origin(t) is Literal


def _is_fixed_tuple(t: Any) -> bool:
    args = typing.get_args(t)
    return typing.get_origin(t) is tuple and bool(args) and args[-1] is not Ellipsis


def _is_var_sequence(t: Any) -> bool:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    return origin in (list, tuple) and (origin is list or (len(args) == 2 and args[1] is Ellipsis))


class RecipeConverter:
    """Structures raw recipe dicts against a registry's components."""

    def __init__(self, registry: Registry):
        self.registry = registry
        c = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
        for t in _TYPE_NAMES:
            c.register_structure_hook(t, _strict_scalar(t))
        c.register_structure_hook_func(_is_literal, _literal_hook)
        c.register_structure_hook_func(_is_fixed_tuple, self._fixed_tuple)
        c.register_structure_hook_func(_is_var_sequence, self._sequence)
        c.register_structure_hook_factory(is_mapping, self._mapping_factory)
        c.register_structure_hook_func(
            lambda t: isinstance(t, type) and issubclass(t, ComponentRef), self._component
        )
        c.register_structure_hook_func(
            lambda t: isinstance(t, type) and attrs.has(t) and not issubclass(t, ComponentRef),
            self._attrs_class,
        )
        c.register_unstructure_hook_func(
            lambda t: isinstance(t, type) and issubclass(t, ComponentRef), self._unstructure_component
        )
        self.c = c
        self._attrs_fns: dict[type, Any] = {}

    # -- hooks -------------------------------------------------------------------

    def _attrs_class(self, value: Any, t: type) -> Any:
        if not isinstance(value, dict):
            raise _Problem(f"expected a table, got {show(value)}")
        fn = self._attrs_fns.get(t)
        if fn is None:
            fn = self._attrs_fns[t] = make_dict_structure_fn(t, self.c)
        # validators run afterwards (all of them, each with its path), not in __init__
        with attrs.validators.disabled():
            return fn(value, t)

    def _fixed_tuple(self, value: Any, t: Any) -> tuple:
        args = typing.get_args(t)
        if not isinstance(value, (list, tuple)):
            raise _Problem(f"expected an array of {len(args)}, got {show(value)}")
        if len(value) != len(args):
            raise _Problem(f"expected an array of {len(args)}, got {len(value)} items")
        return tuple(self._item(v, a, i) for i, (v, a) in enumerate(zip(value, args)))

    def _sequence(self, value: Any, t: Any) -> Any:
        (item_t, *_) = typing.get_args(t) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise _Problem(f"expected an array, got {show(value)}")
        items = [self._item(v, item_t, i) for i, v in enumerate(value)]
        return items if typing.get_origin(t) is list else tuple(items)

    def _mapping_factory(self, t: Any) -> Any:
        inner = mapping_structure_factory(t, self.c)

        def hook(value: Any, _t: Any) -> Any:
            if not isinstance(value, dict):
                raise _Problem(f"expected a table, got {show(value)}")
            return inner(value, _t)

        return hook

    def _item(self, value: Any, t: Any, index: int) -> Any:
        try:
            return self.c.structure(value, t)
        except _Problem as exc:
            raise _Problem(str(exc), f"[{index}]{exc.subpath}") from None

    def _component(self, value: Any, t: type) -> ComponentRef:
        kind = t.kind
        if not isinstance(value, dict):
            article = "an" if kind[0] in "aeiou" else "a"
            raise _Problem(f"expected {article} {kind} table with a 'type' key, got {show(value)}")
        if "type" not in value:
            available = ", ".join(self.registry.names(kind)) or "(none)"
            raise _Problem(f"required field missing; available {kind} types: {available}", ".type")
        name = value["type"]
        if not isinstance(name, str):
            raise _Problem(f"expected string, got {show(name)}", ".type")
        try:
            spec = self.registry.get(kind, name)
        except Exception as exc:  # unknown or ambiguous name
            raise _Problem(str(exc), ".type") from None
        fields = {k: v for k, v in value.items() if k != "type"}
        extra: dict[str, Any] = {}
        if issubclass(t, LossRef) and "weight" in fields:
            try:
                extra["weight"] = _strict_scalar(float)(fields.pop("weight"), float)
            except _Problem as exc:
                raise _Problem(str(exc), ".weight") from None
        config = self._attrs_class(fields, spec.config)
        return t(type=name, config=config, **extra)

    def _unstructure_component(self, ref: ComponentRef) -> dict:
        out: dict[str, Any] = {"type": ref.type}
        if isinstance(ref, LossRef):
            out["weight"] = ref.weight
        out.update(self.c.unstructure(ref.config))
        return out

    # -- public ------------------------------------------------------------------

    def structure(self, data: dict, cls: type) -> Any:
        """Structure ``data`` into ``cls``; raise :class:`RecipeError` listing every problem."""
        try:
            obj = self.c.structure(data, cls)
        except (ClassValidationError, _Problem, ForbiddenExtraKeysError, KeyError) as exc:
            raise RecipeError(_format(exc)) from None
        problems = validate(obj)
        if problems:
            raise RecipeError(problems)
        return obj

    def unstructure(self, obj: Any) -> Any:
        return _drop_none(self.c.unstructure(obj))


def _drop_none(value: Any) -> Any:
    """TOML has no null: ``None`` means "use the default" and is left out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


def validate(obj: Any, path: str = "") -> list[str]:
    """Run every attrs field validator in a structured tree, collecting ``path: message``."""
    problems: list[str] = []
    if isinstance(obj, ComponentRef):
        return validate(obj.config, path)
    if isinstance(obj, dict):
        for key, value in obj.items():
            problems += validate(value, f"{path}.{key}" if path else key)
        return problems
    if not attrs.has(type(obj)):
        return problems
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        where = f"{path}.{field.name}" if path else field.name
        if field.validator is not None:
            try:
                field.validator(obj, field, value)
            except (ValueError, TypeError) as exc:
                problems.append(f"{where}: {exc}")
                continue
        problems += validate(value, where)
    if hasattr(obj, "__attrs_post_init__"):
        try:
            obj.__attrs_post_init__()
        except (ValueError, TypeError) as exc:
            problems.append(f"{path or '(recipe)'}: {exc}")
    return problems


def _format_exception(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, _Problem):
        return f"{exc.subpath}\x01{exc}"
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = sorted(f.name for f in attrs.fields(exc.cl)) if attrs.has(exc.cl) else []
        return _EXTRA + "\x02".join(sorted(exc.extra_fields)) + "\x03" + "\x02".join(allowed)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, StructureHandlerNotFoundError):
        # the component's config class, not the recipe, is at fault
        return (f"the component's config has a field of type {_type_name(exc.type_)}, which a recipe "
                "cannot hold (a bug in the plugin that registered it)")
    if isinstance(exc, (ValueError, TypeError)):  # a config's own cross-field check
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _key(key: str) -> str:
    """A table key as TOML writes it: bare when it can be, else quoted (never spanning lines)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _type_name(t: Any) -> str:
    return t.__qualname__ if isinstance(t, type) else str(t).replace("typing.", "")


def _clean_path(path: str) -> str:
    path = re.sub(r"\['([^']*)'\]", r".\1", path)
    path = path[1:] if path.startswith("$") else path
    return path.lstrip(".") or "(recipe)"


def _format(exc: BaseException) -> list[str]:
    if isinstance(exc, (_Problem, ForbiddenExtraKeysError, KeyError)):
        lines = [f"{_format_exception(exc, None)} @ $"]
    else:
        lines = transform_error(exc, path="$", format_exception=_format_exception)
    out: list[str] = []
    for line in lines:
        message, _, path = line.rpartition(" @ ")
        if message.startswith(_EXTRA):
            extra, _, allowed = message[len(_EXTRA):].partition("\x03")
            options = allowed.split("\x02") if allowed else []
            for key in extra.split("\x02"):
                hint = difflib.get_close_matches(key, options, n=1)
                text = f"unknown key; did you mean {hint[0]!r}?" if hint else "unknown key"
                text += f" (allowed: {', '.join(options)})" if options else ""
                out.append(f"{_clean_path(path + '.' + _key(key))}: {text}")
        elif "\x01" in message:
            sub, _, text = message.partition("\x01")
            out.append(f"{_clean_path(path + sub)}: {text}")
        else:
            out.append(f"{_clean_path(path)}: {message}")
    return out
