"""Factory of the ``jaeger`` receiver."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import Consumer, CreateSettings, ReceiverFactory, SharedComponents, Signal, Stability
from plugins.jaegerreceiver.config import JaegerReceiverConfig

if TYPE_CHECKING:
    from plugins.jaegerreceiver.receiver import JaegerReceiver


class JaegerReceiverFactory(ReceiverFactory):
    type = "jaeger"
    config_class = JaegerReceiverConfig
    description = (
        "Receives spans from Jaeger clients: Thrift over HTTP (/api/traces) and the agent's "
        "UDP ports (compact and binary Thrift)."
    )
    stability = {Signal.TRACES: Stability.BETA}

    def __init__(self) -> None:
        self._shared = SharedComponents()

    def create_default_config(self) -> JaegerReceiverConfig:
        return JaegerReceiverConfig.model_validate(
            {"protocols": {"thrift_http": {}, "thrift_compact": {}, "thrift_binary": {}}}
        )

    def create_traces(
        self, settings: CreateSettings, config: JaegerReceiverConfig, next_consumer: Consumer
    ) -> JaegerReceiver:
        from plugins.jaegerreceiver.receiver import JaegerReceiver

        receiver: JaegerReceiver = self._shared.get_or_create(
            config, lambda: JaegerReceiver(settings, config, on_shutdown=self._shared.release)
        )
        receiver.set_consumer(next_consumer)
        return receiver
