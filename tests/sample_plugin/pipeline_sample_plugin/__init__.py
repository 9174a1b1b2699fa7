"""A third-party plugin for the gateway's tests.

* ``resource_tag`` processor (traces, metrics): sets one resource attribute on every resource of
  the data that passes through it (it decodes and changes the data);
* ``span_sink`` exporter (traces only): counts the spans it receives and logs the total.
"""

from __future__ import annotations

from typing import Any

import pipeline
from pipeline import (
    Component,
    ComponentConfig,
    Consumer,
    CreateSettings,
    ExporterFactory,
    Payload,
    ProcessorFactory,
    Signal,
    Stability,
)


class ResourceTagConfig(ComponentConfig):
    key: str = "tagged.by"
    value: str = "sample-plugin"


class ResourceTagProcessor(Component):
    mutates_data = True

    def __init__(self, config: ResourceTagConfig, next_consumer: Consumer) -> None:
        self.config = config
        self.next = next_consumer

    async def consume(self, data: Payload) -> None:
        message = data.mutable_message()
        resources = (
            message.resource_spans if data.signal == Signal.TRACES else message.resource_metrics
        )
        for entry in resources:
            attr = entry.resource.attributes.add(key=self.config.key)
            attr.value.string_value = self.config.value
        await self.next.consume(data)


class ResourceTagFactory(ProcessorFactory):
    type = "resource_tag"
    config_class = ResourceTagConfig
    description = "Sets one resource attribute (sample third-party plugin)."
    stability = {Signal.TRACES: Stability.ALPHA, Signal.METRICS: Stability.ALPHA}

    def create_traces(
        self, settings: CreateSettings, config: ResourceTagConfig, next_consumer: Consumer
    ) -> ResourceTagProcessor:
        return ResourceTagProcessor(config, next_consumer)

    def create_metrics(
        self, settings: CreateSettings, config: ResourceTagConfig, next_consumer: Consumer
    ) -> ResourceTagProcessor:
        return ResourceTagProcessor(config, next_consumer)


class SpanSink(Component):
    mutates_data = False

    def __init__(self, settings: CreateSettings) -> None:
        self.settings = settings
        self.spans = 0

    async def consume(self, data: Payload) -> None:
        self.spans += data.item_count()
        self.settings.telemetry.sent(data.signal, data.item_count())

    async def shutdown(self) -> None:
        self.settings.logger.info("span sink total", extra={"spans": self.spans})


class SpanSinkFactory(ExporterFactory):
    type = "span_sink"
    description = "Counts spans (sample third-party plugin; traces only)."
    stability = {Signal.TRACES: Stability.DEVELOPMENT}

    def create_traces(self, settings: CreateSettings, config: ComponentConfig) -> SpanSink:
        return SpanSink(settings)


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(ResourceTagFactory())
    registry.register(SpanSinkFactory())


@pipeline.hookimpl
def register_ottl_functions(functions: Any) -> None:
    """An OTTL converter: ``Reverse(value)`` reverses a string."""
    from pipeline.ottl import OTTLRuntimeError, Param

    def reverse(value: Any) -> Any:
        def run(ctx: Any) -> str:
            text = value(ctx)
            if not isinstance(text, str):
                raise OTTLRuntimeError("Reverse needs a string")
            return text[::-1]

        return run

    functions.add("Reverse", [Param("value", "getter")], reverse)
