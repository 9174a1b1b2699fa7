"""Factory of the ``spanmetrics`` connector."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import ConnectorFactory, Consumer, CreateSettings, Signal, Stability
from plugins.spanmetricsconnector.config import SpanMetricsConfig

if TYPE_CHECKING:
    from plugins.spanmetricsconnector.connector import SpanMetricsConnector


class SpanMetricsConnectorFactory(ConnectorFactory):
    """``spanmetrics``: traces to metrics."""

    type = "spanmetrics"
    aliases = ("span_metrics",)  # the Collector's newer name
    config_class = SpanMetricsConfig
    description = "Request, error and duration (R.E.D.) metrics from spans, as the Collector's."
    stability = {(Signal.TRACES, Signal.METRICS): Stability.ALPHA}

    def create_traces_to_metrics(
        self, settings: CreateSettings, config: SpanMetricsConfig, next_consumer: Consumer
    ) -> SpanMetricsConnector:
        from plugins.spanmetricsconnector.connector import SpanMetricsConnector

        return SpanMetricsConnector(settings, config, next_consumer)
