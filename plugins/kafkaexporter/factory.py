"""Factory of the ``kafka`` exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import CreateSettings, ExporterFactory, Signal, Stability
from plugins.kafkaexporter.config import KafkaExporterConfig

if TYPE_CHECKING:
    from plugins.kafkaexporter.exporter import KafkaExporter


class KafkaExporterFactory(ExporterFactory):
    type = "kafka"
    config_class = KafkaExporterConfig
    description = "Writes OTLP (protobuf or JSON) messages to Kafka topics."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def create_default_config(self) -> KafkaExporterConfig:
        return KafkaExporterConfig()

    def _create(
        self, settings: CreateSettings, config: KafkaExporterConfig, signal: Signal
    ) -> KafkaExporter:
        from plugins.kafkaexporter.exporter import KafkaExporter

        return KafkaExporter(settings, config, signal)

    def create_traces(self, settings: CreateSettings, config: KafkaExporterConfig) -> KafkaExporter:
        return self._create(settings, config, Signal.TRACES)

    def create_metrics(
        self, settings: CreateSettings, config: KafkaExporterConfig
    ) -> KafkaExporter:
        return self._create(settings, config, Signal.METRICS)

    def create_logs(self, settings: CreateSettings, config: KafkaExporterConfig) -> KafkaExporter:
        return self._create(settings, config, Signal.LOGS)
