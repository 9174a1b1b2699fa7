"""Factory of the ``otlphttp`` exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins.otlphttpexporter.config import OTLPHTTPExporterConfig

if TYPE_CHECKING:
    from plugins.otlpexporter.exporter import OTLPExporter


class OTLPHTTPExporterFactory(ExporterFactory):
    type = "otlphttp"
    aliases = ("otlp_http",)  # the Collector's newer name
    config_class = OTLPHTTPExporterConfig
    description = "Sends OTLP over HTTP (protobuf or JSON)."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def create_default_config(self) -> OTLPHTTPExporterConfig:
        return OTLPHTTPExporterConfig(endpoint="http://localhost:4318")

    def _create(
        self, settings: CreateSettings, config: OTLPHTTPExporterConfig, signal: Signal
    ) -> OTLPExporter:
        config.url(str(signal))  # a clear error now if this signal has nowhere to go
        from plugins.otlpexporter.exporter import OTLPExporter
        from plugins.otlphttpexporter.sender import OTLPHttpSender

        sender = OTLPHttpSender(config, settings.logger, settings.telemetry)
        return OTLPExporter(settings, config, signal, sender)

    def create_traces(
        self, settings: CreateSettings, config: OTLPHTTPExporterConfig
    ) -> OTLPExporter:
        return self._create(settings, config, Signal.TRACES)

    def create_metrics(
        self, settings: CreateSettings, config: OTLPHTTPExporterConfig
    ) -> OTLPExporter:
        return self._create(settings, config, Signal.METRICS)

    def create_logs(self, settings: CreateSettings, config: OTLPHTTPExporterConfig) -> OTLPExporter:
        return self._create(settings, config, Signal.LOGS)
