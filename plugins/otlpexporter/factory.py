"""Factory of the ``otlp`` (gRPC) exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins.otlpexporter.config import OTLPExporterConfig

if TYPE_CHECKING:
    from plugins.otlpexporter.exporter import OTLPExporter


class OTLPExporterFactory(ExporterFactory):
    type = "otlp"
    aliases = ("otlp_grpc",)  # the Collector's newer name
    config_class = OTLPExporterConfig
    description = "Sends OTLP over gRPC, without decoding what it forwards."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def create_default_config(self) -> OTLPExporterConfig:
        return OTLPExporterConfig(endpoint="localhost:4317")

    def _create(
        self, settings: CreateSettings, config: OTLPExporterConfig, signal: Signal
    ) -> OTLPExporter:
        from plugins._native import load_h2
        from plugins.otlpexporter.exporter import OTLPExporter, Sender

        # the native client (plugins/otlpexporter/native_sender.py) when it was built, unless
        # PIPELINE_GRPC_CLIENT=grpcio asks for grpcio's, or balancer_name needs grpcio's
        native = None if config.balancer_name else load_h2("PIPELINE_GRPC_CLIENT")
        sender: Sender
        if native is not None:
            from plugins.otlpexporter.native_sender import NativeGrpcSender

            sender = NativeGrpcSender(config, settings.logger, settings.telemetry, native)
        else:
            from plugins.otlpexporter.sender import OTLPGrpcSender

            sender = OTLPGrpcSender(config, settings.logger, settings.telemetry)
        return OTLPExporter(settings, config, signal, sender)

    def create_traces(self, settings: CreateSettings, config: OTLPExporterConfig) -> OTLPExporter:
        return self._create(settings, config, Signal.TRACES)

    def create_metrics(self, settings: CreateSettings, config: OTLPExporterConfig) -> OTLPExporter:
        return self._create(settings, config, Signal.METRICS)

    def create_logs(self, settings: CreateSettings, config: OTLPExporterConfig) -> OTLPExporter:
        return self._create(settings, config, Signal.LOGS)
