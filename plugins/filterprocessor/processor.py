"""The ``filter`` processor instance."""

from __future__ import annotations

from typing import Any

from pipeline import Component, Consumer, CreateSettings, Payload, Signal
from pipeline.ottl import Condition
from pipeline.ottl.contexts import Ctx
from pipeline.ottl.runner import Filter, error_reporter, filter_payload
from pipeline.ottl.values import PMap
from plugins._matchprops import MatchProperties
from plugins.filterprocessor.factory import FilterConfig

_COUNTERS = {
    Signal.TRACES: ("otelcol_processor_filter_spans_filtered", "Spans dropped by the filter."),
    Signal.METRICS: (
        "otelcol_processor_filter_datapoints_filtered",
        "Data points dropped by the filter.",
    ),
    Signal.LOGS: ("otelcol_processor_filter_logs_filtered", "Log records dropped by the filter."),
}


def _legacy_condition(
    signal: Signal, include: MatchProperties | None, exclude: MatchProperties | None
) -> Condition:
    """The older ``include``/``exclude`` as a condition that holds for what is dropped: what
    ``include`` does not match, and what ``exclude`` matches."""

    def facts(ctx: Ctx) -> dict[str, Any]:
        out: dict[str, Any] = {"resource": PMap(ctx.resource.msg.attributes)}
        if signal is Signal.TRACES:
            span = ctx.span
            out.update(scope=ctx.scope.msg, attributes=span.attributes(),
                       span_name=span.src.name, span_kind=span.src.kind)  # fmt: skip
        elif signal is Signal.LOGS:
            log = ctx.log
            out.update(scope=ctx.scope.msg, attributes=log.attributes(), body=log.body(),
                       severity_text=log.src.severity_text,
                       severity_number=log.src.severity_number)  # fmt: skip
        else:
            out.update(scope=ctx.scope.msg, metric_name=ctx.metric.name)
        return out

    def evaluate(ctx: Ctx) -> bool:
        f = facts(ctx)
        if include is not None and not include.matches(**f):
            return True
        return exclude is not None and exclude.matches(**f)

    return Condition("include/exclude", "", evaluate, {"name", "kind", "severity_text"})


class FilterProcessor(Component):
    """Drops what the conditions select; passes the rest on (nothing when everything was
    dropped). Like ``transform``, it never changes the payload it is given."""

    mutates_data = False

    def __init__(
        self, settings: CreateSettings, config: FilterConfig, signal: Signal, nxt: Consumer
    ) -> None:
        self.settings = settings
        self.signal = signal
        self.next = nxt
        self.filters = config.filters(signal)
        include, exclude = config.match_properties(signal)
        if include is not None or exclude is not None:
            context = {Signal.TRACES: "span", Signal.METRICS: "metric", Signal.LOGS: "log"}[signal]
            self.filters.insert(
                0,
                Filter(context, [_legacy_condition(signal, include, exclude)], "propagate"),
            )
        self._report = error_reporter(settings.log_limited)
        name, doc = _COUNTERS[signal]
        self._filtered = settings.telemetry.service.counter(name, doc, ("processor",)).labels(
            settings.name
        )

    async def consume(self, data: Payload) -> None:
        if self.filters and data.item_count():
            kept, dropped = filter_payload(data, self.filters, self._report)
            if dropped:
                self._filtered.inc(dropped)
            if kept is None:
                return
            data = kept
        await self.next.consume(data)
