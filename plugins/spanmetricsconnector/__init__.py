"""The ``spanmetrics`` connector, as the OpenTelemetry Collector's (see
``docs/agent-workflow.md``)."""

import pipeline
from plugins.spanmetricsconnector.factory import SpanMetricsConnectorFactory

__all__ = ["SpanMetricsConnectorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(SpanMetricsConnectorFactory())
