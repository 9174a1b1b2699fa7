"""The ``filter`` processor: drops spans, span events, metrics, data points and log records
that OTTL conditions (or the older ``include``/``exclude`` match properties) select, with the
Collector's options."""

from __future__ import annotations

import pipeline
from plugins.filterprocessor.factory import FilterConfig, FilterProcessorFactory

__all__ = ["FilterConfig", "FilterProcessorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(FilterProcessorFactory())
