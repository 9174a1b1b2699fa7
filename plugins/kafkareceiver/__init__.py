"""The ``kafka`` receiver: OTLP (protobuf or JSON) messages from Kafka topics in a consumer
group, with the Collector's options (``brokers``, ``topic``, ``encoding``, ``group_id``,
``initial_offset``, ``autocommit``, ``message_marking``, ``auth``), through librdkafka
(``confluent-kafka``)."""

from __future__ import annotations

import pipeline
from plugins.kafkareceiver.config import KafkaReceiverConfig
from plugins.kafkareceiver.factory import KafkaReceiverFactory

__all__ = ["KafkaReceiverConfig", "KafkaReceiverFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(KafkaReceiverFactory())
