"""The ``dbmetrics`` connector: database and cache metrics from database client spans (see
``docs/anomaly.md``)."""

import pipeline
from plugins.dbmetricsconnector.factory import DBMetricsConnectorFactory

__all__ = ["DBMetricsConnectorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(DBMetricsConnectorFactory())
