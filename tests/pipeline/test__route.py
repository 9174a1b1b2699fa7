"""The routing between workers (pipeline._route) and the merge of their expositions
(pipeline.workers.merge_families)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.metrics_core import Metric

from pipeline import _route
from pipeline.workers import merge_families


def trace_id(owner: int, n: int, salt: int = 0) -> bytes:
    """A trace id that worker ``owner`` of ``n`` owns."""
    for low in range(salt * 100, salt * 100 + 100):
        tid = bytes(8) + low.to_bytes(8, "big")
        if _route.trace_owner(tid, n) == owner:
            return bytes([salt + 1]) + tid[1:]
    raise AssertionError


def request(groups: list[tuple[str, list[bytes]]]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for service, tids in groups:
        rs = req.resource_spans.add(schema_url="https://r")
        rs.resource.attributes.add(key="service.name").value.string_value = service
        ss = rs.scope_spans.add(schema_url="https://s")
        ss.scope.name = "scope"
        for i, tid in enumerate(tids):
            ss.spans.add(trace_id=tid, span_id=i.to_bytes(8, "big"), name=f"{service}-{i}")
    return req


def spans_of(raw: bytes) -> list[tuple[str, str, str, bytes]]:
    req = ExportTraceServiceRequest.FromString(raw)
    return [
        (rs.resource.attributes[0].value.string_value, rs.schema_url, ss.scope.name, s.trace_id)
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def test_spans_go_to_the_owner_of_their_trace_with_their_resource_and_scope() -> None:
    a0, a1, b1 = trace_id(0, 2), trace_id(1, 2), trace_id(1, 2, salt=1)
    data = request([("a", [a0, a1, a0]), ("b", [b1, a0])]).SerializeToString()
    parts = _route.split_traces(data, 2)
    assert sorted(parts) == [0, 1]
    raw0, n0 = parts[0]
    raw1, n1 = parts[1]
    assert (n0, n1) == (3, 2)
    assert spans_of(raw0) == [("a", "https://r", "scope", a0)] * 2 + [
        ("b", "https://r", "scope", a0)
    ]
    assert spans_of(raw1) == [("a", "https://r", "scope", a1), ("b", "https://r", "scope", b1)]


def test_a_request_of_one_owner_is_passed_as_it_came() -> None:
    data = request([("a", [trace_id(1, 3)] * 4)]).SerializeToString()
    assert _route.split_traces(data, 3) == {1: (data, None)}
    assert _route.split_traces(b"", 3) == {}
    assert _route.split_metrics(b"", 3) == {}


def test_the_trace_id_is_found_wherever_the_span_writes_it() -> None:
    tid = trace_id(1, 2)
    # name (field 5) before trace_id (field 1): not the SDKs' order; the slow path reads it
    late = Span(name="late").SerializeToString() + Span(trace_id=tid).SerializeToString()
    assert _route.span_trace_id(late) == tid
    assert _route.span_trace_id(Span(trace_id=tid, name="x").SerializeToString()) == tid
    assert _route.span_trace_id(b"") == b""
    with pytest.raises(ValueError):
        _route.span_trace_id(b"\x2a\x05ab")  # a length beyond the end


def test_hostile_framing_raises_value_error() -> None:
    with pytest.raises(ValueError):
        _route.split_traces(b"\x0a\x7f\x01", 2)
    with pytest.raises(ValueError):
        _route.split_metrics(b"\x0a\x7f\x01", 2)
    with pytest.raises(ValueError):
        _route.split_metrics(b"\x0b", 2)  # wire type 3 (group start)


def metrics_request(services: list[str]) -> bytes:
    req = ExportMetricsServiceRequest()
    for service in services:
        rm = req.resource_metrics.add()
        rm.resource.attributes.add(key="service.name").value.string_value = service
        m = rm.scope_metrics.add().metrics.add(name="m")
        m.sum.data_points.add(as_int=1)
    return req.SerializeToString()


def test_metrics_go_by_resource() -> None:
    services = [f"svc-{i}" for i in range(12)]
    data = metrics_request(services)
    parts = _route.split_metrics(data, 2)
    assert sorted(parts) == [0, 1]
    seen = []
    for owner, (raw, _) in parts.items():
        for rm in ExportMetricsServiceRequest.FromString(raw).resource_metrics:
            resource = rm.resource.SerializeToString()
            assert _route.resource_owner(resource, 2) == owner
            seen.append(rm.resource.attributes[0].value.string_value)
    assert sorted(seen) == sorted(services)
    # the same resource always lands on the same worker
    again = _route.split_metrics(metrics_request(["svc-3"]), 2)
    owner = next(o for o, (raw, _) in parts.items() if b"svc-3" in raw)
    assert list(again) == [owner]


def family(name: str, kind: str, samples: list[tuple[str, dict[str, str], float, Any]]) -> Metric:
    m = Metric(name, "help", kind)
    for sample_name, labels, value, ts in samples:
        m.add_sample(sample_name, labels, value, ts)
    return m


def test_merge_adds_counters_and_histograms_and_keeps_the_latest_gauge() -> None:
    w0 = [
        family(
            "c", "counter", [("c_total", {"a": "1"}, 2.0, None), ("c_total", {"a": "2"}, 1.0, None)]
        ),
        family(
            "h", "histogram", [("h_bucket", {"le": "1.0"}, 1.0, None), ("h_sum", {}, 0.5, None)]
        ),
        family("g", "gauge", [("g", {}, 5.0, 10.0)]),
    ]
    w1 = [
        family("c", "counter", [("c_total", {"a": "1"}, 3.0, None)]),
        family(
            "h", "histogram", [("h_bucket", {"le": "1.0"}, 2.0, None), ("h_sum", {}, 0.25, None)]
        ),
        family("g", "gauge", [("g", {}, 7.0, 20.0)]),
        family("only", "gauge", [("only", {}, 1.0, None)]),
    ]
    merged = {
        f.name: {(s.name, tuple(s.labels.items())): s.value for s in f.samples}
        for f in merge_families([w0, w1])
    }
    assert merged["c"] == {("c_total", (("a", "1"),)): 5.0, ("c_total", (("a", "2"),)): 1.0}
    assert merged["h"] == {("h_bucket", (("le", "1.0"),)): 3.0, ("h_sum", ()): 0.75}
    assert merged["g"] == {("g", ()): 7.0}
    assert merged["only"] == {("only", ()): 1.0}
    own = {
        f.name: f.samples[0].value
        for f in merge_families(
            [
                [
                    family("q", "gauge", [("q", {}, 2.0, None)]),
                    family(
                        "otelcol_process_uptime",
                        "counter",
                        [("otelcol_process_uptime_total", {}, 9.0, None)],
                    ),
                ],
                [
                    family("q", "gauge", [("q", {}, 3.0, None)]),
                    family(
                        "otelcol_process_uptime",
                        "counter",
                        [("otelcol_process_uptime_total", {}, 4.0, None)],
                    ),
                ],
            ],
            gauges="sum",
        )
    }
    assert own == {"q": 5.0, "otelcol_process_uptime": 9.0}


def test_the_c_split_and_its_python_twin_write_the_same_bytes() -> None:
    from plugins._native import load

    native = load("_route")
    assert native is not None, "plugins._native._route is not built"
    groups = [
        (f"svc-{r}", [trace_id(i % 3, 3, salt=i % 5) for i in range(r + 4)]) for r in range(4)
    ]
    data = request(groups).SerializeToString()
    twin = _route.split_traces_python(data, 3)
    assert sorted(twin) == [0, 1, 2]
    assert _route.split_traces(data, 3) == twin
    assert sum(n or 0 for _, n in twin.values()) == sum(len(t) for _, t in groups)
    # the last trace_id of a span wins, as a decoder keeps it
    tid = trace_id(1, 2)
    span = (
        Span(trace_id=trace_id(0, 2)).SerializeToString() + Span(trace_id=tid).SerializeToString()
    )
    assert _route.span_trace_id(span) == tid


def logs_request(groups: list[tuple[str, list[bytes]]]) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    for service, tids in groups:
        rl = req.resource_logs.add(schema_url="https://r")
        rl.resource.attributes.add(key="service.name").value.string_value = service
        sl = rl.scope_logs.add(schema_url="https://s")
        sl.scope.name = "scope"
        for i, tid in enumerate(tids):
            lr = sl.log_records.add(trace_id=tid, event_name=f"{service}-{i}")
            lr.body.string_value = "x" * i
    return req.SerializeToString()


def records_of(raw: bytes) -> list[tuple[str, str, str, str, bytes]]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest.FromString(raw)
    return [
        (rl.resource.attributes[0].value.string_value, rl.schema_url, sl.scope.name,
         r.event_name, bytes(r.trace_id))
        for rl in req.resource_logs
        for sl in rl.scope_logs
        for r in sl.log_records
    ]  # fmt: skip


def test_log_records_go_to_the_owner_of_their_trace_and_without_one_stay() -> None:
    """Log records follow their trace's spans (same owner); records without a trace id stay
    with the receiving worker; a request of one owner passes as it came."""
    a0, b1, c2 = trace_id(0, 3), trace_id(1, 3), trace_id(2, 3)
    raw = logs_request([("svc-a", [a0, b"", b1]), ("svc-b", [c2, a0])])
    parts = _route.split_logs(raw, 3, local=1)
    assert sorted(parts) == [0, 1, 2]
    got = {k: records_of(v[0]) for k, v in parts.items()}
    assert {k: v[1] for k, v in parts.items()} == {0: 2, 1: 2, 2: 1}
    assert got[0] == [
        ("svc-a", "https://r", "scope", "svc-a-0", a0),
        ("svc-b", "https://r", "scope", "svc-b-1", a0),
    ]
    assert got[1] == [
        ("svc-a", "https://r", "scope", "svc-a-1", b""),
        ("svc-a", "https://r", "scope", "svc-a-2", b1),
    ]
    assert got[2] == [("svc-b", "https://r", "scope", "svc-b-0", c2)]
    # the owner of a trace's records is the owner of its spans
    spans = _route.split_traces_python(request([("svc", [a0, b1, c2])]).SerializeToString(), 3)
    for owner, (part, _) in spans.items():
        assert {s[3] for s in spans_of(part)} == {r[4] for r in got[owner] if r[4]}
    one = logs_request([("svc", [b"", b""])])
    assert _route.split_logs(one, 3, local=2) == {2: (one, None)}
    assert _route.split_logs(b"", 3, local=0) == {}
    with pytest.raises(ValueError):
        _route.split_logs(b"\x0a\x7f\x01", 2, local=0)


def test_the_c_span_walk_reads_every_field_as_its_twin() -> None:
    """The C walk skips a span's small fields (one-byte tag, one-byte length or value, fixed
    times) without the general reader and reads the rest with it: the same trace ids, and the
    same refusals, as the twin, whichever way each field is read."""
    from plugins._native import load

    native = load("_route")
    assert native is not None, "plugins._native._route is not built"
    a, b = trace_id(0, 2), trace_id(1, 2)
    long_name = Span(name="n" * 200).SerializeToString()  # a two-byte length: the general reader
    big_kind = Span(
        kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=1 << 40
    ).SerializeToString()  # a long varint
    spans = [
        Span(trace_id=a).SerializeToString() + long_name + Span(trace_id=b).SerializeToString(),
        long_name + Span(trace_id=a).SerializeToString() + big_kind,
        Span(trace_id=b, end_time_unix_nano=5, dropped_attributes_count=2).SerializeToString(),
        Span(trace_id=a).SerializeToString() + b"\x08\x96\x01" + b"\x3d\x01\x02\x03\x04",
        b"\x0a\x00" + Span(trace_id=b).SerializeToString(),  # an empty id, then the last one
        Span(trace_id=a).SerializeToString() + b"\xf8\x07\x01",  # a two-byte tag (field 127)
        Span(trace_id=b).SerializeToString() + b"\x8b\x01\x8c\x01",  # a group (field 17)
    ]

    def scope(raw_spans: list[bytes]) -> bytes:
        body = b"".join(
            b"\x12" + bytes([len(s)]) + s
            if len(s) < 128
            else b"\x12" + bytes([len(s) & 0x7F | 0x80, len(s) >> 7]) + s
            for s in raw_spans
        )
        return b"\x12" + bytes([len(body) & 0x7F | 0x80, len(body) >> 7]) + body

    rs = scope(spans)
    data = b"\x0a" + bytes([len(rs) & 0x7F | 0x80, len(rs) >> 7]) + rs
    twin = _route.split_traces_python(data, 2)
    assert sorted(twin) == [0, 1]
    assert _route.split_traces(data, 2) == twin
    assert [twin[0][1], twin[1][1]] == [3, 4]
    # malformed fields, as the fast path would meet them: both refuse
    for bad in (
        b"\x02\x00",  # field number 0 (a one-byte tag)
        b"\x0a\x05ab",  # a length past the end
        b"\x39\x01\x02",  # a truncated fixed64
        b"\x3d\x01",  # a truncated fixed32
        b"\x0e\x00",  # wire type 6
        b"\x0c",  # an end of group where none is open
    ):
        span = Span(trace_id=a).SerializeToString() + bad
        raw = b"\x0a" + bytes([len(span) + 4]) + b"\x12" + bytes([len(span) + 2])
        raw += b"\x12" + bytes([len(span)]) + span
        with pytest.raises(ValueError):
            _route.split_traces_python(raw, 2)
        with pytest.raises(ValueError):
            _route.split_traces(raw, 2)


def test_the_c_split_copies_runs_of_spans_as_its_twin_writes_them() -> None:
    """The C split copies the spans of one owner that follow one another in a scope with one
    copy when their fields are as the twin writes them (tag 0x12, the length's shortest
    varint), each on its own otherwise (a longer length varint, a scope field between two
    spans, a span of another owner between them): the same bytes as the twin either way."""
    from plugins._native import load

    native = load("_route")
    assert native is not None, "plugins._native._route is not built"
    a, b = trace_id(0, 2), trace_id(1, 2)

    def length(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out += bytes([n & 0x7F | 0x80])
            n >>= 7
        return out + bytes([n])

    def field(span: bytes, long_length: bool = False) -> bytes:
        # a length in two bytes where one would do (0x80 | n, 0x00): decoded alike
        n = len(span)
        return b"\x12" + (bytes([0x80 | n, 0]) if long_length else length(n)) + span

    s = [Span(trace_id=t, name=f"s{i}").SerializeToString() for i, t in enumerate([a, a, b, a])]
    big = Span(trace_id=b, name="n" * 300).SerializeToString()  # a two-byte length
    scope_name = b"\x0a\x03\x0a\x01x"  # the scope field (InstrumentationScope name "x")
    scopes = [
        field(s[0]) + field(s[1]) + field(s[2]) + field(s[3]),  # a run, another owner, one
        field(s[0]) + field(s[1], long_length=True) + field(s[3]),  # a run broken by a length
        field(s[0]) + scope_name + field(s[1]) + field(big) + field(big),  # broken by a field
    ]
    body = b"".join(b"\x12" + length(len(sc)) + sc for sc in scopes)
    rs = b"\x0a" + length(len(body)) + body
    data = rs + rs
    twin = _route.split_traces_python(data, 2)
    assert sorted(twin) == [0, 1]
    assert _route.split_traces(data, 2) == twin
    assert [twin[0][1], twin[1][1]] == [16, 6]
