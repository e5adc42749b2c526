"""One declaration of keyword arguments that several components share: ``forwards_arguments``.

A component's keyword-only signature is its recipe schema (see
:mod:`vqtk.registry.signature`). When two components share a set of
arguments (taming's encoder and decoder their layout, the two priors their
transformer sizes), :func:`forwards_arguments` lets each declare only its own
arguments plus ``**kwargs`` that it hands on to the one place declaring the
shared ones: the shared arguments' types, validators, defaults and docs are
written once, and every tool reading the signature (the registry, ``help()``,
``inspect.signature``) still sees one flat list of keyword-only arguments.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, TypeVar

from vqtk.registry.signature import argument_docs

F = TypeVar("F", bound=Callable[..., Any])


def forwards_arguments(to: Callable[..., Any]) -> Callable[[F], F]:
    """Decorator for ``__init__(self, *, own..., **rest)`` whose ``**rest`` all go to ``to``.

    ``to`` is a class (its ``__init__``) or a function with keyword-only
    arguments. The decorated function keeps its body and gets a signature
    (``__signature__``), resolved annotations and an ``Args`` docstring listing
    ``to``'s keyword-only arguments before its own, in place of ``**rest``.
    Raises ``TypeError`` when the function has no ``**rest`` or repeats one of
    ``to``'s arguments.
    """
    source = to.__init__ if inspect.isclass(to) else to
    shared = [p for p in inspect.signature(source).parameters.values() if p.kind is p.KEYWORD_ONLY]
    shared_hints = typing.get_type_hints(source, include_extras=True)
    _, shared_docs = argument_docs(to)

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        rest = [p for p in params if p.kind is p.VAR_KEYWORD]
        if not rest:
            raise TypeError(f"{fn.__qualname__} needs a **kwargs parameter to forward to {to.__qualname__}")
        names = {p.name for p in params}
        repeated = [p.name for p in shared if p.name in names]
        if repeated:
            raise TypeError(f"{fn.__qualname__} repeats {', '.join(repeated)}, declared by {to.__qualname__}")
        hints = {p.name: shared_hints[p.name] for p in shared if p.name in shared_hints}
        own_hints = typing.get_type_hints(fn, include_extras=True)
        hints.update((k, v) for k, v in own_hints.items() if k not in (rest[0].name, "return"))
        leading = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        own = [p for p in params if p.kind is p.KEYWORD_ONLY]
        merged = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in shared + own]
        fn.__signature__ = signature.replace(parameters=leading + merged)  # type: ignore[attr-defined]
        fn.__annotations__ = hints
        lines = [f"    {p.name}: {shared_docs[p.name]}" for p in shared if p.name in shared_docs]
        head = inspect.cleandoc(fn.__doc__ or f"Takes the arguments of {to.__qualname__} as well as its own.")
        fn.__doc__ = "\n".join([head, "", "Args:", *lines]) if lines else head
        return fn

    return decorate
