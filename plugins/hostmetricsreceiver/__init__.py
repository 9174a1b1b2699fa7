"""The ``hostmetrics`` receiver: host and process metrics from psutil, named as the
OpenTelemetry Collector's ``hostmetricsreceiver`` names them."""

from __future__ import annotations

import pipeline
from plugins.hostmetricsreceiver.config import HostMetricsConfig
from plugins.hostmetricsreceiver.factory import HostMetricsReceiverFactory

__all__ = ["HostMetricsConfig", "HostMetricsReceiverFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(HostMetricsReceiverFactory())
