"""The ``debug`` exporter, with the Collector's options and output.

* ``verbosity: basic`` (default): one line per batch with its counts;
* ``normal``: one line per span or data point;
* ``detailed``: every field of every item, in the Collector's layout.

``sampling_initial`` / ``sampling_thereafter`` limit how many messages are logged per second
(the first ``sampling_initial`` each second, then every ``sampling_thereafter``-th), as the
Collector's logger sampling does. ``use_internal_logger: false`` writes to standard output.
"""

from __future__ import annotations

import base64
import sys
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

import pipeline
from pipeline import (
    Component,
    ComponentConfig,
    CreateSettings,
    ExporterFactory,
    Metrics,
    Payload,
    Signal,
    Stability,
    Traces,
)


class DebugConfig(ComponentConfig):
    """``exporters.debug``."""

    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    sampling_initial: int = Field(2, ge=1)
    sampling_thereafter: int = Field(1, ge=1)
    use_internal_logger: bool = True


_SPAN_KINDS = ["Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"]
_STATUS = ["Unset", "Ok", "Error"]
_TEMPORALITY = ["Unspecified", "Delta", "Cumulative"]


def _enum(names: list[str], value: int) -> str | int:
    """An enum's name; OTLP enums are open, so a value without one (negative included) is
    printed as its number."""
    return names[value] if 0 <= value < len(names) else value


def _ts(nanos: int) -> str:
    dt = datetime.fromtimestamp(nanos / 1e9, tz=UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{nanos % 1_000_000_000:09d} +0000 UTC"


def format_value(v: Any) -> str:
    """An ``AnyValue`` as the Collector prints it: ``Str(x)``, ``Int(1)``..."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return f"Str({v.string_value})"
    if kind == "int_value":
        return f"Int({v.int_value})"
    if kind == "double_value":
        return f"Double({v.double_value:g})"
    if kind == "bool_value":
        return f"Bool({str(v.bool_value).lower()})"
    if kind == "bytes_value":
        return f"Bytes({base64.b64encode(v.bytes_value).decode()})"
    if kind == "array_value":
        return "Slice([" + ", ".join(format_value(x)[:] for x in v.array_value.values) + "])"
    if kind == "kvlist_value":
        return (
            "Map({"
            + ", ".join(f"{kv.key}: {format_value(kv.value)}" for kv in v.kvlist_value.values)
            + "})"
        )
    return "Empty()"


def _attrs(lines: list[str], title: str, attributes: Any, indent: str = "") -> None:
    if len(attributes):
        lines.append(f"{indent}{title}:")
        for kv in attributes:
            lines.append(f"{indent}     -> {kv.key}: {format_value(kv.value)}")


def format_traces_detailed(traces: Traces) -> str:
    lines: list[str] = []
    for i, rs in enumerate(traces.message().resource_spans):
        lines.append(f"ResourceSpans #{i}")
        lines.append(f"Resource SchemaURL: {rs.schema_url}")
        _attrs(lines, "Resource attributes", rs.resource.attributes)
        for j, ss in enumerate(rs.scope_spans):
            lines.append(f"ScopeSpans #{j}")
            lines.append(f"ScopeSpans SchemaURL: {ss.schema_url}")
            lines.append(f"InstrumentationScope {ss.scope.name} {ss.scope.version}".rstrip())
            for k, s in enumerate(ss.spans):
                lines.append(f"Span #{k}")
                lines.append(f"    Trace ID       : {s.trace_id.hex()}")
                lines.append(f"    Parent ID      : {s.parent_span_id.hex()}")
                lines.append(f"    ID             : {s.span_id.hex()}")
                lines.append(f"    Name           : {s.name}")
                lines.append(f"    Kind           : {_enum(_SPAN_KINDS, s.kind)}")
                lines.append(f"    Start time     : {_ts(s.start_time_unix_nano)}")
                lines.append(f"    End time       : {_ts(s.end_time_unix_nano)}")
                lines.append(f"    Status code    : {_enum(_STATUS, s.status.code)}")
                lines.append(f"    Status message : {s.status.message}")
                _attrs(lines, "Attributes", s.attributes)
                if len(s.events):
                    lines.append("Events:")
                    for n, ev in enumerate(s.events):
                        lines.append(f"SpanEvent #{n}")
                        lines.append(f"     -> Name: {ev.name}")
                        lines.append(f"     -> Timestamp: {_ts(ev.time_unix_nano)}")
                        lines.append(
                            f"     -> DroppedAttributesCount: {ev.dropped_attributes_count}"
                        )
                        _attrs(lines, "     -> Attributes", ev.attributes)
                if len(s.links):
                    lines.append("Links:")
                    for n, link in enumerate(s.links):
                        lines.append(f"SpanLink #{n}")
                        lines.append(f"     -> Trace ID: {link.trace_id.hex()}")
                        lines.append(f"     -> ID: {link.span_id.hex()}")
                        lines.append(f"     -> TraceState: {link.trace_state}")
                        _attrs(lines, "     -> Attributes", link.attributes)
    return "\n".join(lines)


def format_metrics_detailed(metrics: Metrics) -> str:
    lines: list[str] = []
    for i, rm in enumerate(metrics.message().resource_metrics):
        lines.append(f"ResourceMetrics #{i}")
        lines.append(f"Resource SchemaURL: {rm.schema_url}")
        _attrs(lines, "Resource attributes", rm.resource.attributes)
        for j, sm in enumerate(rm.scope_metrics):
            lines.append(f"ScopeMetrics #{j}")
            lines.append(f"ScopeMetrics SchemaURL: {sm.schema_url}")
            lines.append(f"InstrumentationScope {sm.scope.name} {sm.scope.version}".rstrip())
            for k, m in enumerate(sm.metrics):
                kind = m.WhichOneof("data") or "empty"
                if kind == "empty":
                    continue
                data = getattr(m, kind)
                lines.append(f"Metric #{k}")
                lines.append("Descriptor:")
                lines.append(f"     -> Name: {m.name}")
                lines.append(f"     -> Description: {m.description}")
                lines.append(f"     -> Unit: {m.unit}")
                type_name = {
                    "gauge": "Gauge",
                    "sum": "Sum",
                    "histogram": "Histogram",
                    "exponential_histogram": "ExponentialHistogram",
                    "summary": "Summary",
                }.get(kind, "Empty")
                lines.append(f"     -> DataType: {type_name}")
                if kind == "sum":
                    lines.append(f"     -> IsMonotonic: {str(data.is_monotonic).lower()}")
                if kind in ("sum", "histogram", "exponential_histogram"):
                    lines.append(
                        "     -> AggregationTemporality: "
                        f"{_enum(_TEMPORALITY, data.aggregation_temporality)}"
                    )
                label = {
                    "gauge": "NumberDataPoints",
                    "sum": "NumberDataPoints",
                    "histogram": "HistogramDataPoints",
                    "exponential_histogram": "ExponentialHistogramDataPoints",
                    "summary": "SummaryDataPoints",
                }[kind]
                for n, dp in enumerate(data.data_points):
                    lines.append(f"{label} #{n}")
                    _attrs(lines, "Data point attributes", dp.attributes)
                    lines.append(f"StartTimestamp: {_ts(dp.start_time_unix_nano)}")
                    lines.append(f"Timestamp: {_ts(dp.time_unix_nano)}")
                    if kind in ("gauge", "sum"):
                        v = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                        lines.append(f"Value: {v}")
                    elif kind == "histogram":
                        lines.append(f"Count: {dp.count}")
                        lines.append(f"Sum: {dp.sum:f}")
                        for b, bound in enumerate(dp.explicit_bounds):
                            lines.append(f"ExplicitBounds #{b}: {bound:f}")
                        for b, count in enumerate(dp.bucket_counts):
                            lines.append(f"Buckets #{b}, Count: {count}")
                    elif kind == "summary":
                        lines.append(f"Count: {dp.count}")
                        lines.append(f"Sum: {dp.sum:f}")
                        for q in dp.quantile_values:
                            lines.append(f"QuantileValue: {q.quantile:f} -> {q.value:f}")
                    else:
                        lines.append(f"Count: {dp.count}")
                        lines.append(f"Sum: {dp.sum:f}")
    return "\n".join(lines)


def format_normal(payload: Payload) -> str:
    lines = []
    if isinstance(payload, Traces):
        for rs in payload.message().resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = " ".join(f"{kv.key}={format_value(kv.value)}" for kv in s.attributes)
                    lines.append(f"{s.name} {s.trace_id.hex()} {s.span_id.hex()} {attrs}".rstrip())
    else:
        for rm in payload.message().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind is None:
                        continue
                    for dp in getattr(m, kind).data_points:
                        attrs = " ".join(
                            f"{kv.key}={format_value(kv.value)}" for kv in dp.attributes
                        )
                        if kind in ("gauge", "sum"):
                            v: Any = (
                                dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                            )
                        else:
                            v = f"count={dp.count} sum={dp.sum:g}"
                        lines.append(f"{m.name}{{{attrs}}} {v}")
    return "\n".join(lines)


class DebugExporter(Component):
    """Logs what reaches it."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: DebugConfig, signal: Signal) -> None:
        self.settings = settings
        self.config = config
        self.signal = signal
        self._window = 0
        self._seen_in_window = 0

    def _sampled(self) -> bool:
        now = int(time.monotonic())
        if now != self._window:
            self._window = now
            self._seen_in_window = 0
        self._seen_in_window += 1
        extra = self._seen_in_window - self.config.sampling_initial
        return extra <= 0 or extra % self.config.sampling_thereafter == 0

    def _emit(self, message: str, fields: dict[str, Any]) -> None:
        if self.config.use_internal_logger:
            self.settings.logger.info(message, extra=fields)
        else:
            suffix = " " + " ".join(f"{k}={v}" for k, v in fields.items()) if fields else ""
            sys.stdout.write(f"{message}{suffix}\n")
            sys.stdout.flush()

    async def consume(self, data: Payload) -> None:
        n = data.item_count()
        self.settings.telemetry.sent(self.signal, n)
        if not self._sampled():
            return
        if isinstance(data, Traces):
            msg = data.message()
            fields: dict[str, Any] = {"resource spans": len(msg.resource_spans), "spans": n}
            title = "Traces"
        else:
            msg = data.message()
            fields = {
                "resource metrics": len(msg.resource_metrics),
                "metrics": sum(
                    len(sm.metrics) for rm in msg.resource_metrics for sm in rm.scope_metrics
                ),
                "data points": n,
            }
            title = "Metrics"
        self._emit(title, fields)
        if self.config.verbosity == "normal":
            self._emit(format_normal(data), {})
        elif self.config.verbosity == "detailed":
            if isinstance(data, Traces):
                text = format_traces_detailed(data)
            else:
                assert isinstance(data, Metrics)
                text = format_metrics_detailed(data)
            self._emit(text, {})


class DebugExporterFactory(ExporterFactory):
    type = "debug"
    config_class = DebugConfig
    description = "Writes what it receives to the log, for debugging."
    stability = {Signal.TRACES: Stability.DEVELOPMENT, Signal.METRICS: Stability.DEVELOPMENT}

    def create_traces(self, settings: CreateSettings, config: DebugConfig) -> DebugExporter:
        return DebugExporter(settings, config, Signal.TRACES)

    def create_metrics(self, settings: CreateSettings, config: DebugConfig) -> DebugExporter:
        return DebugExporter(settings, config, Signal.METRICS)


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(DebugExporterFactory())
