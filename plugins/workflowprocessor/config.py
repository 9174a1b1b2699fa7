"""``processors.workflow``: options."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from pipeline import ComponentConfig, Duration, Seconds
from plugins._agentconv import (
    DEFAULT_ERROR_RULES,
    DEFAULT_TIERS,
    AttributeNames,
    ComplexityTier,
    ErrorRule,
)
from plugins._agentdialects import DialectsConfig


class WorkflowConfig(ComponentConfig):
    """``processors.workflow``.

    * ``wait_duration`` (default 2s): how long a trace is held after its last span arrived;
    * ``max_wait_duration`` (default 60s; 0: none): a trace that keeps receiving spans is
      released at the latest about this long after its first span;
    * ``max_traces`` (default 10000) and ``max_bytes`` (default 64 MiB): bounds of what is held;
      beyond them the least recently active traces are released early (counted);
    * ``late_span_cache_size`` (default 10000): released workflows remembered to enrich spans
      that arrive after their trace was released;
    * ``complexity_tiers``: ordered tiers (``name``, ``max_spans``, ``max_tool_calls``,
      ``max_depth``); a workflow meeting none is ``complex``;
    * ``error_classification``: ordered ``{pattern, error_type}`` rules for failed tool calls;
    * ``attributes``: the attribute names read and written (``docs/agent-conventions.md``);
    * ``dialects``: which agent dialects are recognised (built-in, plugins', added tables: see
      ``docs/agent-conventions.md``); an execution is the outermost agent run or workflow of
      a trace by these tables.
    """

    wait_duration: Duration = Seconds(2)
    max_wait_duration: Duration = Seconds(60)
    max_traces: int = Field(10_000, ge=1)
    max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    late_span_cache_size: int = Field(10_000, ge=0)
    complexity_tiers: list[ComplexityTier] = Field(default_factory=lambda: list(DEFAULT_TIERS))
    error_classification: list[ErrorRule] = Field(default_factory=lambda: list(DEFAULT_ERROR_RULES))
    attributes: AttributeNames = Field(default_factory=AttributeNames)
    dialects: DialectsConfig = Field(default_factory=DialectsConfig)

    @model_validator(mode="after")
    def _check(self) -> WorkflowConfig:
        names = [t.name for t in self.complexity_tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"complexity_tiers: tier names must be unique, got {names}")
        for i, rule in enumerate(self.error_classification):
            try:
                re.compile(rule.pattern)
            except re.error as exc:
                raise ValueError(
                    f"error_classification[{i}].pattern: not a regular expression: {exc}"
                ) from exc
        return self
