"""Factory of the ``kafka`` receiver."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import Consumer, CreateSettings, ReceiverFactory, Signal, Stability
from plugins.kafkareceiver.config import KafkaReceiverConfig

if TYPE_CHECKING:
    from plugins.kafkareceiver.receiver import KafkaReceiver


class KafkaReceiverFactory(ReceiverFactory):
    type = "kafka"
    config_class = KafkaReceiverConfig
    description = "Reads OTLP (protobuf or JSON) messages from Kafka topics in a consumer group."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def create_default_config(self) -> KafkaReceiverConfig:
        return KafkaReceiverConfig()

    def _create(
        self,
        settings: CreateSettings,
        config: KafkaReceiverConfig,
        next_consumer: Consumer,
        signal: Signal,
    ) -> KafkaReceiver:
        from plugins.kafkareceiver.receiver import KafkaReceiver

        return KafkaReceiver(settings, config, signal, next_consumer)

    def create_traces(
        self, settings: CreateSettings, config: KafkaReceiverConfig, next_consumer: Consumer
    ) -> KafkaReceiver:
        return self._create(settings, config, next_consumer, Signal.TRACES)

    def create_metrics(
        self, settings: CreateSettings, config: KafkaReceiverConfig, next_consumer: Consumer
    ) -> KafkaReceiver:
        return self._create(settings, config, next_consumer, Signal.METRICS)

    def create_logs(
        self, settings: CreateSettings, config: KafkaReceiverConfig, next_consumer: Consumer
    ) -> KafkaReceiver:
        return self._create(settings, config, next_consumer, Signal.LOGS)
