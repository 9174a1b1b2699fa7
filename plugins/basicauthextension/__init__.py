"""The ``basicauth`` extension: HTTP Basic authentication, as the Collector's extension of the
same name: receivers check users against an htpasswd file (``htpasswd``), exporters send a
user and password (``client_auth``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pipeline
from plugins.basicauthextension.config import BasicAuthConfig
from plugins.basicauthextension.factory import BasicAuthFactory

if TYPE_CHECKING:
    from plugins.basicauthextension.extension import BasicAuthClient, BasicAuthServer

_LAZY = {
    "BasicAuthClient": "plugins.basicauthextension.extension",
    "BasicAuthServer": "plugins.basicauthextension.extension",
}

__all__ = ["BasicAuthClient", "BasicAuthConfig", "BasicAuthFactory", "BasicAuthServer"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(BasicAuthFactory())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
