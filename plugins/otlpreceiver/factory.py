"""Factory of the ``otlp`` receiver."""

from __future__ import annotations

from pipeline import (
    Consumer,
    CreateSettings,
    ReceiverFactory,
    SharedComponents,
    Signal,
    Stability,
)
from plugins.otlpreceiver.config import OTLPReceiverConfig
from plugins.otlpreceiver.receiver import OTLPReceiver


class OTLPReceiverFactory(ReceiverFactory):
    type = "otlp"
    config_class = OTLPReceiverConfig
    description = "Receives OTLP over gRPC and HTTP (protobuf and JSON)."
    stability = {
        Signal.TRACES: Stability.STABLE,
        Signal.METRICS: Stability.STABLE,
        Signal.LOGS: Stability.BETA,
    }

    def __init__(self) -> None:
        self._shared = SharedComponents()

    def create_default_config(self) -> OTLPReceiverConfig:
        return OTLPReceiverConfig.model_validate({"protocols": {"grpc": {}, "http": {}}})

    def _get(self, settings: CreateSettings, config: OTLPReceiverConfig) -> OTLPReceiver:
        receiver: OTLPReceiver = self._shared.get_or_create(
            config, lambda: OTLPReceiver(settings, config, on_shutdown=self._shared.release)
        )
        return receiver

    def create_traces(
        self, settings: CreateSettings, config: OTLPReceiverConfig, next_consumer: Consumer
    ) -> OTLPReceiver:
        receiver = self._get(settings, config)
        receiver.set_consumer(Signal.TRACES, next_consumer)
        return receiver

    def create_metrics(
        self, settings: CreateSettings, config: OTLPReceiverConfig, next_consumer: Consumer
    ) -> OTLPReceiver:
        receiver = self._get(settings, config)
        receiver.set_consumer(Signal.METRICS, next_consumer)
        return receiver

    def create_logs(
        self, settings: CreateSettings, config: OTLPReceiverConfig, next_consumer: Consumer
    ) -> OTLPReceiver:
        receiver = self._get(settings, config)
        receiver.set_consumer(Signal.LOGS, next_consumer)
        return receiver
