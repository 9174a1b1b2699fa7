"""Config and factory of the ``filter`` processor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, PrivateAttr, model_validator

from pipeline import (
    ComponentConfig,
    ConfigModel,
    Consumer,
    CreateSettings,
    ProcessorFactory,
    Signal,
    Stability,
)
from plugins._matchprops import MatchProperties
from plugins._ottlconfig import ConditionGroup, ErrorMode, config_error, ottl_message

if TYPE_CHECKING:
    from pipeline.ottl.runner import Filter
    from plugins.filterprocessor.processor import FilterProcessor


class TracesSection(ConfigModel):
    """``traces``: OTTL conditions; a span (span event) is dropped when any holds."""

    span: list[str] = Field(default_factory=list)
    spanevent: list[str] = Field(default_factory=list)


class MetricsSection(ConfigModel):
    """``metrics``: OTTL conditions, or the older ``include``/``exclude``."""

    metric: list[str] = Field(default_factory=list)
    datapoint: list[str] = Field(default_factory=list)
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None


class LogsSection(ConfigModel):
    """``logs``: OTTL conditions, or the older ``include``/``exclude``."""

    log_record: list[str] = Field(default_factory=list)
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None


class SpansSection(ConfigModel):
    """``spans``: the older ``include``/``exclude`` match properties."""

    include: MatchProperties | None = None
    exclude: MatchProperties | None = None


_SECTIONS = {
    Signal.TRACES: ("traces", (("span", "span"), ("spanevent", "spanevent"))),
    Signal.METRICS: ("metrics", (("metric", "metric"), ("datapoint", "datapoint"))),
    Signal.LOGS: ("logs", (("log_record", "log"),)),
}
_FLAT = {
    Signal.TRACES: "trace_conditions",
    Signal.METRICS: "metric_conditions",
    Signal.LOGS: "log_conditions",
}


class FilterConfig(ComponentConfig):
    """``processors.filter``."""

    error_mode: ErrorMode = "propagate"
    traces: TracesSection = TracesSection()
    metrics: MetricsSection = MetricsSection()
    logs: LogsSection = LogsSection()
    spans: SpansSection = SpansSection()
    trace_conditions: list[str | ConditionGroup] = Field(default_factory=list)
    metric_conditions: list[str | ConditionGroup] = Field(default_factory=list)
    log_conditions: list[str | ConditionGroup] = Field(default_factory=list)
    _filters: dict[Signal, list[Any]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _compile(self) -> FilterConfig:
        wanted = [
            bool(self.traces.span or self.traces.spanevent or self.trace_conditions),
            bool(self.metrics.metric or self.metrics.datapoint or self.metric_conditions),
            bool(self.logs.log_record or self.log_conditions),
        ]
        if not any(wanted):
            return self
        from pipeline.ottl import StatementError, compile_conditions
        from pipeline.ottl.runner import Filter

        errors: list[tuple[tuple[Any, ...], str, Any]] = []
        for signal, (section_name, keys) in _SECTIONS.items():
            section = getattr(self, section_name)
            filters: list[Filter] = []
            for key, context in keys:
                texts = getattr(section, key)
                if not texts:
                    continue
                try:
                    _, conditions = compile_conditions(texts, str(signal), context)
                except StatementError as exc:
                    text = texts[max(exc.index, 0)]
                    errors.append(
                        (
                            (section_name, key, max(exc.index, 0)),
                            ottl_message(exc.detail, text),
                            text,
                        )
                    )
                    continue
                filters.append(Filter(context, conditions, self.error_mode))
            flat = _FLAT[signal]
            for i, entry in enumerate(getattr(self, flat)):
                texts = [entry] if isinstance(entry, str) else entry.conditions
                group_context = None if isinstance(entry, str) else entry.context
                mode = (
                    self.error_mode
                    if isinstance(entry, str)
                    else (entry.error_mode or self.error_mode)
                )
                try:
                    chosen, conditions = compile_conditions(texts, str(signal), group_context)
                except StatementError as exc:
                    text = texts[max(exc.index, 0)]
                    loc: tuple[Any, ...] = (
                        (flat, i) if isinstance(entry, str) else (flat, i, "conditions",
                                                                   max(exc.index, 0))
                    )  # fmt: skip
                    errors.append((loc, ottl_message(exc.detail, text), text))
                    continue
                filters.append(Filter(chosen, conditions, mode))
            self._filters[signal] = filters
        if errors:
            raise config_error("FilterConfig", errors)
        return self

    def filters(self, signal: Signal) -> list[Filter]:
        return list(self._filters.get(signal, []))

    def match_properties(
        self, signal: Signal
    ) -> tuple[MatchProperties | None, MatchProperties | None]:
        section: Any = {Signal.TRACES: self.spans, Signal.METRICS: self.metrics,
                        Signal.LOGS: self.logs}[signal]  # fmt: skip
        return section.include, section.exclude


class FilterProcessorFactory(ProcessorFactory):
    type = "filter"
    config_class = FilterConfig
    description = "Drops telemetry matching OTTL conditions (the Collector's filter processor)."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def _create(
        self, settings: CreateSettings, config: FilterConfig, signal: Signal, nxt: Consumer
    ) -> FilterProcessor:
        from plugins.filterprocessor.processor import FilterProcessor

        return FilterProcessor(settings, config, signal, nxt)

    def create_traces(
        self, settings: CreateSettings, config: FilterConfig, next_consumer: Consumer
    ) -> FilterProcessor:
        return self._create(settings, config, Signal.TRACES, next_consumer)

    def create_metrics(
        self, settings: CreateSettings, config: FilterConfig, next_consumer: Consumer
    ) -> FilterProcessor:
        return self._create(settings, config, Signal.METRICS, next_consumer)

    def create_logs(
        self, settings: CreateSettings, config: FilterConfig, next_consumer: Consumer
    ) -> FilterProcessor:
        return self._create(settings, config, Signal.LOGS, next_consumer)
