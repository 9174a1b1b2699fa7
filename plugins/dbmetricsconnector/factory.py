"""Factory of the ``dbmetrics`` connector."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import ConnectorFactory, Consumer, CreateSettings, Signal, Stability
from plugins.dbmetricsconnector.config import DBMetricsConfig

if TYPE_CHECKING:
    from plugins.dbmetricsconnector.connector import DBMetricsConnector


class DBMetricsConnectorFactory(ConnectorFactory):
    """``dbmetrics``: traces to metrics."""

    type = "dbmetrics"
    config_class = DBMetricsConfig
    description = (
        "database_operations_total, cache_operations_total and cache_hit_ratio from database "
        "client spans."
    )
    stability = {(Signal.TRACES, Signal.METRICS): Stability.ALPHA}

    def create_traces_to_metrics(
        self, settings: CreateSettings, config: DBMetricsConfig, next_consumer: Consumer
    ) -> DBMetricsConnector:
        from plugins.dbmetricsconnector.connector import DBMetricsConnector

        return DBMetricsConnector(settings, config, next_consumer)
