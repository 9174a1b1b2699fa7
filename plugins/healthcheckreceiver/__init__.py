"""The ``healthcheck`` receiver: PostgreSQL, Redis, HTTP, MCP and system checks as metrics
(``health_check_status{check, type, critical}``...), with the latest results kept for the
``health_check`` extension."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pipeline
from plugins.healthcheckreceiver.config import HealthCheckReceiverConfig
from plugins.healthcheckreceiver.factory import HealthCheckReceiverFactory

if TYPE_CHECKING:
    from plugins.healthcheckreceiver.checks import CheckResult, Status
    from plugins.healthcheckreceiver.receiver import HealthCheckReceiver

# The implementation modules load when first used (a component is created), not when the
# plugin is registered: a gateway imports only what its configuration needs.
_LAZY = {
    "CheckResult": "plugins.healthcheckreceiver.checks",
    "Status": "plugins.healthcheckreceiver.checks",
    "HealthCheckReceiver": "plugins.healthcheckreceiver.receiver",
}

__all__ = [
    "CheckResult",
    "HealthCheckReceiver",
    "HealthCheckReceiverConfig",
    "HealthCheckReceiverFactory",
    "Status",
]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(HealthCheckReceiverFactory())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
