"""The ``agentmetrics`` connector: agent workflow metrics from traces (see
``docs/agent-workflow.md``)."""

import pipeline
from plugins.agentmetricsconnector.factory import AgentMetricsConnectorFactory

__all__ = ["AgentMetricsConnectorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(AgentMetricsConnectorFactory())
