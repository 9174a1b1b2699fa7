"""Factory of the ``spanmetrics`` connector."""

from __future__ import annotations

from pipeline import ConnectorFactory, Consumer, CreateSettings, Signal, Stability
from plugins.spanmetricsconnector.config import SpanMetricsConfig
from plugins.spanmetricsconnector.connector import SpanMetricsConnector


class SpanMetricsConnectorFactory(ConnectorFactory):
    """``spanmetrics``: traces to metrics."""

    type = "spanmetrics"
    config_class = SpanMetricsConfig
    description = "Request, error and duration (R.E.D.) metrics from spans, as the Collector's."
    stability = {(Signal.TRACES, Signal.METRICS): Stability.ALPHA}

    def create_traces_to_metrics(
        self, settings: CreateSettings, config: SpanMetricsConfig, next_consumer: Consumer
    ) -> SpanMetricsConnector:
        return SpanMetricsConnector(settings, config, next_consumer)
