"""Factory of the ``prometheusremotewrite`` exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins.prometheusremotewriteexporter.config import PrometheusRemoteWriteConfig

if TYPE_CHECKING:
    from plugins.prometheusremotewriteexporter.exporter import PrometheusRemoteWriteExporter


class PrometheusRemoteWriteFactory(ExporterFactory):
    type = "prometheusremotewrite"
    aliases = ("prometheus_remote_write",)  # the Collector's newer name
    config_class = PrometheusRemoteWriteConfig
    description = "Pushes metrics to a Prometheus remote-write endpoint."
    stability = {Signal.METRICS: Stability.BETA}

    def create_default_config(self) -> PrometheusRemoteWriteConfig:
        return PrometheusRemoteWriteConfig(endpoint="http://localhost:9090/api/v1/write")

    def create_metrics(
        self, settings: CreateSettings, config: PrometheusRemoteWriteConfig
    ) -> PrometheusRemoteWriteExporter:
        from plugins.prometheusremotewriteexporter.exporter import (
            PrometheusRemoteWriteExporter,
        )

        return PrometheusRemoteWriteExporter(settings, config)
