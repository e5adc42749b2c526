"""The hooks a vqtk plugin can implement.

A plugin is any object or module with functions marked ``@vqtk.hookimpl``.
Installed plugins are found through the ``vqtk`` entry-point group::

    [project.entry-points.vqtk]
    my_plugin = "my_package"          # module holding the hookimpls
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

import pluggy

PROJECT = "vqtk"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The ``register`` callable handed to :func:`vqtk_register_components`."""

    def __call__(
        self,
        kind: str,
        name: str,
        *,
        config: type,
        build: Callable[[Any], Any],
        doc: Optional[str] = None,
    ) -> None:
        """Register a component.

        Args:
            kind: one of ``encoder, quantizer, decoder, discriminator, loss, prior, data``.
            name: the name recipes use in ``type = "..."``; unique per kind.
            config: an attrs class; a recipe table (minus ``type``) is structured
                into it strictly.
            build: ``build(config) -> component``; the component must subclass the
                kind's base class from :mod:`vqtk.interfaces`.
            doc: one-line description for ``vqtk list``; defaults to the first
                line of ``build``'s or ``config``'s docstring.
        """


class RegisterConverter(Protocol):
    """The ``register`` callable handed to :func:`vqtk_register_converters`."""

    def __call__(self, converter: Any, *, doc: Optional[str] = None) -> None:
        """Register a converter under its ``name`` (``vqtk convert NAME``; unique across plugins).

        Args:
            converter: an instance of a :class:`vqtk.interfaces.Converter` subclass.
            doc: one-line description for ``vqtk convert``'s list; defaults to the
                first line of the converter class's docstring.
        """


class VqtkHookSpec:
    @hookspec
    def vqtk_register_components(self, register: Register) -> None:
        """Register components by calling ``register(kind, name, config=..., build=...)``."""

    @hookspec
    def vqtk_register_converters(self, register: RegisterConverter) -> None:
        """Register checkpoint converters by calling ``register(converter)``.

        Loaded like components, one plugin at a time: a plugin whose hook raises,
        or that reuses a taken converter name, is reported by ``vqtk plugins``
        and registers nothing, and the other plugins still load.
        """
