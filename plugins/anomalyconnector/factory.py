"""Factory of the ``anomaly`` connector."""

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
from plugins.anomalyconnector.config import AnomalyConfig

if TYPE_CHECKING:
    from plugins.anomalyconnector.connector import AnomalyConnector, AnomalyEngine


class AnomalyConnectorFactory(ConnectorFactory):
    """``anomaly``: metrics to metrics (scores) and to logs (anomalies opened and closed)."""

    type = "anomaly"
    config_class = AnomalyConfig
    description = (
        "Baselines per series; anomaly_score / anomaly_active series and a log record per "
        "anomaly opened and closed, with suggested actions."
    )
    stability = {
        (Signal.METRICS, Signal.METRICS): Stability.ALPHA,
        (Signal.METRICS, Signal.LOGS): Stability.ALPHA,
    }

    def __init__(self) -> None:
        self.engines = SharedComponents()

    def _engine(self, settings: CreateSettings, config: AnomalyConfig) -> AnomalyEngine:
        from plugins.anomalyconnector.connector import AnomalyEngine

        def create() -> AnomalyEngine:
            engine = AnomalyEngine(settings, config)
            engine.on_released = lambda: self.engines.release(config)
            return engine

        engine: AnomalyEngine = self.engines.get_or_create(config, create)
        return engine

    def create_metrics_to_metrics(
        self, settings: CreateSettings, config: AnomalyConfig, next_consumer: Consumer
    ) -> AnomalyConnector:
        from plugins.anomalyconnector.connector import AnomalyConnector

        return AnomalyConnector(self._engine(settings, config), Signal.METRICS, next_consumer)

    def create_metrics_to_logs(
        self, settings: CreateSettings, config: AnomalyConfig, next_consumer: Consumer
    ) -> AnomalyConnector:
        from plugins.anomalyconnector.connector import AnomalyConnector

        return AnomalyConnector(self._engine(settings, config), Signal.LOGS, next_consumer)
