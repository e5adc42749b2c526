"""Strict structuring of recipe data into attrs classes, with every error reported at once.

cattrs structures each value (strict scalars: no ``"1"`` -> ``1`` coercion;
literals, tuples, optionals); this module walks tables and arrays itself so
that every problem in every table is collected, each with its path: unknown
keys, wrong types, missing fields, validator failures (run on each field as
soon as it structures) and cross-field checks (run once a table's fields are
all valid). Component tables are dispatched on their ``type`` through the
registry.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import typing
from types import SimpleNamespace
from typing import Any, Literal

import attrs
import cattrs
from cattrs.cols import is_mapping
from cattrs.errors import StructureHandlerNotFoundError

from vqtk.errors import RecipeError
from vqtk.recipe.schema import ComponentRef, LossRef
from vqtk.registry import Registry

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


class _Problems(ValueError):
    """Every problem found in a table or array: ``(subpath, message)`` pairs."""

    def __init__(self, items: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {m}" for p, m in items))
        self.items = items


def _defaults(fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in fields:
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            if not default.takes_self:
                out[field.name] = default.factory()
        elif default is not attrs.NOTHING:
            out[field.name] = default
    return out


def _collect(problems: list[tuple[str, str]], prefix: str, exc: Exception) -> None:
    """Add the problems of ``exc`` (raised while structuring the value at ``prefix``) to ``problems``."""
    if isinstance(exc, _Problems):
        problems.extend((prefix + sub, msg) for sub, msg in exc.items)
    elif isinstance(exc, _Problem):
        problems.append((prefix + exc.subpath, str(exc)))
    elif isinstance(exc, StructureHandlerNotFoundError):
        # the component's config class, not the recipe, is at fault
        problems.append((prefix, f"the component's config has a field of type {_type_name(exc.type_)}, "
                                 "which a recipe cannot hold (a bug in the plugin that registered it)"))
    else:
        raise exc


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
        problems: list[tuple[str, str]] = []
        fields = self._fields(t)
        for key in value:
            if key not in fields:
                hint = difflib.get_close_matches(str(key), list(fields), n=1)
                text = f"unknown key; did you mean {hint[0]!r}?" if hint else "unknown key"
                text += f" (allowed: {', '.join(sorted(fields))})" if fields else ""
                problems.append((f".{_key(str(key))}", text))
        kwargs: dict[str, Any] = {}
        for name, field in fields.items():
            if name not in value:
                if field.default is attrs.NOTHING:
                    problems.append((f".{name}", "required field missing"))
                continue
            try:
                kwargs[name] = self.c.structure(value[name], field.type)
            except (_Problem, _Problems, StructureHandlerNotFoundError) as exc:
                _collect(problems, f".{name}", exc)
        # each field's validators, as soon as it structured; a validator that compares with
        # another field sees that field's value or default (and is skipped if it failed)
        view = SimpleNamespace(**{**_defaults(fields.values()), **kwargs})
        for name in list(kwargs):
            field = fields[name]
            if field.validator is None:
                continue
            try:
                field.validator(view, field, kwargs[name])
            except (ValueError, TypeError) as exc:
                problems.append((f".{name}", str(exc)))
            except AttributeError:
                if all(f in kwargs for f in fields if f in value):
                    raise
        if problems:
            raise _Problems(problems)
        # fields are valid: the class's own cross-field checks (__attrs_post_init__) run now
        try:
            with attrs.validators.disabled():
                return t(**kwargs)
        except (ValueError, TypeError) as exc:
            raise _Problem(str(exc)) from None

    def _fields(self, t: type) -> dict[str, attrs.Attribute]:
        """``t``'s fields with string annotations (``from __future__ import annotations``) resolved."""
        fields = self._attrs_fns.get(t)
        if fields is None:
            try:
                attrs.resolve_types(t)
            except NameError as exc:
                raise StructureHandlerNotFoundError(f"unresolvable annotation in {t.__qualname__}: {exc}", t)
            fields = self._attrs_fns[t] = {f.name: f for f in attrs.fields(t)}
        return fields

    def _fixed_tuple(self, value: Any, t: Any) -> tuple:
        args = typing.get_args(t)
        if not isinstance(value, (list, tuple)):
            raise _Problem(f"expected an array of {len(args)}, got {show(value)}")
        if len(value) != len(args):
            raise _Problem(f"expected an array of {len(args)}, got {len(value)} items")
        return tuple(self._items(((f"[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))))

    def _sequence(self, value: Any, t: Any) -> Any:
        (item_t, *_) = typing.get_args(t) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise _Problem(f"expected an array, got {show(value)}")
        items = self._items(((f"[{i}]", v, item_t) for i, v in enumerate(value)))
        return items if typing.get_origin(t) is list else tuple(items)

    def _mapping_factory(self, t: Any) -> Any:
        key_t, value_t = (typing.get_args(t) or (str, Any))[:2]

        def hook(value: Any, _t: Any) -> Any:
            if not isinstance(value, dict):
                raise _Problem(f"expected a table, got {show(value)}")
            if key_t is not str:
                raise StructureHandlerNotFoundError(f"mapping keys of type {key_t}", key_t)
            items = self._items(((f".{_key(str(k))}", v, value_t) for k, v in value.items()))
            return dict(zip(value, items))

        return hook

    def _items(self, entries) -> list:
        """Structure ``(subpath, value, type)`` entries, collecting every item's problems."""
        out: list = []
        problems: list[tuple[str, str]] = []
        for sub, value, t in entries:
            try:
                out.append(self.c.structure(value, t))
            except (_Problem, _Problems, StructureHandlerNotFoundError) as exc:
                _collect(problems, sub, exc)
        if problems:
            raise _Problems(problems)
        return out

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
        problems: list[tuple[str, str]] = []
        if issubclass(t, LossRef) and "weight" in fields:
            try:
                extra["weight"] = _strict_scalar(float)(fields.pop("weight"), float)
            except _Problem as exc:
                problems.append((".weight", str(exc)))
        try:
            config = self._attrs_class(fields, spec.config)
        except (_Problem, _Problems) as exc:
            _collect(problems, "", exc)
        if problems:
            raise _Problems(problems)
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
            return self.c.structure(data, cls)
        except (_Problem, _Problems, StructureHandlerNotFoundError) as exc:
            problems: list[tuple[str, str]] = []
            _collect(problems, "", exc)
            raise RecipeError(f"{_clean_path(path)}: {message}" for path, message in problems) from None

    def unstructure(self, obj: Any) -> Any:
        return _drop_none(self.c.unstructure(obj))


def _drop_none(value: Any) -> Any:
    """TOML has no null: ``None`` means "use the default" and is left out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


def _key(key: str) -> str:
    """A table key as TOML writes it: bare when it can be, else quoted (never spanning lines)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _type_name(t: Any) -> str:
    return t.__qualname__ if isinstance(t, type) else str(t).replace("typing.", "")


def _clean_path(path: str) -> str:
    return path.lstrip(".") or "(recipe)"
