"""Cheap views of encoded OTLP requests, parsed by protobuf's C backend (upb).

A full parse of an ``ExportTraceServiceRequest`` costs about 1 µs per span. These descriptors
describe the same wire format with the inner messages left as ``bytes``: parsing with them
checks the framing (tags, lengths, varints) and counts the items at a small fraction of that
cost, and lets the batch processor split a request without decoding any span.

Field numbers are those of ``opentelemetry/proto/{trace,metrics,logs}/v1``; the shapes here are

* *shallow*: resource and scope kept as bytes, spans / data points / log records as
  ``repeated bytes``;
* *skeleton* (traces and logs): each span's top-level fields parsed, its attributes, events,
  links and status kept as bytes; each log record's trace and span ids (its other fields left
  unknown).

What a receiver accepts is checked by :mod:`pipeline._otlpvalid` (at every depth, as a full
parse would), not by these views.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPT = _F.LABEL_OPTIONAL
_REP = _F.LABEL_REPEATED


def _build() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="pipeline_shallow.proto", package="pipeline_shallow", syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, int, int, int, str | None]]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".pipeline_shallow.{type_name}"

    msg = _F.TYPE_MESSAGE
    byt = _F.TYPE_BYTES
    # traces, shallow
    message("TracesRequest", [("resource_spans", 1, msg, _REP, "ResourceSpans")])
    message(
        "ResourceSpans",
        [
            ("resource", 1, byt, _OPT, None),
            ("scope_spans", 2, msg, _REP, "ScopeSpans"),
            ("schema_url", 3, byt, _OPT, None),
        ],
    )
    message(
        "ScopeSpans",
        [
            ("scope", 1, byt, _OPT, None),
            ("spans", 2, byt, _REP, None),
            ("schema_url", 3, byt, _OPT, None),
        ],
    )
    # traces, skeleton
    message("TracesRequestSkeleton", [("resource_spans", 1, msg, _REP, "ResourceSpansSkeleton")])
    message(
        "ResourceSpansSkeleton",
        [
            ("resource", 1, byt, _OPT, None),
            ("scope_spans", 2, msg, _REP, "ScopeSpansSkeleton"),
            ("schema_url", 3, byt, _OPT, None),
        ],
    )
    message(
        "ScopeSpansSkeleton",
        [
            ("scope", 1, byt, _OPT, None),
            ("spans", 2, msg, _REP, "SpanSkeleton"),
            ("schema_url", 3, byt, _OPT, None),
        ],
    )
    message(
        "SpanSkeleton",
        [
            ("trace_id", 1, byt, _OPT, None),
            ("span_id", 2, byt, _OPT, None),
            ("trace_state", 3, byt, _OPT, None),
            ("parent_span_id", 4, byt, _OPT, None),
            ("name", 5, byt, _OPT, None),
            ("kind", 6, _F.TYPE_INT32, _OPT, None),
            ("start_time_unix_nano", 7, _F.TYPE_FIXED64, _OPT, None),
            ("end_time_unix_nano", 8, _F.TYPE_FIXED64, _OPT, None),
            ("attributes", 9, byt, _REP, None),
            ("dropped_attributes_count", 10, _F.TYPE_UINT32, _OPT, None),
            ("events", 11, byt, _REP, None),
            ("dropped_events_count", 12, _F.TYPE_UINT32, _OPT, None),
            ("links", 13, byt, _REP, None),
            ("dropped_links_count", 14, _F.TYPE_UINT32, _OPT, None),
            ("status", 15, byt, _OPT, None),
            ("flags", 16, _F.TYPE_FIXED32, _OPT, None),
        ],
    )
    # logs: the same three levels as traces (ResourceLogs{resource 1, scope_logs 2, schema_url 3},
    # ScopeLogs{scope 1, log_records 2, schema_url 3}), the record kept as bytes (shallow) or
    # with its ids read (skeleton: LogRecord.trace_id 9, span_id 10)
    for suffix, record in (("", None), ("Skeleton", "LogRecordIds")):
        message(f"LogsRequest{suffix}", [("resource_logs", 1, msg, _REP, f"ResourceLogs{suffix}")])
        message(
            f"ResourceLogs{suffix}",
            [
                ("resource", 1, byt, _OPT, None),
                ("scope_logs", 2, msg, _REP, f"ScopeLogs{suffix}"),
                ("schema_url", 3, byt, _OPT, None),
            ],
        )
        message(
            f"ScopeLogs{suffix}",
            [
                ("scope", 1, byt, _OPT, None),
                ("log_records", 2, msg if record else byt, _REP, record),
                ("schema_url", 3, byt, _OPT, None),
            ],
        )
    message("LogRecordIds", [("trace_id", 9, byt, _OPT, None), ("span_id", 10, byt, _OPT, None)])
    # metrics, shallow down to the data points
    message("MetricsRequest", [("resource_metrics", 1, msg, _REP, "ResourceMetrics")])
    message(
        "ResourceMetrics",
        [
            ("resource", 1, byt, _OPT, None),
            ("scope_metrics", 2, msg, _REP, "ScopeMetrics"),
            ("schema_url", 3, byt, _OPT, None),
        ],
    )
    message(
        "ScopeMetrics",
        [
            ("scope", 1, byt, _OPT, None),
            ("metrics", 2, msg, _REP, "Metric"),
            ("schema_url", 3, byt, _OPT, None),
        ],
    )
    message(
        "Metric",
        [
            ("name", 1, byt, _OPT, None),
            ("description", 2, byt, _OPT, None),
            ("unit", 3, byt, _OPT, None),
            ("gauge", 5, msg, _OPT, "Points"),
            ("sum", 7, msg, _OPT, "Points"),
            ("histogram", 9, msg, _OPT, "Points"),
            ("exponential_histogram", 10, msg, _OPT, "Points"),
            ("summary", 11, msg, _OPT, "Points"),
            ("metadata", 12, byt, _REP, None),
        ],
    )
    message(
        "Points",
        [
            ("data_points", 1, byt, _REP, None),
            ("aggregation_temporality", 2, _F.TYPE_INT32, _OPT, None),
            ("is_monotonic", 3, _F.TYPE_BOOL, _OPT, None),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        m.name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"pipeline_shallow.{m.name}")
        )
        for m in fdp.message_type
    }


_CLASSES = _build()
ShallowTraces: Any = _CLASSES["TracesRequest"]
SkeletonTraces: Any = _CLASSES["TracesRequestSkeleton"]
ShallowMetrics: Any = _CLASSES["MetricsRequest"]
ShallowLogs: Any = _CLASSES["LogsRequest"]
SkeletonLogs: Any = _CLASSES["LogsRequestSkeleton"]

METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


def count_spans(shallow: Any) -> int:
    """Spans in a parsed shallow or skeleton traces request."""
    return sum(len(ss.spans) for rs in shallow.resource_spans for ss in rs.scope_spans)


def count_log_records(shallow: Any) -> int:
    """Log records in a parsed shallow, skeleton or framing logs request."""
    return sum(len(sl.log_records) for rl in shallow.resource_logs for sl in rl.scope_logs)


def metric_points(metric: Any) -> int:
    """Data points of one shallow metric (whichever data kind it carries)."""
    return (
        len(metric.gauge.data_points)
        + len(metric.sum.data_points)
        + len(metric.histogram.data_points)
        + len(metric.exponential_histogram.data_points)
        + len(metric.summary.data_points)
    )


def count_metric_points(shallow: Any) -> int:
    """Data points in a parsed shallow metrics request."""
    return sum(
        metric_points(m)
        for rm in shallow.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )
