"""The ``transform`` processor: OTTL statements run on traces, metrics and logs, with the
Collector's options (``trace_statements``, ``metric_statements``, ``log_statements`` in the
flat and the grouped ``context``/``statements``/``conditions`` forms, ``error_mode``)."""

from __future__ import annotations

import pipeline
from plugins.transformprocessor.factory import TransformConfig, TransformProcessorFactory

__all__ = ["TransformConfig", "TransformProcessorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(TransformProcessorFactory())
