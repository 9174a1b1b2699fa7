"""The ``kafka`` exporter: OTLP (protobuf or JSON) messages to Kafka topics, with the
Collector's options (``brokers``, ``topic``, ``encoding``, ``partition_traces_by_id``,
``producer``, ``auth``), through librdkafka (``confluent-kafka``)."""

from __future__ import annotations

import pipeline
from plugins.kafkaexporter.config import KafkaExporterConfig
from plugins.kafkaexporter.factory import KafkaExporterFactory

__all__ = ["KafkaExporterConfig", "KafkaExporterFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(KafkaExporterFactory())
