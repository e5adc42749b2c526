"""Loads plugins one by one and keeps the components and converters they register.

Unlike pluggy's ``load_setuptools_entrypoints``, a plugin that fails to import
or to register is recorded and reported instead of stopping every other plugin.

Why this module is long: loading a plugin is one all-or-nothing transaction
over both hooks (components and converters), and every lookup shares its
records (which plugin provided what, names two plugins claim, plugins that
failed); split up, that state would be passed between modules.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import attrs
import pluggy

from vqtk.errors import PluginBug, PluginError, VqtkError
from vqtk.interfaces import KINDS
from vqtk.interfaces.converter import Converter, check_converter
from vqtk.registry.hookspecs import PROJECT, VqtkHookSpec
from vqtk.registry.signature import arguments, config_from_signature, unwrap

ENTRY_POINT_GROUP = "vqtk"
#: Comma-separated entry-point names to load; unset loads all (like LLM_LOAD_PLUGINS).
ENV_LOAD = "VQTK_LOAD_PLUGINS"
#: Set to 1 to load no installed plugin at all (tests register their own).
ENV_DISABLE = "VQTK_DISABLE_PLUGIN_AUTOLOAD"


def _origin(plugin: str, distribution: Optional[str]) -> str:
    """``plugin 'x'`` or ``plugin 'x' (pip distribution vqtk-x)``, for messages."""
    dist = f" (pip distribution {distribution})" if distribution else ""
    return f"plugin {plugin!r}{dist}"


@attrs.frozen
class ComponentSpec:
    """A registered component: what a recipe's ``type = name`` refers to.

    ``target`` is the component class or factory whose signature ``config``
    was derived from (``None`` for the explicit attrs-config form, where
    ``build(config)`` makes the component).
    """

    kind: str
    name: str
    config: type
    build: Callable[[Any], Any]
    plugin: str
    doc: str = ""
    target: Optional[Callable[..., Any]] = None
    distribution: Optional[str] = None

    @property
    def component_class(self) -> Optional[type]:
        """The class a registered component builds, when known before building (``None`` for factories)."""
        target = unwrap(self.target) if self.target is not None else None
        return target if inspect.isclass(target) else None

    @property
    def origin(self) -> str:
        """``plugin 'x'`` or ``plugin 'x' (distribution vqtk-x)``, for messages."""
        return _origin(self.plugin, self.distribution)

    def create(self, config: Any) -> Any:
        """Build the component from its structured config and check its kind."""
        component = self.build(config)
        base = KINDS[self.kind]
        if not isinstance(component, base):
            raise PluginError(
                f"{self.origin}: {self.kind} {self.name!r} built a "
                f"{type(component).__name__}, which is not a vqtk.interfaces.{base.__name__}"
            )
        return component


@attrs.frozen
class ConverterSpec:
    """A registered converter: what ``vqtk convert NAME`` and ``vqtk.load`` of a foreign file use."""

    name: str
    converter: Converter
    plugin: str
    doc: str = ""
    distribution: Optional[str] = None

    @property
    def origin(self) -> str:
        """``plugin 'x'`` or ``plugin 'x' (distribution vqtk-x)``, for messages."""
        return _origin(self.plugin, self.distribution)


@attrs.define
class PluginRecord:
    """One plugin as ``vqtk plugins`` shows it."""

    name: str
    version: Optional[str] = None
    source: str = "entry point"
    #: the pip distribution that installed the plugin (None for directly registered ones)
    distribution: Optional[str] = None
    #: top-level package of the plugin's code (to attribute a traceback to the plugin)
    package: Optional[str] = None
    components: list[tuple[str, str]] = attrs.field(factory=list)
    converters: list[str] = attrs.field(factory=list)
    error: Optional[str] = None


def _first_line(text: Optional[str]) -> str:
    text = inspect.cleandoc(text or "")
    return text.splitlines()[0] if text else ""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


class Registry:
    """Components by kind and name, gathered from plugins through pluggy.

    ``Registry()`` is empty; :meth:`load_entry_points` adds installed plugins,
    :meth:`register_plugin` adds an object or module directly (tests, notebooks).
    """

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(VqtkHookSpec)
        self._components: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in KINDS}
        self._converters: dict[str, ConverterSpec] = {}
        self.plugins: dict[str, PluginRecord] = {}
        self._conflicts: dict[tuple[str, str], tuple[str, str]] = {}

    # -- loading -------------------------------------------------------------

    def load_entry_points(
        self, group: str = ENTRY_POINT_GROUP, only: Optional[Iterable[str]] = None
    ) -> None:
        """Import and register every plugin in the entry-point group, one at a time."""
        wanted = set(only) if only is not None else None
        seen: set[str] = set()
        for ep in importlib.metadata.entry_points(group=group):
            if ep.name in seen or (wanted is not None and ep.name not in wanted):
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            record = PluginRecord(
                name=ep.name,
                version=dist.version if dist is not None else None,
                source=f"entry point {ep.value}" + (f" ({dist.name})" if dist is not None else ""),
                distribution=dist.name if dist is not None else None,
                package=ep.value.split(":")[0].split(".")[0],
            )
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything
                if isinstance(exc, KeyboardInterrupt):  # a plugin calling sys.exit() is a broken plugin
                    raise
                record.error = f"failed to import: {_describe(exc)}"
                self.plugins[ep.name] = record
                continue
            self._add(plugin, record)

    def register_plugin(self, plugin: Any, name: Optional[str] = None) -> PluginRecord:
        """Register a plugin object or module directly (no entry point needed)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        module = plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__module__
        record = PluginRecord(name=name, version=getattr(plugin, "__version__", None), source="direct",
                              package=module.split(".")[0])
        self._add(plugin, record)
        return record

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin and every component it registered."""
        record = self.plugins.pop(name, None)
        if record is None:
            return
        for kind, comp in record.components:
            spec = self._components[kind].get(comp)
            if spec is not None and spec.plugin == name:
                del self._components[kind][comp]
        for conv in record.converters:
            if conv in self._converters and self._converters[conv].plugin == name:
                del self._converters[conv]
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)

    def _add(self, plugin: Any, record: PluginRecord) -> None:
        name = record.name
        if name in self.plugins:
            raise PluginError(f"plugin name {name!r} is registered twice")
        self.plugins[name] = record
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validates hook signatures here
            record.error = f"failed to register: {_describe(exc)}"
            return
        pending: list[ComponentSpec] = []
        converters: list[ConverterSpec] = []

        def register(kind: str, comp_name: str, component: Optional[Callable] = None, *,
                     config: Optional[type] = None, build: Optional[Callable] = None,
                     doc: Optional[str] = None, check: Optional[Callable[[Any], None]] = None):
            pending.append(self._make_spec(record, kind, comp_name, component, config, build, doc, check))

        def register_converter(converter: Any, *, doc: Optional[str] = None) -> None:
            converters.append(self._make_converter_spec(record, converter, doc))

        try:
            for hook, function in (("vqtk_register_components", register),
                                   ("vqtk_register_converters", register_converter)):
                for impl in getattr(self.pm.hook, hook).get_hookimpls():
                    if impl.plugin_name == name:
                        impl.function(register=function)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):  # a plugin calling sys.exit() is a broken plugin
                raise
            record.error = f"failed to register: {_describe(exc)}"
            self.pm.unregister(name=name)
            return
        # all or nothing: a plugin that reuses a taken name is not loaded, and the
        # name is marked ambiguous so a recipe (or `vqtk convert`) asking for it names both providers
        clashes = [(s.kind, s.name, self._components[s.kind][s.name].plugin)  # (kind, name, plugin that has it)
                   for s in pending if s.name in self._components[s.kind]]
        taken = {n: s.plugin for n, s in self._converters.items()}
        for conv in converters:
            if conv.name in taken:
                clashes.append(("converter", conv.name, taken[conv.name]))
            taken[conv.name] = name
        if clashes:
            for kind, clash, other in clashes:
                if other != name:
                    self._conflicts[(kind, clash)] = (other, name)
            record.error = "duplicate names: " + "; ".join(
                f"{kind} {clash!r} is registered by both plugin {other!r} and plugin {name!r}"
                for kind, clash, other in clashes
            )
            self.pm.unregister(name=name)
            return
        for spec in pending:
            self._components[spec.kind][spec.name] = spec
            record.components.append((spec.kind, spec.name))
        for conv in converters:
            self._converters[conv.name] = conv
            record.converters.append(conv.name)

    @staticmethod
    def _make_converter_spec(record: PluginRecord, converter: Any, doc: Optional[str]) -> ConverterSpec:
        try:
            check_converter(converter)
        except TypeError as exc:
            raise PluginError(f"plugin {record.name!r}: {exc}") from None
        return ConverterSpec(name=converter.name, converter=converter, plugin=record.name,
                             doc=_first_line(doc or type(converter).__doc__), distribution=record.distribution)

    @staticmethod
    def _make_spec(record: PluginRecord, kind: str, name: str, component: Optional[Callable],
                   config: Optional[type], build: Optional[Callable], doc: Optional[str],
                   check: Optional[Callable]) -> ComponentSpec:
        plugin = record.name
        where = f"plugin {plugin!r}"
        if kind not in KINDS:
            raise PluginError(f"{where}: unknown component kind {kind!r} (kinds: {', '.join(KINDS)})")
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"{where}: {kind} name {name!r} must be an identifier")
        where = f"{where}: {kind} {name!r}"
        if component is not None:
            if config is not None or build is not None:
                raise PluginError(f"{where}: give the component, or config= and build=, not both")
            if not callable(component):
                raise PluginError(f"{where}: {component!r} is not a class or function")
            config = config_from_signature(component, where=where, check=check, doc=doc,
                                           provided=KINDS[kind].provided_arguments)
            target = component

            def build(cfg: Any, _make: Callable = component) -> Any:
                return _make(**arguments(cfg))

            text = doc or (config.__doc__ or "").strip()
        else:
            if config is None or build is None:
                raise PluginError(f"{where}: register(kind, name, ComponentClass) or "
                                  "register(kind, name, config=AttrsClass, build=function)")
            if check is not None:
                raise PluginError(f"{where}: check= goes with a component whose signature is its schema; "
                                  "an attrs config checks itself in __attrs_post_init__")
            if not (isinstance(config, type) and attrs.has(config)):
                raise PluginError(f"{where}: config must be an attrs class, got {config!r}")
            if "type" in {f.name for f in attrs.fields(config)}:
                raise PluginError(f"{where}: config may not have a field named 'type'")
            if not callable(build):
                raise PluginError(f"{where}: build must be callable")
            target = None
            text = doc or _first_line(build.__doc__) or _first_line(config.__doc__)
        base = KINDS[kind]
        if target is not None and inspect.isclass(unwrap(target)) and issubclass(unwrap(target), base):
            base = unwrap(target)  # a subclass may require more (a FolderDataSource its paths)
        fields = {f.name for f in attrs.fields(config)}
        missing = [a for a in base.required_arguments if a not in fields]
        if missing:
            raise PluginError(f"{where}: every {kind} takes {', '.join(base.required_arguments)}; "
                              f"missing {', '.join(missing)}")
        return ComponentSpec(kind=kind, name=name, config=config, build=build, plugin=plugin,
                             doc=_first_line(text), target=target, distribution=record.distribution)

    # -- lookup --------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def components(self, kind: Optional[str] = None) -> list[ComponentSpec]:
        kinds = [kind] if kind else list(KINDS)
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def plugin_of_module(self, module: str) -> Optional[PluginRecord]:
        """The plugin whose package holds ``module`` (a dotted module name), if any."""
        top = module.split(".")[0]
        for record in self.plugins.values():
            if record.package == top:
                return record
        return None

    def failures(self) -> list[PluginRecord]:
        return [p for p in self.plugins.values() if p.error]

    def _refuse_conflict(self, kind: str, name: str) -> None:
        if (kind, name) in self._conflicts:
            first, second = self._conflicts[(kind, name)]
            raise PluginError(
                f"{kind} {name!r} is registered by both plugin {first!r} and plugin {second!r}; "
                f"uninstall one or choose plugins with {ENV_LOAD}"
            )

    def get(self, kind: str, name: str) -> ComponentSpec:
        """The component ``name`` of ``kind``, or a :class:`VqtkError` that helps."""
        if kind not in self._components:
            raise VqtkError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        self._refuse_conflict(kind, name)
        try:
            return self._components[kind][name]
        except KeyError:
            raise VqtkError(self.unknown_message(kind, name)) from None

    def converters(self) -> list[ConverterSpec]:
        """The registered converters, by name."""
        return [self._converters[n] for n in sorted(self._converters)]

    def converter(self, name: str) -> ConverterSpec:
        """The converter ``name``, or a :class:`VqtkError` naming the available ones and the closest."""
        self._refuse_conflict("converter", name)
        try:
            return self._converters[name]
        except KeyError:
            raise VqtkError(self._unknown("converter", name, sorted(self._converters))) from None

    def converter_for(self, path: str | Path) -> Optional[ConverterSpec]:
        """The converter that recognises the file ``path``; ``None`` when none does.

        A file that several converters recognise is refused (:class:`VqtkError`
        naming them); an exception from a converter's ``recognizes`` is a bug in
        its plugin (:class:`PluginBug`).
        """
        path = Path(path)
        found = []
        for spec in self.converters():
            try:
                if spec.converter.recognizes(path):
                    found.append(spec)
            except VqtkError:
                raise
            except Exception as exc:  # noqa: BLE001 - a plugin's bug, named as such
                raise PluginBug(f"converter {spec.name!r}: recognizes({str(path)!r}) raised "
                                f"{_describe(exc)}", spec.origin) from exc
        if len(found) > 1:
            raise VqtkError(f"{path}: recognised by several converters ({', '.join(s.name for s in found)}); "
                            "convert it with `vqtk convert NAME` and load the result")
        return found[0] if found else None

    def unknown_message(self, kind: str, name: Any) -> str:
        return self._unknown(kind, name, self.names(kind))

    def _unknown(self, kind: str, name: Any, available: list[str]) -> str:
        msg = f"unknown {kind} {name!r}"
        close = difflib.get_close_matches(str(name), available, n=1)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        msg += f" available: {', '.join(available) if available else '(none)'}"
        broken = self.failures()
        if broken:
            msg += "; plugins that failed to load: " + "; ".join(
                f"{p.name}{f' from pip distribution {p.distribution}' if p.distribution else ''} ({p.error})"
                for p in broken)
        return msg


_default: Optional[Registry] = None
_lock = threading.Lock()


def default_registry(reload: bool = False) -> Registry:
    """The process-wide registry with installed plugins loaded (honours VQTK_* env vars)."""
    global _default
    with _lock:
        if _default is None or reload:
            registry = Registry()
            if os.environ.get(ENV_DISABLE, "") not in ("", "0"):
                pass
            else:
                only = os.environ.get(ENV_LOAD)
                names = [n.strip() for n in only.split(",") if n.strip()] if only else None
                registry.load_entry_points(only=names)
            _default = registry
        return _default
