"""A third-party plugin: the ``resource_tag`` processor sets one resource attribute on every
resource of the data that passes through it (it decodes and changes the data)."""

from __future__ import annotations

import pipeline
from pipeline import (
    Component,
    ComponentConfig,
    Consumer,
    CreateSettings,
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


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(ResourceTagFactory())
