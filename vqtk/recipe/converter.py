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
import typing
from types import SimpleNamespace
from typing import Any

import attrs
import cattrs
from cattrs.cols import is_mapping
from cattrs.errors import StructureHandlerNotFoundError

from vqtk.errors import RecipeError
from vqtk.recipe.schema import ComponentRef, LossRef
from vqtk.recipe.values import (
    TYPE_NAMES,
    Problem,
    Problems,
    collect,
    is_fixed_tuple,
    is_literal,
    is_var_sequence,
    literal_hook,
    show,
    strict_scalar,
    toml_key,
)
from vqtk.registry import Registry

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


class RecipeConverter:
    """Structures raw recipe dicts against a registry's components."""

    def __init__(self, registry: Registry):
        self.registry = registry
        c = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
        for t in TYPE_NAMES:
            c.register_structure_hook(t, strict_scalar(t))
        c.register_structure_hook_func(is_literal, literal_hook)
        c.register_structure_hook_func(is_fixed_tuple, self._fixed_tuple)
        c.register_structure_hook_func(is_var_sequence, self._sequence)
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
            raise Problem(f"expected a table, got {show(value)}")
        problems: list[tuple[str, str]] = []
        fields = self._fields(t)
        for key in value:
            if key not in fields:
                hint = difflib.get_close_matches(str(key), list(fields), n=1)
                text = f"unknown key; did you mean {hint[0]!r}?" if hint else "unknown key"
                text += f" (allowed: {', '.join(sorted(fields))})" if fields else ""
                problems.append((f".{toml_key(str(key))}", text))
        kwargs: dict[str, Any] = {}
        for name, field in fields.items():
            if name not in value:
                if field.default is attrs.NOTHING:
                    problems.append((f".{name}", "required field missing"))
                continue
            try:
                kwargs[name] = self.c.structure(value[name], field.type)
            except (Problem, Problems, StructureHandlerNotFoundError) as exc:
                collect(problems, f".{name}", exc)
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
            raise Problems(problems)
        # fields are valid: the class's own cross-field checks (__attrs_post_init__) run now
        try:
            with attrs.validators.disabled():
                return t(**kwargs)
        except (ValueError, TypeError) as exc:
            raise Problem(str(exc)) from None

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
            raise Problem(f"expected an array of {len(args)}, got {show(value)}")
        if len(value) != len(args):
            raise Problem(f"expected an array of {len(args)}, got {len(value)} items")
        return tuple(self._items(((f"[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))))

    def _sequence(self, value: Any, t: Any) -> Any:
        (item_t, *_) = typing.get_args(t) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise Problem(f"expected an array, got {show(value)}")
        items = self._items(((f"[{i}]", v, item_t) for i, v in enumerate(value)))
        return items if typing.get_origin(t) is list else tuple(items)

    def _mapping_factory(self, t: Any) -> Any:
        key_t, value_t = (typing.get_args(t) or (str, Any))[:2]

        def hook(value: Any, _t: Any) -> Any:
            if not isinstance(value, dict):
                raise Problem(f"expected a table, got {show(value)}")
            if key_t is not str:
                raise StructureHandlerNotFoundError(f"mapping keys of type {key_t}", key_t)
            items = self._items(((f".{toml_key(str(k))}", v, value_t) for k, v in value.items()))
            return dict(zip(value, items))

        return hook

    def _items(self, entries) -> list:
        """Structure ``(subpath, value, type)`` entries, collecting every item's problems."""
        out: list = []
        problems: list[tuple[str, str]] = []
        for sub, value, t in entries:
            try:
                out.append(self.c.structure(value, t))
            except (Problem, Problems, StructureHandlerNotFoundError) as exc:
                collect(problems, sub, exc)
        if problems:
            raise Problems(problems)
        return out

    def _component(self, value: Any, t: type) -> ComponentRef:
        kind = t.kind
        if not isinstance(value, dict):
            article = "an" if kind[0] in "aeiou" else "a"
            raise Problem(f"expected {article} {kind} table with a 'type' key, got {show(value)}")
        if "type" not in value:
            available = ", ".join(self.registry.names(kind)) or "(none)"
            raise Problem(f"required field missing; available {kind} types: {available}", ".type")
        name = value["type"]
        if not isinstance(name, str):
            raise Problem(f"expected string, got {show(name)}", ".type")
        try:
            spec = self.registry.get(kind, name)
        except Exception as exc:  # unknown or ambiguous name
            raise Problem(str(exc), ".type") from None
        fields = {k: v for k, v in value.items() if k != "type"}
        extra: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        if issubclass(t, LossRef) and "weight" in fields:
            try:
                extra["weight"] = strict_scalar(float)(fields.pop("weight"), float)
            except Problem as exc:
                problems.append((".weight", str(exc)))
        try:
            config = self._attrs_class(fields, spec.config)
        except (Problem, Problems) as exc:
            collect(problems, "", exc)
        if problems:
            raise Problems(problems)
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
        except (Problem, Problems, StructureHandlerNotFoundError) as exc:
            problems: list[tuple[str, str]] = []
            collect(problems, "", exc)
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


def _clean_path(path: str) -> str:
    return path.lstrip(".") or "(recipe)"
