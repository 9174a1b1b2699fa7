"""The ``alertmanager`` exporter: log records (anomalies, configured conditions) to
Alertmanager alerts (see ``docs/anomaly.md``)."""

import pipeline
from plugins.alertmanagerexporter.factory import AlertmanagerExporterFactory

__all__ = ["AlertmanagerExporterFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(AlertmanagerExporterFactory())
