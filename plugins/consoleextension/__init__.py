"""The ``console`` extension: a live view of the gateway in the browser (see
``docs/console.md``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pipeline
from plugins.consoleextension.config import ConsoleConfig
from plugins.consoleextension.factory import ConsoleExtensionFactory

if TYPE_CHECKING:
    from plugins.consoleextension.extension import ConsoleExtension

# the implementation (aiohttp, the page) loads when the extension is created
_LAZY = {"ConsoleExtension": "plugins.consoleextension.extension"}

__all__ = ["ConsoleConfig", "ConsoleExtension", "ConsoleExtensionFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(ConsoleExtensionFactory())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
