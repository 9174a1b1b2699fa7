"""The ``loadbalancing`` exporter: routes each trace (or service, resource, metric, stream) to
one backend of a set found by a resolver (``static`` or ``dns``), through consistent hashing,
and sends to each backend with an ``otlp`` exporter created from ``protocol.otlp``."""

from __future__ import annotations

import pipeline
from plugins.loadbalancingexporter.config import LoadBalancingConfig
from plugins.loadbalancingexporter.factory import LoadBalancingExporterFactory

__all__ = ["LoadBalancingConfig", "LoadBalancingExporterFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(LoadBalancingExporterFactory())
