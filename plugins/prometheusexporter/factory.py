"""Factory of the ``prometheus`` exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins.prometheusexporter.config import PrometheusExporterConfig

if TYPE_CHECKING:
    from plugins.prometheusexporter.exporter import PrometheusExporter


class PrometheusExporterFactory(ExporterFactory):
    type = "prometheus"
    config_class = PrometheusExporterConfig
    description = "Serves the metrics it receives at /metrics for Prometheus to scrape."
    stability = {Signal.METRICS: Stability.BETA}

    def create_metrics(
        self, settings: CreateSettings, config: PrometheusExporterConfig
    ) -> PrometheusExporter:
        from plugins.prometheusexporter.exporter import PrometheusExporter

        return PrometheusExporter(settings, config)
