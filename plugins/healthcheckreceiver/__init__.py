"""The ``healthcheck`` receiver: PostgreSQL, Redis, HTTP, MCP and system checks as metrics
(``health_check_status{check, type, critical}``...), with the latest results kept for the
``health_check`` extension."""

from __future__ import annotations

import pipeline
from plugins.healthcheckreceiver.checks import CheckResult, Status
from plugins.healthcheckreceiver.config import HealthCheckReceiverConfig
from plugins.healthcheckreceiver.factory import HealthCheckReceiverFactory
from plugins.healthcheckreceiver.receiver import HealthCheckReceiver

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
