"""Factory of the ``agentmetrics`` connector."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import ConnectorFactory, Consumer, CreateSettings, Signal, Stability
from plugins.agentmetricsconnector.config import AgentMetricsConfig

if TYPE_CHECKING:
    from plugins.agentmetricsconnector.connector import AgentMetricsConnector


class AgentMetricsConnectorFactory(ConnectorFactory):
    """``agentmetrics``: traces to metrics."""

    type = "agentmetrics"
    config_class = AgentMetricsConfig
    description = "Agent workflow, MCP, A2A, HTTP and error metrics (and SLO gauges) from spans."
    stability = {(Signal.TRACES, Signal.METRICS): Stability.ALPHA}

    def create_traces_to_metrics(
        self, settings: CreateSettings, config: AgentMetricsConfig, next_consumer: Consumer
    ) -> AgentMetricsConnector:
        from plugins.agentmetricsconnector.connector import AgentMetricsConnector

        return AgentMetricsConnector(settings, config, next_consumer)
