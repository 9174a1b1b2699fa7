"""Factory of the ``otlp`` (gRPC) exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins.otlpexporter.config import OTLPExporterConfig

if TYPE_CHECKING:
    from plugins.otlpexporter.exporter import OTLPExporter


class OTLPExporterFactory(ExporterFactory):
    type = "otlp"
    config_class = OTLPExporterConfig
    description = "Sends OTLP over gRPC, without decoding what it forwards."
    stability = {Signal.TRACES: Stability.BETA, Signal.METRICS: Stability.BETA}

    def create_default_config(self) -> OTLPExporterConfig:
        return OTLPExporterConfig(endpoint="localhost:4317")

    def _create(
        self, settings: CreateSettings, config: OTLPExporterConfig, signal: Signal
    ) -> OTLPExporter:
        from plugins.otlpexporter.exporter import OTLPExporter
        from plugins.otlpexporter.sender import OTLPGrpcSender

        sender = OTLPGrpcSender(config, settings.logger, settings.telemetry)
        return OTLPExporter(settings, config, signal, sender)

    def create_traces(self, settings: CreateSettings, config: OTLPExporterConfig) -> OTLPExporter:
        return self._create(settings, config, Signal.TRACES)

    def create_metrics(self, settings: CreateSettings, config: OTLPExporterConfig) -> OTLPExporter:
        return self._create(settings, config, Signal.METRICS)
