"""Factory of the ``health_check`` extension."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExtensionFactory, Stability
from plugins.healthcheckextension.config import HealthCheckExtensionConfig

if TYPE_CHECKING:
    from plugins.healthcheckextension.extension import HealthCheckExtension


class HealthCheckExtensionFactory(ExtensionFactory):
    type = "health_check"
    config_class = HealthCheckExtensionConfig
    description = "Liveness and readiness of the gateway over HTTP, for load balancers."
    extension_stability = Stability.BETA

    def create(  # type: ignore[override]
        self, settings: CreateSettings, config: HealthCheckExtensionConfig
    ) -> HealthCheckExtension:
        from plugins.healthcheckextension.extension import HealthCheckExtension

        return HealthCheckExtension(settings, config)
