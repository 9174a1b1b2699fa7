"""Factory of the ``agentmetrics`` connector."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import (
    ComponentID,
    ConnectorFactory,
    Consumer,
    CreateSettings,
    Signal,
    Stability,
)
from plugins.agentmetricsconnector.config import AgentMetricsConfig

if TYPE_CHECKING:
    from plugins.agentmetricsconnector.connector import AgentMetricsConnector


class AgentMetricsConnectorFactory(ConnectorFactory):
    """``agentmetrics``: traces (and GenAI events, logs) to metrics. One instance per config
    serves both inputs: the events are joined to the spans of the same instance."""

    type = "agentmetrics"
    config_class = AgentMetricsConfig
    description = (
        "Agent workflow, MCP, A2A, HTTP, error and GenAI token metrics (and SLO gauges) from "
        "spans and GenAI events."
    )
    stability = {
        (Signal.TRACES, Signal.METRICS): Stability.ALPHA,
        (Signal.LOGS, Signal.METRICS): Stability.ALPHA,
    }

    def __init__(self) -> None:
        # (service, component ID) -> the running instance: the traces and the logs input of one
        # ID share it, also when a reload adds one input to a running instance (same options);
        # services running side by side in one process (tests) each have their own
        self._instances: dict[tuple[int, ComponentID], AgentMetricsConnector] = {}

    def _create(
        self, settings: CreateSettings, config: AgentMetricsConfig, next_consumer: Consumer
    ) -> AgentMetricsConnector:
        from plugins.agentmetricsconnector.connector import AgentMetricsConnector

        service = settings.telemetry.service
        key = (id(service), settings.id)
        connector = self._instances.get(key)
        if (
            connector is None
            or connector.config != config
            or connector.settings.telemetry.service is not service
        ):
            connector = AgentMetricsConnector(settings, config, next_consumer)
            self._instances[key] = connector

            def forget(
                key: tuple[int, ComponentID] = key, connector: AgentMetricsConnector = connector
            ) -> None:
                if self._instances.get(key) is connector:
                    del self._instances[key]

            connector.on_stop = forget
        return connector

    def create_traces_to_metrics(
        self, settings: CreateSettings, config: AgentMetricsConfig, next_consumer: Consumer
    ) -> AgentMetricsConnector:
        return self._create(settings, config, next_consumer)

    def create_logs_to_metrics(
        self, settings: CreateSettings, config: AgentMetricsConfig, next_consumer: Consumer
    ) -> AgentMetricsConnector:
        """GenAI events joined to the spans of the traces input (same instance)."""
        connector = self._create(settings, config, next_consumer)
        connector.accepts_logs = True
        return connector
