"""The ``otlp`` exporter: OTLP over gRPC, bytes in and bytes out, behind the exporter helper.

:class:`OTLPGrpcSender` is reusable on its own (one channel, ``send(signal, data)``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pipeline
from plugins.otlpexporter.config import ClientTLSConfig, OTLPExporterConfig
from plugins.otlpexporter.factory import OTLPExporterFactory

if TYPE_CHECKING:
    from plugins.otlpexporter.exporter import OTLPExporter
    from plugins.otlpexporter.sender import OTLPGrpcSender

# The implementation modules load when first used (a component is created), not when the
# plugin is registered: a gateway imports only what its configuration needs.
_LAZY = {
    "OTLPExporter": "plugins.otlpexporter.exporter",
    "OTLPGrpcSender": "plugins.otlpexporter.sender",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
