"""The ``probabilistic_sampler`` processor (traces and logs), with the Collector's options:
``sampling_percentage``, ``hash_seed``, ``mode`` (``hash_seed``, ``proportional``,
``equalizing``), ``fail_closed``, ``sampling_precision`` and, for logs, ``attribute_source``,
``from_attribute`` and ``sampling_priority``. Decisions are the Collector's, bit for bit, so
gateways and Collectors sampling the same traffic keep the same traces (see
``docs/sampling.md``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import model_validator

import pipeline
from pipeline import ComponentConfig, Consumer, CreateSettings, ProcessorFactory, Signal, Stability
from plugins.probabilisticsamplerprocessor.sampling import MIN_SAMPLING_PROBABILITY, NUM_HEX_DIGITS

if TYPE_CHECKING:
    from plugins.probabilisticsamplerprocessor.processor import ProbabilisticSamplerProcessor


class ProbabilisticSamplerConfig(ComponentConfig):
    """``processors.probabilistic_sampler``."""

    sampling_percentage: float = 0.0
    hash_seed: int = 0
    mode: Literal["", "hash_seed", "proportional", "equalizing"] = ""
    fail_closed: bool = True
    sampling_precision: int = 4
    attribute_source: Literal["traceID", "record"] = "traceID"
    from_attribute: str = ""
    sampling_priority: str = ""

    @model_validator(mode="after")
    def _check(self) -> ProbabilisticSamplerConfig:
        pct = self.sampling_percentage
        if math.isinf(pct) or math.isnan(pct):
            raise ValueError(f"sampling rate is invalid: {pct}%")
        if pct < 0:
            raise ValueError(f"sampling rate is negative: {pct}%")
        if 0 < pct / 100 < MIN_SAMPLING_PROBABILITY:
            raise ValueError(f"sampling rate is too small: {pct}%")
        if not 0 <= self.hash_seed <= 0xFFFFFFFF:
            raise ValueError("hash_seed must be an unsigned 32-bit integer")
        if self.sampling_precision <= 0:
            raise ValueError(f"invalid sampling precision: {self.sampling_precision}")
        if self.sampling_precision > NUM_HEX_DIGITS:
            raise ValueError(
                f"sampling precision is too great, should be <= 14: {self.sampling_precision}"
            )
        return self


class ProbabilisticSamplerProcessorFactory(ProcessorFactory):
    type = "probabilistic_sampler"
    config_class = ProbabilisticSamplerConfig
    description = "Keeps a share of the traces (log records), consistent with the trace id."
    stability = {Signal.TRACES: Stability.BETA, Signal.LOGS: Stability.ALPHA}

    def _create(self, settings: CreateSettings, config: Any, signal: Signal,
                nxt: Consumer) -> ProbabilisticSamplerProcessor:  # fmt: skip
        from plugins.probabilisticsamplerprocessor.processor import ProbabilisticSamplerProcessor

        return ProbabilisticSamplerProcessor(settings, config, signal, nxt)

    def create_traces(self, settings: CreateSettings, config: ProbabilisticSamplerConfig,
                      next_consumer: Consumer) -> ProbabilisticSamplerProcessor:  # fmt: skip
        return self._create(settings, config, Signal.TRACES, next_consumer)

    def create_logs(self, settings: CreateSettings, config: ProbabilisticSamplerConfig,
                    next_consumer: Consumer) -> ProbabilisticSamplerProcessor:  # fmt: skip
        return self._create(settings, config, Signal.LOGS, next_consumer)


__all__ = ["ProbabilisticSamplerConfig", "ProbabilisticSamplerProcessorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(ProbabilisticSamplerProcessorFactory())
