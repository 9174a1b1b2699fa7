"""Factory of the ``healthcheck`` receiver."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import Consumer, CreateSettings, ReceiverFactory, Signal, Stability
from plugins.healthcheckreceiver.config import HealthCheckReceiverConfig

if TYPE_CHECKING:
    from plugins.healthcheckreceiver.receiver import HealthCheckReceiver


class HealthCheckReceiverFactory(ReceiverFactory):
    type = "healthcheck"
    config_class = HealthCheckReceiverConfig
    description = "Checks PostgreSQL, Redis, HTTP and MCP dependencies and the host's pressure."
    stability = {Signal.METRICS: Stability.ALPHA}

    def create_default_config(self) -> HealthCheckReceiverConfig:
        return HealthCheckReceiverConfig.model_validate(
            {"checks": [{"name": "system", "type": "system"}]}
        )

    def create_metrics(
        self,
        settings: CreateSettings,
        config: HealthCheckReceiverConfig,
        next_consumer: Consumer,
    ) -> HealthCheckReceiver:
        from plugins.healthcheckreceiver.receiver import HealthCheckReceiver

        return HealthCheckReceiver(settings, config, next_consumer)
