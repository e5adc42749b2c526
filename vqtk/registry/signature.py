"""A component's keyword-only signature is its recipe schema.

:func:`config_from_signature` turns a component class (its ``__init__``) or a
factory function into the strict attrs class a recipe table is structured
into: one field per keyword-only argument, with the argument's annotation as
the field type, its default as the default, the validators attached with
:data:`typing.Annotated` (``Annotated[int, positive]``) as the field's
validators, and the argument's description from the docstring (Google,
reST or numpydoc ``Args`` sections) as the field's doc. Each default and each
doc is therefore written once, where the argument is declared.

A ``functools.partial`` of a component registers a variant with other
defaults (``partial(VectorQuantizer, codebook_dim=8)``).

A cross-field check (``dim`` divisible by ``heads``) is a function
``check(config)`` raising ``ValueError``, given at registration; it runs after
every field has passed its own validator.

Arguments named in ``provided`` are facts the assembler passes (a prior's
``codebook_size`` and grid come from the tokenizer it models): the recipe may
leave them out, and may repeat them only consistently.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Annotated, Any, Callable, Iterable, Optional

import attrs
import docstring_parser
import torch

from vqtk.errors import PluginError

#: field metadata keys
DOC = "vqtk_doc"
PROVIDED = "vqtk_provided"


def unwrap(target: Callable) -> Callable:
    """The class or function behind ``functools.partial`` layers."""
    while isinstance(target, functools.partial):
        target = target.func
    return target


def _no_arguments(self: Any) -> None:  # the signature of an __init__ that takes nothing
    pass


#: the __init__ a class keeps when it declares none: it takes no arguments
_ARGUMENTLESS = (object.__init__, torch.nn.Module.__init__)


def _target_function(target: Callable) -> Callable:
    target = unwrap(target)
    return target.__init__ if inspect.isclass(target) else target


def argument_docs(target: Callable) -> tuple[str, dict[str, str]]:
    """``(summary, {argument: description})`` from the docstrings of ``target`` (and its ``__init__``)."""
    target = unwrap(target)
    texts = [inspect.getdoc(target) or ""]
    if inspect.isclass(target) and target.__init__.__doc__:
        texts.append(inspect.cleandoc(target.__init__.__doc__))
    summary = ""
    docs: dict[str, str] = {}
    for text in texts:
        if not text:
            continue
        parsed = docstring_parser.parse(text)
        summary = summary or (parsed.short_description or "").strip()
        for param in parsed.params:
            if param.description and param.arg_name not in docs:
                docs[param.arg_name] = " ".join(param.description.split())
    return summary, docs


def _split_annotated(annotation: Any) -> tuple[Any, list[Callable], Optional[str]]:
    """``Annotated[T, v1, v2, "doc"]`` -> ``(T, [v1, v2], "doc")``."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation, [], None
    base, *extras = typing.get_args(annotation)
    validators = [e for e in extras if callable(e)]
    docs = [e for e in extras if isinstance(e, str)]
    return base, validators, (docs[0] if docs else None)


def config_from_signature(
    target: Callable,
    *,
    where: str,
    check: Optional[Callable[[Any], None]] = None,
    provided: Iterable[str] = (),
    doc: Optional[str] = None,
) -> type:
    """The attrs config class of ``target``'s keyword-only arguments (see the module doc).

    Raises :class:`PluginError` naming ``where`` when the signature cannot be a
    schema: positional or ``*args``/``**kwargs`` parameters, or a missing or
    unresolvable annotation.
    """
    fn = _target_function(target)
    if inspect.isclass(unwrap(target)) and fn in _ARGUMENTLESS:
        fn = _no_arguments  # a class that keeps object's or nn.Module's __init__ takes no arguments
    try:
        # a functools.partial's keywords become the defaults (still settable by a recipe)
        signature = inspect.signature(target if isinstance(target, functools.partial) else fn)
        hints = typing.get_type_hints(fn, include_extras=True)
    except (NameError, TypeError, ValueError) as exc:
        raise PluginError(f"{where}: cannot read the signature of {target!r}: {exc}") from None
    summary, docs = argument_docs(target)
    provided = set(provided)
    fields: dict[str, Any] = {}
    params = list(signature.parameters.values())
    if inspect.isclass(target):
        params = params[1:]  # self (a partial's signature has none)
    for param in params:
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise PluginError(
                f"{where}: argument {param.name!r} of {getattr(target, '__qualname__', target)} must be "
                "keyword-only (declare the arguments after a bare '*'): a recipe table names every value"
            )
        if param.name == "type":
            raise PluginError(f"{where}: an argument may not be named 'type' (the recipe uses it for the name)")
        if param.name not in hints:
            raise PluginError(f"{where}: argument {param.name!r} has no type annotation; the recipe needs one")
        base, validators, doc = _split_annotated(hints[param.name])
        metadata = {DOC: doc or docs.get(param.name, "")}
        default = param.default
        if param.name in provided:
            metadata[PROVIDED] = True
            base = Optional[base]
            default = None
        kwargs: dict[str, Any] = {"type": base, "metadata": metadata, "validator": validators or None}
        if default is not inspect.Parameter.empty:
            kwargs["default"] = default
        fields[param.name] = attrs.field(**kwargs)
    # required fields first, as attrs needs for a plain __init__ (kw_only lifts this, but keep order readable)
    name = f"{getattr(unwrap(target), '__name__', 'Component')}Config"
    body: dict[str, Any] = {"__doc__": doc or summary}
    if check is not None:
        def __attrs_post_init__(self: Any) -> None:  # noqa: N807 - attrs hook
            check(self)

        body["__attrs_post_init__"] = __attrs_post_init__
    cls = attrs.make_class(name, fields, bases=(object,), kw_only=True, class_body=body)
    cls.__vqtk_target__ = target
    return cls


def arguments(config: Any) -> dict[str, Any]:
    """The keyword arguments a structured config stands for (one per field)."""
    return {f.name: getattr(config, f.name) for f in attrs.fields(type(config))}


def field_doc(field: attrs.Attribute) -> str:
    return field.metadata.get(DOC, "") if field.metadata else ""


def is_provided(field: attrs.Attribute) -> bool:
    return bool(field.metadata and field.metadata.get(PROVIDED))
