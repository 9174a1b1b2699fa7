"""The ``health_check`` extension: ``/`` (overall), ``/live`` and ``/ready`` as JSON, with
HTTP 200 or 503 for load balancers and container health checks."""

from __future__ import annotations

import pipeline
from plugins.healthcheckextension.config import HealthCheckExtensionConfig
from plugins.healthcheckextension.extension import HealthCheckExtension
from plugins.healthcheckextension.factory import HealthCheckExtensionFactory

__all__ = ["HealthCheckExtension", "HealthCheckExtensionConfig", "HealthCheckExtensionFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(HealthCheckExtensionFactory())
