"""Factory of the ``agentmetrics`` connector."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import (
    ConnectorFactory,
    Consumer,
    CreateSettings,
    SharedComponents,
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
        self._shared = SharedComponents()

    def _create(
        self, settings: CreateSettings, config: AgentMetricsConfig, next_consumer: Consumer
    ) -> AgentMetricsConnector:
        from plugins.agentmetricsconnector.connector import AgentMetricsConnector

        connector: AgentMetricsConnector = self._shared.get_or_create(
            config, lambda: AgentMetricsConnector(settings, config, next_consumer)
        )
        connector.on_stop = lambda: self._shared.release(config)
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
