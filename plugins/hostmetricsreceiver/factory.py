"""Factory of the ``hostmetrics`` receiver."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import Consumer, CreateSettings, ReceiverFactory, Signal, Stability
from plugins.hostmetricsreceiver.config import HostMetricsConfig

if TYPE_CHECKING:
    from plugins.hostmetricsreceiver.receiver import HostMetricsReceiver


class HostMetricsReceiverFactory(ReceiverFactory):
    type = "hostmetrics"
    aliases = ("host_metrics",)  # the Collector's newer name
    config_class = HostMetricsConfig
    description = "Scrapes CPU, load, memory, disk, filesystem, network and process metrics."
    stability = {Signal.METRICS: Stability.BETA}

    def create_default_config(self) -> HostMetricsConfig:
        return HostMetricsConfig.model_validate({"scrapers": {"cpu": {}, "memory": {}, "load": {}}})

    def create_metrics(
        self, settings: CreateSettings, config: HostMetricsConfig, next_consumer: Consumer
    ) -> HostMetricsReceiver:
        from plugins.hostmetricsreceiver.receiver import HostMetricsReceiver

        return HostMetricsReceiver(settings, config, next_consumer)
