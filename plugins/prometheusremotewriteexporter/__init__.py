"""The ``prometheusremotewrite`` exporter: pushes metrics to a Prometheus remote-write 1.0
endpoint (snappy-compressed protobuf), with the shared queue and retries."""

from __future__ import annotations

import pipeline
from plugins.prometheusremotewriteexporter.config import PrometheusRemoteWriteConfig
from plugins.prometheusremotewriteexporter.factory import PrometheusRemoteWriteFactory

__all__ = ["PrometheusRemoteWriteConfig", "PrometheusRemoteWriteFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(PrometheusRemoteWriteFactory())
