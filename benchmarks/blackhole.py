"""A ``blackhole`` exporter for benchmarks: accepts everything, counts it, keeps nothing.

Not a built-in: load it with ``PIPELINE_PLUGINS=benchmarks.blackhole`` (from the repository
root). It never decodes a payload, so it adds no cost of its own to what is measured."""

from __future__ import annotations

import pipeline
from pipeline import (
    Component,
    CreateSettings,
    EmptyConfig,
    ExporterFactory,
    Payload,
    Signal,
    Stability,
)


class BlackholeExporter(Component):
    """Counts items as sent (``otelcol_exporter_sent_*``) and drops the payload."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, signal: Signal) -> None:
        self.settings = settings
        self.signal = signal

    async def consume(self, data: Payload) -> None:
        self.settings.telemetry.sent(self.signal, data.item_count())


class BlackholeExporterFactory(ExporterFactory):
    type = "blackhole"
    config_class = EmptyConfig
    description = "Accepts and discards everything (benchmarks)."
    stability = {Signal.TRACES: Stability.DEVELOPMENT, Signal.METRICS: Stability.DEVELOPMENT}

    def create_traces(self, settings: CreateSettings, config: EmptyConfig) -> BlackholeExporter:
        return BlackholeExporter(settings, Signal.TRACES)

    def create_metrics(self, settings: CreateSettings, config: EmptyConfig) -> BlackholeExporter:
        return BlackholeExporter(settings, Signal.METRICS)


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(BlackholeExporterFactory())
