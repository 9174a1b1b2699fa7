"""The ``prometheus`` receiver: scrapes Prometheus endpoints (text 0.0.4 and OpenMetrics) and
turns what it reads into OTLP metrics."""

from __future__ import annotations

import pipeline
from plugins.prometheusreceiver.config import PrometheusReceiverConfig
from plugins.prometheusreceiver.factory import PrometheusReceiverFactory

__all__ = ["PrometheusReceiverConfig", "PrometheusReceiverFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(PrometheusReceiverFactory())
