"""The ``debug`` exporter, with the Collector's options and output.

* ``verbosity: basic`` (default): one line per batch with its counts;
* ``normal``: one line per span, data point or log record;
* ``detailed``: every field of every item, in the Collector's layout (values as the Collector
  prints them: ``Str(x)``, ``Int(1)``, ``Double(0.5)``, ``Map({"k":"v"})``...).

``sampling_initial`` / ``sampling_thereafter`` limit how many messages are logged per second
(the first ``sampling_initial`` each second, then every ``sampling_thereafter``-th), as the
Collector's logger sampling does. ``use_internal_logger: false`` writes to standard output.
"""

from __future__ import annotations

import base64
import decimal
import json
import math
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
    Logs,
    Metrics,
    Payload,
    Signal,
    Stability,
    Traces,
)
from pipeline.pdata import iter_log_records


class DebugConfig(ComponentConfig):
    """``exporters.debug``."""

    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    sampling_initial: int = Field(2, ge=1)
    sampling_thereafter: int = Field(1, ge=1)
    use_internal_logger: bool = True


_SPAN_KINDS = ["Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"]
_STATUS = ["Unset", "Ok", "Error"]
_TEMPORALITY = ["Unspecified", "Delta", "Cumulative"]
# plog.SeverityNumber's names, by number
_SEVERITIES = ["Unspecified"] + [
    f"{level}{n if n > 1 else ''}"
    for level in ("Trace", "Debug", "Info", "Warn", "Error", "Fatal")
    for n in range(1, 5)
]
_VALUE_TYPES = {
    "string_value": "Str",
    "int_value": "Int",
    "double_value": "Double",
    "bool_value": "Bool",
    "bytes_value": "Bytes",
    "array_value": "Slice",
    "kvlist_value": "Map",
}


def _enum(names: list[str], value: int) -> str | int:
    """An enum's name; OTLP enums are open, so a value without one (negative included) is
    printed as its number."""
    return names[value] if 0 <= value < len(names) else value


def _ts(nanos: int) -> str:
    """A timestamp as Go prints a ``time.Time`` (trailing zeros of the fraction left out)."""
    dt = datetime.fromtimestamp(nanos // 1_000_000_000, tz=UTC)
    fraction = f"{nanos % 1_000_000_000:09d}".rstrip("0")
    return dt.strftime("%Y-%m-%d %H:%M:%S") + (f".{fraction}" if fraction else "") + " +0000 UTC"


def _go_float(f: float) -> str:
    """A double as Go's ``strconv.FormatFloat(f, 'f', -1, 64)``: shortest, never exponent."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return format(decimal.Decimal(repr(f)).normalize(), "f")


def _raw(v: Any) -> Any:
    """An ``AnyValue`` as plain Python (pcommon's ``AsRaw``), for its JSON form."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        f = v.double_value
        return int(f) if f.is_integer() and abs(f) < 1e21 else f  # Go prints 3.0 as 3
    if kind == "bool_value":
        return v.bool_value
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind == "array_value":
        return [_raw(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in v.kvlist_value.values}
    return None


def _go_json(raw: Any) -> str:
    """JSON as Go's ``encoding/json`` writes it: compact, keys sorted, ``<>&`` escaped."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def value_as_string(v: Any) -> str:
    """An ``AnyValue`` as pcommon's ``AsString``: maps and slices as JSON."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return str(v.string_value)
    if kind == "double_value":
        return _go_float(v.double_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind in ("array_value", "kvlist_value"):
        return _go_json(_raw(v))
    if kind is None:
        return ""
    return str(_raw(v))


def format_value(v: Any) -> str:
    """An ``AnyValue`` as the Collector prints it: ``Str(x)``, ``Int(1)``, ``Map({"k":1})``..."""
    return f"{_VALUE_TYPES.get(v.WhichOneof('value') or '', 'Empty')}({value_as_string(v)})"


def _id(raw: bytes) -> str:
    """A trace or span id as pdata prints it: hex, empty when unset (all zero)."""
    return raw.hex() if any(raw) else ""


def _attrs(lines: list[str], title: str, attributes: Any, indent: str = "") -> None:
    if len(attributes):
        lines.append(f"{indent}{title}:")
        for kv in attributes:
            lines.append(f"{indent}     -> {kv.key}: {format_value(kv.value)}")


def _resource(lines: list[str], title: str, i: int, group: Any) -> None:
    """A ``Resource*`` header as the Collector writes it."""
    lines.append(f"{title} #{i}")
    lines.append(f"Resource SchemaURL: {group.schema_url}")
    _attrs(lines, "Resource attributes", group.resource.attributes)


def _scope(lines: list[str], title: str, j: int, group: Any) -> None:
    """A ``Scope*`` header as the Collector writes it (name and version even when empty)."""
    lines.append(f"{title} #{j}")
    lines.append(f"{title} SchemaURL: {group.schema_url}")
    lines.append(f"InstrumentationScope {group.scope.name} {group.scope.version}")
    _attrs(lines, "InstrumentationScope attributes", group.scope.attributes)


def format_traces_detailed(traces: Traces) -> str:
    lines: list[str] = []
    for i, rs in enumerate(traces.message().resource_spans):
        _resource(lines, "ResourceSpans", i, rs)
        for j, ss in enumerate(rs.scope_spans):
            _scope(lines, "ScopeSpans", j, ss)
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
        _resource(lines, "ResourceMetrics", i, rm)
        for j, sm in enumerate(rm.scope_metrics):
            _scope(lines, "ScopeMetrics", j, sm)
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


def format_logs_detailed(logs: Logs) -> str:
    lines: list[str] = []
    for i, rl in enumerate(logs.message().resource_logs):
        _resource(lines, "ResourceLog", i, rl)
        for j, sl in enumerate(rl.scope_logs):
            _scope(lines, "ScopeLogs", j, sl)
            for k, lr in enumerate(sl.log_records):
                severity = _SEVERITIES[lr.severity_number] if lr.severity_number < 25 else ""
                lines.append(f"LogRecord #{k}")
                lines.append(f"ObservedTimestamp: {_ts(lr.observed_time_unix_nano)}")
                lines.append(f"Timestamp: {_ts(lr.time_unix_nano)}")
                lines.append(f"SeverityText: {lr.severity_text}")
                lines.append(f"SeverityNumber: {severity}({lr.severity_number})")
                if lr.event_name:
                    lines.append(f"EventName: {lr.event_name}")
                lines.append(f"Body: {format_value(lr.body)}")
                _attrs(lines, "Attributes", lr.attributes)
                lines.append(f"Trace ID: {_id(lr.trace_id)}")
                lines.append(f"Span ID: {_id(lr.span_id)}")
                lines.append(f"Flags: {lr.flags}")
    return "\n".join(lines)


def format_normal(payload: Payload) -> str:
    lines = []
    if isinstance(payload, Logs):
        # the Collector's: the body as a string, then the attributes as key=value
        for _, _, lr in iter_log_records(payload):
            attrs = " ".join(f"{kv.key}={value_as_string(kv.value)}" for kv in lr.attributes)
            lines.append(f"{value_as_string(lr.body)} {attrs}".rstrip())
    elif isinstance(payload, Traces):
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
        if not self._sampled():
            self.settings.telemetry.sent(self.signal, n)
            return
        # everything is decoded and formatted before anything is written or counted: a payload
        # that cannot be decoded leaves no trace here (the engine isolates and drops it)
        if isinstance(data, Traces):
            msg = data.message()
            fields: dict[str, Any] = {"resource spans": len(msg.resource_spans), "spans": n}
            title = "Traces"
        elif isinstance(data, Logs):
            msg = data.message()
            fields = {"resource logs": len(msg.resource_logs), "log records": n}
            title = "Logs"
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
        text = None
        if self.config.verbosity == "normal":
            text = format_normal(data)
        elif self.config.verbosity == "detailed":
            if isinstance(data, Traces):
                text = format_traces_detailed(data)
            elif isinstance(data, Logs):
                text = format_logs_detailed(data)
            else:
                assert isinstance(data, Metrics)
                text = format_metrics_detailed(data)
        self.settings.telemetry.sent(self.signal, n)
        self._emit(title, fields)
        if text is not None:
            self._emit(text, {})


class DebugExporterFactory(ExporterFactory):
    type = "debug"
    config_class = DebugConfig
    description = "Writes what it receives to the log, for debugging."
    stability = {
        Signal.TRACES: Stability.DEVELOPMENT,
        Signal.METRICS: Stability.DEVELOPMENT,
        Signal.LOGS: Stability.DEVELOPMENT,
    }

    def create_traces(self, settings: CreateSettings, config: DebugConfig) -> DebugExporter:
        return DebugExporter(settings, config, Signal.TRACES)

    def create_metrics(self, settings: CreateSettings, config: DebugConfig) -> DebugExporter:
        return DebugExporter(settings, config, Signal.METRICS)

    def create_logs(self, settings: CreateSettings, config: DebugConfig) -> DebugExporter:
        return DebugExporter(settings, config, Signal.LOGS)


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(DebugExporterFactory())
