"""Factory of the ``prometheus`` exporter."""

from __future__ import annotations

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins.prometheusexporter.config import PrometheusExporterConfig
from plugins.prometheusexporter.exporter import PrometheusExporter


class PrometheusExporterFactory(ExporterFactory):
    type = "prometheus"
    config_class = PrometheusExporterConfig
    description = "Serves the metrics it receives at /metrics for Prometheus to scrape."
    stability = {Signal.METRICS: Stability.BETA}

    def create_metrics(
        self, settings: CreateSettings, config: PrometheusExporterConfig
    ) -> PrometheusExporter:
        return PrometheusExporter(settings, config)
