"""The ``tail_sampling`` processor: the Collector's options and policies, workflow-aware
policies, one hold with the ``workflow`` processor (see ``docs/sampling.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pipeline
from pipeline import Consumer, CreateSettings, ProcessorFactory, Signal, Stability
from plugins.tailsamplingprocessor.config import TailSamplingConfig

if TYPE_CHECKING:
    from plugins.tailsamplingprocessor.processor import TailSamplingProcessor


class TailSamplingProcessorFactory(ProcessorFactory):
    type = "tail_sampling"
    config_class = TailSamplingConfig
    description = "Keeps or drops whole traces by policies, decided once the trace is complete."
    stability = {Signal.TRACES: Stability.BETA}

    def create_default_config(self) -> TailSamplingConfig:
        return TailSamplingConfig.model_validate(
            {"policies": [{"name": "always", "type": "always_sample"}]}
        )

    def create_traces(self, settings: CreateSettings, config: TailSamplingConfig,
                      next_consumer: Consumer) -> TailSamplingProcessor:  # fmt: skip
        from plugins.tailsamplingprocessor.processor import TailSamplingProcessor

        return TailSamplingProcessor(settings, config, next_consumer)


__all__ = ["TailSamplingConfig", "TailSamplingProcessorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(TailSamplingProcessorFactory())
