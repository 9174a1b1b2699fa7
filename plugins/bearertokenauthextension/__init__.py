"""The ``bearertokenauth`` extension: a static bearer token (or several, or a file of them)
that receivers require (``auth: {authenticator: bearertokenauth}``) and exporters send, as the
Collector's extension of the same name."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pipeline
from plugins.bearertokenauthextension.config import BearerTokenAuthConfig
from plugins.bearertokenauthextension.factory import BearerTokenAuthFactory

if TYPE_CHECKING:
    from plugins.bearertokenauthextension.extension import BearerTokenAuth

_LAZY = {"BearerTokenAuth": "plugins.bearertokenauthextension.extension"}

__all__ = ["BearerTokenAuth", "BearerTokenAuthConfig", "BearerTokenAuthFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(BearerTokenAuthFactory())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
