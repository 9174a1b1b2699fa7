"""The ``otlp`` exporter: OTLP over gRPC, bytes in and bytes out, behind the exporter helper.

:class:`OTLPGrpcSender` is reusable on its own (one channel, ``send(signal, data)``)."""

from __future__ import annotations

import pipeline
from plugins.otlpexporter.config import ClientTLSConfig, OTLPExporterConfig
from plugins.otlpexporter.exporter import OTLPExporter
from plugins.otlpexporter.factory import OTLPExporterFactory
from plugins.otlpexporter.sender import OTLPGrpcSender

__all__ = [
    "ClientTLSConfig",
    "OTLPExporter",
    "OTLPExporterConfig",
    "OTLPExporterFactory",
    "OTLPGrpcSender",
]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(OTLPExporterFactory())
