"""The ``forward`` connector, as in the Collector: passes data unchanged from the pipelines it
is an exporter of to the pipelines of the same signal it is a receiver of (to merge pipelines,
or to fan one out into several with different processors)."""

from __future__ import annotations

import pipeline
from pipeline import (
    Component,
    ConnectorFactory,
    Consumer,
    CreateSettings,
    EmptyConfig,
    Payload,
    Signal,
    Stability,
)


class ForwardConnector(Component):
    """Hands every payload to the next consumer."""

    mutates_data = False

    def __init__(self, next_consumer: Consumer) -> None:
        self.next = next_consumer

    async def consume(self, data: Payload) -> None:
        await self.next.consume(data)


class ForwardConnectorFactory(ConnectorFactory):
    type = "forward"
    config_class = EmptyConfig
    description = "Passes data unchanged from one pipeline to others of the same signal."
    stability = {
        (Signal.TRACES, Signal.TRACES): Stability.BETA,
        (Signal.METRICS, Signal.METRICS): Stability.BETA,
        (Signal.LOGS, Signal.LOGS): Stability.BETA,
    }

    def create_traces_to_traces(
        self, settings: CreateSettings, config: EmptyConfig, next_consumer: Consumer
    ) -> ForwardConnector:
        return ForwardConnector(next_consumer)

    def create_metrics_to_metrics(
        self, settings: CreateSettings, config: EmptyConfig, next_consumer: Consumer
    ) -> ForwardConnector:
        return ForwardConnector(next_consumer)

    def create_logs_to_logs(
        self, settings: CreateSettings, config: EmptyConfig, next_consumer: Consumer
    ) -> ForwardConnector:
        return ForwardConnector(next_consumer)


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(ForwardConnectorFactory())
