"""The ``jaeger`` exporter: traces to Jaeger over OTLP (delegating to the ``otlp`` /
``otlphttp`` exporters), Thrift over HTTP, or compact Thrift over UDP."""

from __future__ import annotations

import pipeline
from plugins.jaegerexporter.config import JaegerExporterConfig
from plugins.jaegerexporter.factory import JaegerExporterFactory

__all__ = ["JaegerExporterConfig", "JaegerExporterFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(JaegerExporterFactory())
