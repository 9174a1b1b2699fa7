"""The ``otlphttp`` exporter: OTLP over HTTP behind the exporter helper.

:class:`OTLPHttpSender` is reusable on its own (one session, ``send(signal, data)``)."""

from __future__ import annotations

import pipeline
from plugins.otlphttpexporter.config import OTLPHTTPExporterConfig
from plugins.otlphttpexporter.factory import OTLPHTTPExporterFactory
from plugins.otlphttpexporter.sender import OTLPHttpSender

__all__ = ["OTLPHTTPExporterConfig", "OTLPHTTPExporterFactory", "OTLPHttpSender"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(OTLPHTTPExporterFactory())
