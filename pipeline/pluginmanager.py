"""Finding plugins (built-in and third-party) and collecting their factories."""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType

import pluggy

from pipeline import hookspecs
from pipeline.registry import Registry

DISABLE_AUTOLOAD_ENV = "PIPELINE_DISABLE_PLUGIN_AUTOLOAD"
EXTRA_PLUGINS_ENV = "PIPELINE_PLUGINS"
DISTRIBUTION = "pipeline-gateway"


def _builtin_modules() -> list[ModuleType]:
    import plugins

    modules = []
    for info in sorted(pkgutil.iter_modules(plugins.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"plugins.{info.name}")
        if hasattr(module, "register_components"):
            modules.append(module)
    return modules


def create_plugin_manager(autoload: bool | None = None) -> pluggy.PluginManager:
    """A plugin manager with the built-ins and, unless disabled, the entry-point plugins."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for module in _builtin_modules():
        pm.register(module, name=f"builtin.{module.__name__.removeprefix('plugins.')}")
    if autoload is None:
        autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
    if autoload:
        pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
    for name in filter(None, (s.strip() for s in os.environ.get(EXTRA_PLUGINS_ENV, "").split(","))):
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name=name)
    return pm


def build_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Call every plugin's ``register_components`` and return the filled registry."""
    pm = pm or create_plugin_manager()
    distributions = {id(plugin): dist.project_name for plugin, dist in pm.list_plugin_distinfo()}
    registry = Registry()
    for impl in reversed(pm.hook.register_components.get_hookimpls()):
        name = pm.get_name(impl.plugin) or repr(impl.plugin)
        if name.startswith("builtin."):
            dist = DISTRIBUTION
        else:
            dist = distributions.get(id(impl.plugin), "(not installed as a distribution)")
        registry._set_source(name, dist)
        impl.function(registry=registry)
    return registry


_default_registry: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _default_registry
    if _default_registry is None:
        _default_registry = build_registry()
    return _default_registry
