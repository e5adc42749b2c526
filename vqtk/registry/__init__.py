"""The plugin registry: pluggy hooks, entry-point loading, and component lookup."""

from vqtk.registry.forwarding import forwards_arguments
from vqtk.registry.hookspecs import hookimpl, hookspec
from vqtk.registry.registry import (
    ENTRY_POINT_GROUP,
    ComponentSpec,
    ConverterSpec,
    PluginRecord,
    Registry,
    default_registry,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ComponentSpec",
    "ConverterSpec",
    "PluginRecord",
    "Registry",
    "default_registry",
    "forwards_arguments",
    "hookimpl",
    "hookspec",
]
