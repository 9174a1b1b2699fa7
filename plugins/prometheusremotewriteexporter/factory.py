"""Factory of the ``prometheusremotewrite`` exporter."""

from __future__ import annotations

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins.prometheusremotewriteexporter.config import PrometheusRemoteWriteConfig
from plugins.prometheusremotewriteexporter.exporter import PrometheusRemoteWriteExporter


class PrometheusRemoteWriteFactory(ExporterFactory):
    type = "prometheusremotewrite"
    config_class = PrometheusRemoteWriteConfig
    description = "Pushes metrics to a Prometheus remote-write endpoint."
    stability = {Signal.METRICS: Stability.BETA}

    def create_default_config(self) -> PrometheusRemoteWriteConfig:
        return PrometheusRemoteWriteConfig(endpoint="http://localhost:9090/api/v1/write")

    def create_metrics(
        self, settings: CreateSettings, config: PrometheusRemoteWriteConfig
    ) -> PrometheusRemoteWriteExporter:
        return PrometheusRemoteWriteExporter(settings, config)
