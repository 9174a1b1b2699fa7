"""The ``prometheus`` exporter: serves every metric that reaches it at ``/metrics`` for
Prometheus to scrape, in the text format 0.0.4 or OpenMetrics 1.0 (with exemplars)."""

from __future__ import annotations

import pipeline
from plugins.prometheusexporter.config import PrometheusExporterConfig
from plugins.prometheusexporter.factory import PrometheusExporterFactory

__all__ = ["PrometheusExporterConfig", "PrometheusExporterFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(PrometheusExporterFactory())
