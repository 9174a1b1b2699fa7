"""Factory of the ``alertmanager`` exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins.alertmanagerexporter.config import AlertmanagerExporterConfig

if TYPE_CHECKING:
    from plugins.alertmanagerexporter.exporter import AlertmanagerExporter


class AlertmanagerExporterFactory(ExporterFactory):
    type = "alertmanager"
    config_class = AlertmanagerExporterConfig
    description = (
        "Turns anomaly records and log records matching conditions into Alertmanager alerts "
        "(API v2), re-sent while active and resolved."
    )
    stability = {Signal.LOGS: Stability.ALPHA}

    def create_default_config(self) -> AlertmanagerExporterConfig:
        return AlertmanagerExporterConfig(endpoint="http://localhost:9093")

    def create_logs(
        self, settings: CreateSettings, config: AlertmanagerExporterConfig
    ) -> AlertmanagerExporter:
        from plugins.alertmanagerexporter.exporter import AlertmanagerExporter

        return AlertmanagerExporter(settings, config)
