"""The ``resourcedetection`` processor (also ``resource_detection``): resource attributes
detected once at start (``env``, ``system`` and ``docker`` detectors, with the Collector's
options) and added to every resource of traces, metrics and logs."""

from __future__ import annotations

import pipeline
from plugins.resourcedetectionprocessor.factory import (
    ResourceDetectionConfig,
    ResourceDetectionProcessorFactory,
)

__all__ = ["ResourceDetectionConfig", "ResourceDetectionProcessorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(ResourceDetectionProcessorFactory())
