"""The ``attributes`` processor: insert, update, upsert, delete, hash, extract and convert
attributes of spans, log records and data points, with the Collector's options (``actions``,
``include``, ``exclude``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

import pipeline
from pipeline import ComponentConfig, Consumer, CreateSettings, ProcessorFactory, Signal, Stability
from plugins._attractions import Action
from plugins._matchprops import MatchProperties

if TYPE_CHECKING:
    from plugins.attributesprocessor.processor import AttributesProcessor


class AttributesConfig(ComponentConfig):
    """``processors.attributes``."""

    actions: list[Action] = Field(default_factory=list)
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None

    @model_validator(mode="after")
    def _check(self) -> AttributesConfig:
        if not self.actions:
            raise ValueError("missing required field 'actions': give at least one action")
        return self


class AttributesProcessorFactory(ProcessorFactory):
    type = "attributes"
    config_class = AttributesConfig
    description = "Changes span, log record and data point attributes by actions."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def create_default_config(self) -> AttributesConfig:
        return AttributesConfig.model_validate(
            {"actions": [{"key": "example", "action": "delete"}]}
        )

    def _create(self, settings: CreateSettings, config: Any, signal: Signal,
                nxt: Consumer) -> AttributesProcessor:  # fmt: skip
        from plugins.attributesprocessor.processor import AttributesProcessor

        return AttributesProcessor(settings, config, signal, nxt)

    def create_traces(self, settings: CreateSettings, config: AttributesConfig,
                      next_consumer: Consumer) -> AttributesProcessor:  # fmt: skip
        return self._create(settings, config, Signal.TRACES, next_consumer)

    def create_metrics(self, settings: CreateSettings, config: AttributesConfig,
                       next_consumer: Consumer) -> AttributesProcessor:  # fmt: skip
        return self._create(settings, config, Signal.METRICS, next_consumer)

    def create_logs(self, settings: CreateSettings, config: AttributesConfig,
                    next_consumer: Consumer) -> AttributesProcessor:  # fmt: skip
        return self._create(settings, config, Signal.LOGS, next_consumer)


__all__ = ["AttributesConfig", "AttributesProcessorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(AttributesProcessorFactory())
