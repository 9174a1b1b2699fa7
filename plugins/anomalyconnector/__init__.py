"""The ``anomaly`` connector: anomaly detection on metrics, with suggested actions (see
``docs/anomaly.md``)."""

import pipeline
from plugins.anomalyconnector.factory import AnomalyConnectorFactory

__all__ = ["AnomalyConnectorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(AnomalyConnectorFactory())
