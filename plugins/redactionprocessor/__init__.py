"""The ``redaction`` processor (traces, logs, metrics): the Collector's options
(``allow_all_keys``, ``allowed_keys``, ``ignored_keys``, ``ignored_key_patterns``,
``blocked_key_patterns``, ``blocked_values``, ``allowed_values``, ``redact_all_types``,
``hash_function``, ``hmac_key``, ``summary``, ``url_sanitizer``, ``db_sanitizer``) and
``genai_content``: the prompts, completions, system instructions and tool call
arguments/results of the GenAI conventions and the common dialects dropped, hashed, truncated
or masked (see ``docs/sampling.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pipeline
from pipeline import Consumer, CreateSettings, ProcessorFactory, Signal, Stability
from plugins.redactionprocessor.config import RedactionConfig

if TYPE_CHECKING:
    from plugins.redactionprocessor.processor import RedactionProcessor


class RedactionProcessorFactory(ProcessorFactory):
    type = "redaction"
    config_class = RedactionConfig
    description = "Removes and masks attributes; drops, hashes or masks GenAI content."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.LOGS: Stability.ALPHA,
        Signal.METRICS: Stability.ALPHA,
    }

    def _create(self, settings: CreateSettings, config: Any, signal: Signal,
                nxt: Consumer) -> RedactionProcessor:  # fmt: skip
        from plugins.redactionprocessor.processor import RedactionProcessor

        return RedactionProcessor(settings, config, signal, nxt)

    def create_traces(self, settings: CreateSettings, config: RedactionConfig,
                      next_consumer: Consumer) -> RedactionProcessor:  # fmt: skip
        return self._create(settings, config, Signal.TRACES, next_consumer)

    def create_logs(self, settings: CreateSettings, config: RedactionConfig,
                    next_consumer: Consumer) -> RedactionProcessor:  # fmt: skip
        return self._create(settings, config, Signal.LOGS, next_consumer)

    def create_metrics(self, settings: CreateSettings, config: RedactionConfig,
                       next_consumer: Consumer) -> RedactionProcessor:  # fmt: skip
        return self._create(settings, config, Signal.METRICS, next_consumer)


__all__ = ["RedactionConfig", "RedactionProcessorFactory"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(RedactionProcessorFactory())
