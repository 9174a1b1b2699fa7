"""Corrupt-but-framing-valid OTLP requests: what a framing parse accepts (the shallow view the
engine splits and merges payloads with, :func:`framing_valid`) and a full decode deeper down
refuses. The receivers' framing check used to let all of them through; their edge check
(``Payload.validate``, a full-depth check) now refuses every one, but a component must still
not die of them (a third-party receiver, a bug, a payload built in-process): the isolation
tests push them past the edge. Shared by the isolation tests, the edge-check tests and the
fuzzers' seed corpora.

Every request here is framing-valid and either fails a full protobuf parse or carries ids of
the wrong length.
"""

from __future__ import annotations

import os
import random

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import _wire
from pipeline._pbwire import encode_varint as varint

MARK = b"POISON"  # a placeholder replaced by bytes of the same length (framing unchanged)
BAD_UTF8 = b"P\xff\xfeS\xc0N"  # invalid UTF-8, same length as MARK


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def good_traces(spans: int = 3, service: str = "svc", seed: int | None = None) -> bytes:
    """A valid request: one resource, ``spans`` spans with attributes and an event."""
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add(key="service.name")
    kv.value.string_value = service
    ss = rs.scope_spans.add()
    ss.scope.name = "poison-tests"
    trace_id = rng.randbytes(16) if seed is not None else os.urandom(16)
    for i in range(spans):
        s = ss.spans.add(
            trace_id=trace_id,
            span_id=(rng.randbytes(8) if seed is not None else os.urandom(8)),
            name=f"op-{i}",
            kind=2,
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_100_000_000 + i,
        )
        # an HTTP server span (the agentmetrics connector's http family)
        s.attributes.add(key="http.request.method").value.string_value = "GET"
        s.attributes.add(key="http.route").value.string_value = f"/route/{i}"
        s.attributes.add(key="http.response.status_code").value.int_value = 200
        s.attributes.add(key="n").value.int_value = i
        s.events.add(name="ev", time_unix_nano=1_700_000_000_000_000_001)
    return req.SerializeToString()


def good_metrics(points: int = 3, service: str = "svc") -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = service
    sm = rm.scope_metrics.add()
    m = sm.metrics.add(name="requests", unit="1")
    m.sum.aggregation_temporality = 2
    m.sum.is_monotonic = True
    for i in range(points):
        dp = m.sum.data_points.add(as_int=i + 1, time_unix_nano=1_700_000_000_000_000_000 + i)
        dp.attributes.add(key="route").value.string_value = f"/r/{i}"
    return req.SerializeToString()


def good_logs(records: int = 3, service: str = "svc", seed: int | None = None) -> bytes:
    """A valid request: one resource, ``records`` log records of one trace, GenAI-event-like
    (an event name, a map body, attributes), with every field of a record set."""
    rng = random.Random(seed)
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = service
    sl = rl.scope_logs.add()
    sl.scope.name = "poison-tests"
    trace_id = rng.randbytes(16) if seed is not None else os.urandom(16)
    for i in range(records):
        lr = sl.log_records.add(
            time_unix_nano=1_700_000_000_000_000_000 + i,
            observed_time_unix_nano=1_700_000_000_000_000_100 + i,
            severity_number=9,
            severity_text="INFO",
            event_name="gen_ai.client.inference.operation.details",
            trace_id=trace_id,
            span_id=(rng.randbytes(8) if seed is not None else os.urandom(8)),
            flags=1,
        )
        body = lr.body.kvlist_value.values
        body.add(key="role").value.string_value = "assistant"
        body.add(key="content").value.string_value = f"answer {i}"
        lr.attributes.add(key="gen_ai.operation.name").value.string_value = "chat"
        lr.attributes.add(key="n").value.int_value = i
    return req.SerializeToString()


def _with_mark(build_field: str, signal: str = "traces") -> bytes:
    """A valid request with MARK in one string field, then MARK replaced by invalid UTF-8."""
    if signal == "traces":
        req = ExportTraceServiceRequest.FromString(good_traces(2, seed=1))
        rs = req.resource_spans[0]
        span = rs.scope_spans[0].spans[0]
        targets = {
            "resource": lambda: rs.resource.attributes.add(key="host.name"),
            "scope": lambda: None,
            "name": lambda: None,
            "attribute_key": lambda: None,
            "event": lambda: None,
        }
        if build_field == "resource":
            targets["resource"]().value.string_value = MARK.decode()
        elif build_field == "scope":
            rs.scope_spans[0].scope.name = MARK.decode()
        elif build_field == "name":
            span.name = MARK.decode()
        elif build_field == "attribute_key":
            span.attributes.add(key=MARK.decode()).value.bool_value = True
        elif build_field == "event":
            span.events[0].name = MARK.decode()
        data = req.SerializeToString()
    elif signal == "logs":
        lreq = ExportLogsServiceRequest.FromString(good_logs(2, seed=1))
        rl = lreq.resource_logs[0]
        record = rl.scope_logs[0].log_records[0]
        if build_field == "resource":
            rl.resource.attributes.add(key="host.name").value.string_value = MARK.decode()
        elif build_field == "scope":
            rl.scope_logs[0].scope.name = MARK.decode()
        elif build_field == "body":
            record.body.kvlist_value.values[1].value.string_value = MARK.decode()
        elif build_field == "attribute_key":
            record.attributes.add(key=MARK.decode()).value.bool_value = True
        elif build_field == "event_name":
            record.event_name = MARK.decode()
        elif build_field == "severity_text":
            record.severity_text = MARK.decode()
        data = lreq.SerializeToString()
    else:
        mreq = ExportMetricsServiceRequest.FromString(good_metrics(2))
        rm = mreq.resource_metrics[0]
        if build_field == "resource":
            rm.resource.attributes.add(key="host.name").value.string_value = MARK.decode()
        elif build_field == "name":
            rm.scope_metrics[0].metrics[0].name = MARK.decode()
        elif build_field == "point_attribute":
            dp = rm.scope_metrics[0].metrics[0].sum.data_points[0]
            dp.attributes.add(key="k").value.string_value = MARK.decode()
        data = mreq.SerializeToString()
    assert data.count(MARK) == 1
    return data.replace(MARK, BAD_UTF8)


def _span_with_extra_field(extra: bytes) -> bytes:
    """A traces request whose one span carries ``extra`` appended to its encoding."""
    shallow = _wire.ShallowTraces.FromString(good_traces(1, seed=2))
    span = shallow.resource_spans[0].scope_spans[0].spans[0]
    shallow.resource_spans[0].scope_spans[0].spans[0] = span + extra
    return bytes(shallow.SerializeToString())


def _record_with_extra_field(extra: bytes) -> bytes:
    """A logs request whose one record carries ``extra`` appended to its encoding."""
    shallow = _wire.ShallowLogs.FromString(good_logs(1, seed=2))
    record = shallow.resource_logs[0].scope_logs[0].log_records[0]
    shallow.resource_logs[0].scope_logs[0].log_records[0] = record + extra
    return bytes(shallow.SerializeToString())


def _nested_anyvalue(depth: int) -> bytes:
    """An AnyValue nested ``depth`` times through key-value lists."""
    value = ld(1, b"leaf")  # string_value
    for _ in range(depth):
        kv = ld(1, b"k") + ld(2, value)  # KeyValue{key, value}
        value = ld(6, ld(1, kv))  # AnyValue{kvlist_value: KeyValueList{values}}
    return value


def poison_traces() -> list[tuple[str, bytes]]:
    """Named corrupt-but-framing-valid trace requests."""
    cases = [
        ("resource attribute not UTF-8", _with_mark("resource")),
        ("scope name not UTF-8", _with_mark("scope")),
        ("span name not UTF-8", _with_mark("name")),
        ("attribute key not UTF-8", _with_mark("attribute_key")),
        ("event name not UTF-8", _with_mark("event")),
        # attributes (field 9) holding a KeyValue whose key says 5 bytes and has 2
        ("attribute truncated inside", _span_with_extra_field(ld(9, b"\x0a\x05ab"))),
        # status (field 15) holding a wire type 7
        ("status with invalid wire type", _span_with_extra_field(ld(15, b"\x0f\x01"))),
        # an attribute nested deeper than protobuf's recursion limit
        (
            "attribute nested 200 deep",
            _span_with_extra_field(ld(9, ld(1, b"deep") + ld(2, _nested_anyvalue(200)))),
        ),
        ("trace id of 5 bytes", _span_with_extra_field(ld(1, b"short"))),
        ("span id of 3 bytes", _span_with_extra_field(ld(2, b"abc"))),
    ]
    for name, data in cases:
        assert framing_valid(data, "traces"), name  # or the case is wrong
    return cases + [
        (f"mutation {i}", data) for i, data in enumerate(mutated(good_traces(4, seed=3), 24))
    ]


def poison_metrics() -> list[tuple[str, bytes]]:
    """Named corrupt-but-framing-valid metrics requests."""
    shallow = _wire.ShallowMetrics.FromString(good_metrics(2))
    points = shallow.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points
    points[0] = points[0] + ld(7, b"\x0a\x05ab")  # attributes (7) truncated inside
    truncated = bytes(shallow.SerializeToString())
    cases = [
        ("resource attribute not UTF-8", _with_mark("resource", "metrics")),
        ("metric name not UTF-8", _with_mark("name", "metrics")),
        ("point attribute not UTF-8", _with_mark("point_attribute", "metrics")),
        ("point attribute truncated inside", truncated),
    ]
    for name, data in cases:
        assert framing_valid(data, "metrics"), name
    return cases + [
        (f"mutation {i}", data)
        for i, data in enumerate(mutated(good_metrics(4), 16, signal="metrics"))
    ]


def poison_logs() -> list[tuple[str, bytes]]:
    """Named corrupt-but-framing-valid logs requests."""
    cases = [
        ("resource attribute not UTF-8", _with_mark("resource", "logs")),
        ("scope name not UTF-8", _with_mark("scope", "logs")),
        ("body string not UTF-8", _with_mark("body", "logs")),
        ("attribute key not UTF-8", _with_mark("attribute_key", "logs")),
        ("event name not UTF-8", _with_mark("event_name", "logs")),
        ("severity text not UTF-8", _with_mark("severity_text", "logs")),
        # attributes (field 6) holding a KeyValue whose key says 5 bytes and has 2
        ("attribute truncated inside", _record_with_extra_field(ld(6, b"\x0a\x05ab"))),
        # body (field 5, an AnyValue) holding a wire type 7
        ("body with invalid wire type", _record_with_extra_field(ld(5, b"\x0f\x01"))),
        # a body nested deeper than protobuf's recursion limit
        ("body nested 200 deep", _record_with_extra_field(ld(5, _nested_anyvalue(200)))),
        ("trace id of 5 bytes", _record_with_extra_field(ld(9, b"short"))),
        ("span id of 3 bytes", _record_with_extra_field(ld(10, b"abc"))),
    ]
    for name, data in cases:
        assert framing_valid(data, "logs"), name
    return cases + [
        (f"mutation {i}", data)
        for i, data in enumerate(mutated(good_logs(4, seed=3), 24, signal="logs"))
    ]


_REQUESTS = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
_SHALLOW = {
    "traces": _wire.ShallowTraces,
    "metrics": _wire.ShallowMetrics,
    "logs": _wire.ShallowLogs,
}


def framing_valid(data: bytes, signal: str = "traces") -> bool:
    """Whether the request's framing parses down to its items (spans, data points, log
    records) kept as bytes: what the engine needs to merge, split and halve it."""
    try:
        _SHALLOW[signal].FromString(data)
    except DecodeError:
        return False
    return True


def full_parse_fails(data: bytes, signal: str = "traces") -> bool:
    cls = _REQUESTS[signal]
    try:
        cls.FromString(data)
    except DecodeError:
        return True
    return False


def mutated(seed_request: bytes, count: int, signal: str = "traces", seed: int = 7) -> list[bytes]:
    """``count`` mutations of ``seed_request`` (byte flips, inserted 0xff, deleted bytes) that
    are framing-valid and fail a full parse; deterministic for a seed."""
    rng = random.Random(seed)
    out: list[bytes] = []
    attempts = 0
    while len(out) < count and attempts < 200_000:
        attempts += 1
        data = bytearray(seed_request)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data))
            op = rng.random()
            if op < 0.5:
                data[i] ^= 1 << rng.randrange(8)
            elif op < 0.75:
                data[i] = 0xFF
            else:
                del data[i]
        candidate = bytes(data)
        if not framing_valid(candidate, signal):
            continue
        if full_parse_fails(candidate, signal) and candidate not in out:
            out.append(candidate)
    return out
