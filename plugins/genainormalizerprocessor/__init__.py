"""The ``gen_ai_normalizer`` processor: rewrites the agent telemetry of recognised dialects
(OpenLLMetry, OpenInference, the mcp SDK, a2a-sdk, the gateway's own) to the OpenTelemetry
GenAI and MCP semantic conventions on the spans themselves, so every backend downstream sees
one vocabulary. Type and option names are those of the Collector-contrib processor
(``sources: [{name, remove_originals}]``, ``overwrite_schema_url``); the dialects are those of
``plugins/_agentdialects`` (see ``docs/agent-conventions.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

import pipeline
from pipeline import (
    ComponentConfig,
    ConfigModel,
    Consumer,
    CreateSettings,
    ProcessorFactory,
    Signal,
    Stability,
)
from plugins._agentdialects import DEFAULT_DIALECT, DialectsConfig, load_dialects

if TYPE_CHECKING:
    from plugins.genainormalizerprocessor.processor import GenAINormalizerProcessor


class Source(ConfigModel):
    """One dialect to normalize."""

    name: str = Field(min_length=1)
    remove_originals: bool = False
    """Drop the dialect's attributes once copied to their convention names."""


class GenAINormalizerConfig(ComponentConfig):
    """``processors.gen_ai_normalizer``."""

    sources: list[Source] | None = None
    """Dialects to normalize; default: every recognised dialect but the conventions
    themselves, keeping the originals."""
    overwrite_schema_url: bool = False
    """Set the schema URL of scopes whose spans were normalized to the conventions' version."""
    dialects: DialectsConfig = Field(default_factory=DialectsConfig)
    """Extra or disabled dialect tables (the agent components' ``dialects:`` option)."""

    @model_validator(mode="after")
    def _check(self) -> GenAINormalizerConfig:
        known = load_dialects(self.dialects).names
        names = [s.name for s in self.sources or ()]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"sources names unknown dialects {unknown}; known: {', '.join(known)}")
        if len(set(names)) != len(names):
            raise ValueError("sources names a dialect twice")
        return self

    def source_options(self) -> dict[str, bool]:
        """``{dialect: remove_originals}`` of the dialects to normalize."""
        if self.sources is None:
            known = load_dialects(self.dialects).names
            return {n: False for n in known if n != DEFAULT_DIALECT}
        return {s.name: s.remove_originals for s in self.sources}


class GenAINormalizerProcessorFactory(ProcessorFactory):
    type = "gen_ai_normalizer"
    config_class = GenAINormalizerConfig
    description = "Rewrites agent telemetry dialects to the OpenTelemetry GenAI conventions."
    stability = {Signal.TRACES: Stability.ALPHA}

    def create_default_config(self) -> GenAINormalizerConfig:
        return GenAINormalizerConfig()

    def create_traces(self, settings: CreateSettings, config: GenAINormalizerConfig,
                      next_consumer: Consumer) -> GenAINormalizerProcessor:  # fmt: skip
        from plugins.genainormalizerprocessor.processor import GenAINormalizerProcessor

        return GenAINormalizerProcessor(settings, config, next_consumer)


__all__ = ["GenAINormalizerConfig", "GenAINormalizerProcessorFactory", "Source"]


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(GenAINormalizerProcessorFactory())
