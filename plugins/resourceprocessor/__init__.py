"""The ``resource`` processor: the attribute actions (``attributes``) applied to the resource
of every span, metric and log record, as in the Collector. Only resources are decoded; spans,
data points and log records pass as bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

import pipeline
from pipeline import ComponentConfig, Consumer, CreateSettings, ProcessorFactory, Signal, Stability
from plugins._attractions import Action

if TYPE_CHECKING:
    from plugins.resourceprocessor.processor import ResourceProcessor


class ResourceConfig(ComponentConfig):
    """``processors.resource``."""

    attributes: list[Action] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ResourceConfig:
        if not self.attributes:
            raise ValueError("missing required field 'attributes': give at least one action")
        return self


class ResourceProcessorFactory(ProcessorFactory):
    type = "resource"
    config_class = ResourceConfig
    description = "Changes resource attributes by actions."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def create_default_config(self) -> ResourceConfig:
        return ResourceConfig.model_validate(
            {"attributes": [{"key": "example", "action": "delete"}]}
        )

    def _create(self, settings: CreateSettings, config: Any, signal: Signal,
                nxt: Consumer) -> ResourceProcessor:  # fmt: skip
        from plugins.resourceprocessor.processor import ResourceProcessor

        return ResourceProcessor(settings, config, signal, nxt)

    def create_traces(self, settings: CreateSettings, config: ResourceConfig,
                      next_consumer: Consumer) -> ResourceProcessor:  # fmt: skip
        return self._create(settings, config, Signal.TRACES, next_consumer)

    def create_metrics(self, settings: CreateSettings, config: ResourceConfig,
                       next_consumer: Consumer) -> ResourceProcessor:  # fmt: skip
        return self._create(settings, config, Signal.METRICS, next_consumer)

    def create_logs(self, settings: CreateSettings, config: ResourceConfig,
                    next_consumer: Consumer) -> ResourceProcessor:  # fmt: skip
        return self._create(settings, config, Signal.LOGS, next_consumer)


__all__ = ["ResourceConfig", "ResourceProcessorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(ResourceProcessorFactory())
