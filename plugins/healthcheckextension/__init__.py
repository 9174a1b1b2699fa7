"""The ``health_check`` extension: ``/`` (overall), ``/live`` and ``/ready`` as JSON, with
HTTP 200 or 503 for load balancers and container health checks."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pipeline
from plugins.healthcheckextension.config import HealthCheckExtensionConfig
from plugins.healthcheckextension.factory import HealthCheckExtensionFactory

if TYPE_CHECKING:
    from plugins.healthcheckextension.extension import HealthCheckExtension

# The implementation modules load when first used (a component is created), not when the
# plugin is registered: a gateway imports only what its configuration needs.
_LAZY = {
    "HealthCheckExtension": "plugins.healthcheckextension.extension",
}

__all__ = ["HealthCheckExtension", "HealthCheckExtensionConfig", "HealthCheckExtensionFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(HealthCheckExtensionFactory())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
