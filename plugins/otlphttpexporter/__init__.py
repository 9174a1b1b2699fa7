"""The ``otlphttp`` exporter: OTLP over HTTP behind the exporter helper.

:class:`OTLPHttpSender` is reusable on its own (one session, ``send(signal, data)``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pipeline
from plugins.otlphttpexporter.config import OTLPHTTPExporterConfig
from plugins.otlphttpexporter.factory import OTLPHTTPExporterFactory

if TYPE_CHECKING:
    from plugins.otlphttpexporter.sender import OTLPHttpSender

# The implementation modules load when first used (a component is created), not when the
# plugin is registered: a gateway imports only what its configuration needs.
_LAZY = {
    "OTLPHttpSender": "plugins.otlphttpexporter.sender",
}

__all__ = ["OTLPHTTPExporterConfig", "OTLPHTTPExporterFactory", "OTLPHttpSender"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(OTLPHTTPExporterFactory())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
