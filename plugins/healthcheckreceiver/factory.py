"""Factory of the ``healthcheck`` receiver."""

from __future__ import annotations

from pipeline import Consumer, CreateSettings, ReceiverFactory, Signal, Stability
from plugins.healthcheckreceiver.config import HealthCheckReceiverConfig
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
        return HealthCheckReceiver(settings, config, next_consumer)
