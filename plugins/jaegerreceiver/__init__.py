"""The ``jaeger`` receiver: spans from Jaeger clients (Thrift over HTTP and UDP) into OTLP
pipelines."""

from __future__ import annotations

import pipeline
from plugins.jaegerreceiver.config import JaegerReceiverConfig
from plugins.jaegerreceiver.factory import JaegerReceiverFactory

__all__ = ["JaegerReceiverConfig", "JaegerReceiverFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(JaegerReceiverFactory())
