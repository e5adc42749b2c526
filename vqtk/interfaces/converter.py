"""Converter: another project's checkpoint format <-> vqtk checkpoints.

A converter is registered by a plugin's ``vqtk_register_converters`` hook::

    @hookimpl
    def vqtk_register_converters(register):
        register(LlamaGenConverter())

and is then used by name: ``vqtk convert llamagen CKPT --out DIR`` imports,
``vqtk convert to-llamagen CKPT --out FILE`` exports (when the converter can),
``vqtk convert`` lists the installed converters, and ``vqtk.load(path)`` of a
file that a converter :meth:`~Converter.recognizes` loads it in memory through
:meth:`~Converter.load`. The core never names a converter: it asks the registry.

Extra command-line options are declared, not parsed: ``import_options`` (and
``export_options``) is an attrs class whose fields are made with :func:`option`.
``vqtk convert`` turns each field into a flag (``config_out`` -> ``--config-out``;
a ``bool`` defaulting to ``False`` -> ``--NAME``, one defaulting to ``True`` ->
``--no-NAME``), checks each value with the field's validator (a ``ValueError``
becomes ``--flag: message``, exit 2) and passes the options instance to the
converter. Supported field types: ``bool``, ``int``, ``float``, ``str``,
``pathlib.Path``, ``Literal[...]`` (choices) and ``Optional[...]`` of those.
"""

from __future__ import annotations

import abc
import inspect
import re
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Optional, Union

import attrs

from vqtk.errors import VqtkError

#: attrs field metadata key of a command-line option (see :func:`option`)
OPTION = "vqtk_option"
_SCALARS = (bool, int, float, str, Path)
_NAME = re.compile(r"[a-z][a-z0-9_-]*")


@attrs.frozen
class ConversionResult:
    """What a conversion wrote: the file or checkpoint folder, and lines for the user.

    Attributes:
        path: the vqtk checkpoint folder (import) or the foreign file (export).
        summary: human-readable lines that ``vqtk convert`` prints, e.g. what
            architecture was found and how to load the result.
    """

    path: Path
    summary: tuple[str, ...] = ()


@attrs.frozen
class NoOptions:
    """Options of a direction that takes none besides the checkpoint and ``--out``."""


def option(default: Any = None, *, help: str, metavar: Optional[str] = None,
           validator: Optional[Callable[[Any, Any, Any], None]] = None) -> Any:
    """An attrs field that ``vqtk convert`` offers as a command-line flag.

    Args:
        default: the value when the flag is absent; ``attrs.NOTHING`` makes the
            flag required.
        help: one line for ``vqtk convert NAME --help``.
        metavar: the value's placeholder in the help (``YAML``, ``N``).
        validator: an attrs validator (e.g. ``vqtk.config.positive``) raising
            ``ValueError("must be > 0, got 0")``; the CLI prefixes the flag.
    """
    return attrs.field(default=default, validator=validator, metadata={OPTION: (help, metavar)})


@attrs.frozen
class OptionSpec:
    """One declared option as the command line sees it (:func:`option_specs`)."""

    name: str
    flag: str
    type: type
    default: Any
    help: str
    metavar: Optional[str] = None
    choices: Optional[tuple[Any, ...]] = None
    validator: Optional[Callable[[Any, Any, Any], None]] = None
    field: Any = None

    @property
    def required(self) -> bool:
        return self.default is attrs.NOTHING


def _value_type(annotation: Any, where: str) -> tuple[type, Optional[tuple[Any, ...]]]:
    """``(scalar type, choices)`` of an option annotation, or ``TypeError`` naming it."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Union and len(args) == 2 and type(None) in args:  # Optional[X]
        return _value_type(next(a for a in args if a is not type(None)), where)
    if origin is Literal and args and len({type(a) for a in args}) == 1 and type(args[0]) in _SCALARS:
        return type(args[0]), tuple(args)
    if annotation in _SCALARS:
        return annotation, None
    shown = annotation.__name__ if isinstance(annotation, type) else repr(annotation)
    raise TypeError(f"{where}: option type {shown} is not supported "
                    "(bool, int, float, str, pathlib.Path, Literal[...] or Optional of those)")


def option_specs(options: type) -> list[OptionSpec]:
    """The command-line options an options class declares; ``TypeError`` for one the CLI cannot offer."""
    if not (isinstance(options, type) and attrs.has(options)):
        raise TypeError(f"options must be an attrs class, got {options!r}")
    attrs.resolve_types(options)
    specs = []
    for f in attrs.fields(options):
        where = f"{options.__name__}.{f.name}"
        if OPTION not in f.metadata:
            raise TypeError(f"{where}: declare it with vqtk.interfaces.converter.option(..., help=...)")
        help_text, metavar = f.metadata[OPTION]
        kind, choices = _value_type(f.type, where)
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            raise TypeError(f"{where}: an option's default must be a plain value")
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            if default not in (False, True):
                raise TypeError(f"{where}: a bool option needs the default False (--NAME) or True (--no-NAME)")
            flag = flag if default is False else "--no-" + flag[2:]
        specs.append(OptionSpec(name=f.name, flag=flag, type=kind, default=default, help=help_text,
                                metavar=metavar, choices=choices, validator=f.validator, field=f))
    return specs


def first_paragraph(text: Optional[str]) -> str:
    """The first paragraph of a docstring, joined into one line."""
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split())


class Converter(abc.ABC):
    """Converts checkpoints of another project to vqtk checkpoints (and, optionally, back).

    Subclass it, set :attr:`name` and, when the conversion takes options,
    :attr:`import_options` / :attr:`export_options`; implement
    :meth:`import_checkpoint`, and :meth:`export_checkpoint` when exporting is
    possible. :meth:`recognizes` and :meth:`load` let ``vqtk.load`` read the
    foreign file directly. The class docstring's first line is what
    ``vqtk convert`` lists; the first paragraph of :meth:`import_checkpoint`'s
    (:meth:`export_checkpoint`'s) docstring describes ``vqtk convert NAME``
    (``to-NAME``) in its ``--help``.

    ``registry`` is the :class:`vqtk.registry.Registry` to build components
    and structure recipes with (typed ``Any`` here: that layer sits above the
    interfaces). Errors the user can fix (unreadable file, unsupported
    architecture) are :class:`vqtk.VqtkError`; anything else raised here is a
    bug in the plugin.
    """

    #: ``vqtk convert NAME`` (also ``from-NAME``); ``to-NAME`` exports. Lowercase letters,
    #: digits, ``_`` and ``-``, starting with a letter.
    name: ClassVar[str]
    #: attrs class of the import's extra options (fields made with :func:`option`)
    import_options: ClassVar[type] = NoOptions
    #: attrs class of the export's extra options; ``None``: this converter only imports
    export_options: ClassVar[Optional[type]] = None

    @property
    def can_export(self) -> bool:
        return self.export_options is not None

    def recognizes(self, path: Path) -> bool:
        """Whether ``path`` (an existing file) is in this converter's format.

        Be specific, cheaply: check the suffix and, where several formats share
        it, a small part of the contents. Two converters recognising one file
        make ``vqtk.load`` refuse it (the user picks with ``vqtk convert NAME``).
        The default recognises nothing.
        """
        return False

    @abc.abstractmethod
    def import_checkpoint(self, source: Path, out: str | Path, options: Any, *,
                          registry: Any) -> ConversionResult:
        """Write ``source`` (a foreign checkpoint) as the vqtk checkpoint folder ``out``.

        ``options`` is an instance of :attr:`import_options`. ``out`` must be a
        folder that ``vqtk.load(out)`` reads afterwards (``vqtk.io.checkpoint.
        save_checkpoint(out / "checkpoints", ...)`` writes one). Refuse an ``out``
        that already holds a run.
        """

    def export_checkpoint(self, checkpoint: str | Path, out: str | Path, options: Any, *,
                          registry: Any) -> ConversionResult:
        """Write the vqtk checkpoint ``checkpoint`` in the foreign format at ``out``.

        ``options`` is an instance of :attr:`export_options`.
        """
        raise VqtkError(f"converter {self.name!r} only imports; there is no to-{self.name}")

    def load(self, path: Path, *, registry: Any) -> tuple[Any, Any]:
        """``(VQGAN, Recipe)``: the model (weights loaded, any mode) and its recipe, from a file
        :meth:`recognizes` accepted.

        Nothing is written. The default refuses: such a converter's files are
        converted with ``vqtk convert NAME`` first.
        """
        raise VqtkError(f"{path}: converter {self.name!r} does not load files directly; run "
                        f"`vqtk convert {self.name} {path} --out DIR` and load DIR")


def check_converter(converter: Any) -> None:
    """Raise ``TypeError`` naming what makes ``converter`` unusable: not a :class:`Converter`
    instance, a name ``vqtk convert`` cannot take, or options it cannot offer as flags."""
    if not isinstance(converter, Converter):
        raise TypeError(f"converter {converter!r} is not an instance of a vqtk.interfaces.Converter subclass")
    name = getattr(converter, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.startswith(("to-", "from-")):
        raise TypeError(f"converter name {name!r} must be lowercase letters, digits, '_' and '-', "
                        "starting with a letter and not with 'to-' or 'from-'")
    for attr in ("import_options", "export_options"):
        options = getattr(converter, attr)
        if options is not None or attr == "import_options":
            try:
                option_specs(options)
            except TypeError as exc:
                raise TypeError(f"converter {name!r}: {attr}: {exc}") from None
