"""The ``otlp`` receiver: OTLP over gRPC (and HTTP), traces, metrics and logs, one listener per
protocol shared by every pipeline and signal that names the receiver."""

from __future__ import annotations

import pipeline
from plugins.otlpreceiver.config import OTLPReceiverConfig
from plugins.otlpreceiver.factory import OTLPReceiverFactory

__all__ = ["OTLPReceiverConfig", "OTLPReceiverFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(OTLPReceiverFactory())
