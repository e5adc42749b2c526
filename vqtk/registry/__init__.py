"""The plugin registry: pluggy hooks, entry-point loading, and component lookup."""

from vqtk.registry.hookspecs import hookimpl, hookspec
from vqtk.registry.registry import (
    ENTRY_POINT_GROUP,
    ComponentSpec,
    PluginRecord,
    Registry,
    default_registry,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ComponentSpec",
    "PluginRecord",
    "Registry",
    "default_registry",
    "hookimpl",
    "hookspec",
]
