from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Metrics, PermanentError, Traces


def traces_request(
    resources: int = 2, scopes: int = 2, spans: int = 3
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(resources):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc{r}"
        for s in range(scopes):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope{s}"
            for i in range(spans):
                span = ss.spans.add(name=f"span-{r}-{s}-{i}", trace_id=bytes(16), span_id=bytes(8))
                span.attributes.add(key="i").value.int_value = i
    return req


def metrics_request() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    gauge = sm.metrics.add(name="g")
    for i in range(3):
        gauge.gauge.data_points.add(as_int=i)
    total = sm.metrics.add(name="s")
    total.sum.data_points.add(as_double=1.5)
    hist = sm.metrics.add(name="h")
    for _ in range(2):
        hist.histogram.data_points.add(count=1)
    return req


def test_count_without_decoding() -> None:
    payload = Traces(traces_request().SerializeToString())
    assert payload.item_count() == 12
    assert payload._message is None  # counting did not decode


def test_merge_is_concatenation() -> None:
    a = Traces(traces_request(1, 1, 2).SerializeToString())
    b = Traces(traces_request(1, 1, 3).SerializeToString())
    merged = Traces.merge([a, b])
    assert merged.item_count() == 5
    assert merged.to_bytes() == a.to_bytes() + b.to_bytes()
    names = [
        s.name for rs in merged.message().resource_spans for ss in rs.scope_spans for s in ss.spans
    ]
    assert len(names) == 5


def test_split_keeps_every_span_in_order_with_resources() -> None:
    payload = Traces(traces_request().SerializeToString())
    parts = payload.split(5)
    assert [p.item_count() for p in parts] == [5, 5, 2]
    spans = []
    for part in parts:
        for rs in part.message().resource_spans:
            svc = rs.resource.attributes[0].value.string_value
            for ss in rs.scope_spans:
                spans.extend((svc, ss.scope.name, s.name) for s in ss.spans)
    original = [
        (rs.resource.attributes[0].value.string_value, ss.scope.name, s.name)
        for rs in traces_request().resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert spans == original
    assert payload.split(0) == [payload]
    assert payload.split(100) == [payload]


def test_mutation_re_encodes_once() -> None:
    payload = Traces(traces_request(1, 1, 1).SerializeToString())
    msg = payload.mutable_message()
    msg.resource_spans[0].scope_spans[0].spans[0].name = "changed"
    decoded = ExportTraceServiceRequest.FromString(payload.to_bytes())
    assert decoded.resource_spans[0].scope_spans[0].spans[0].name == "changed"
    assert payload.item_count() == 1


def test_copy_is_independent() -> None:
    payload = Traces(traces_request(1, 1, 1).SerializeToString())
    copy = payload.copy()
    copy.mutable_message().resource_spans[0].scope_spans[0].spans[0].name = "x"
    assert payload.message().resource_spans[0].scope_spans[0].spans[0].name == "span-0-0-0"


@pytest.mark.parametrize(
    "data",
    [b"\xff\xff\xff", traces_request().SerializeToString()[:-5], b"\x0a\x05abc"],
)
def test_validate_refuses_corrupt_data(data: bytes) -> None:
    with pytest.raises(PermanentError, match="malformed ExportTraceServiceRequest"):
        Traces(data).validate()


def test_validate_checks_span_framing() -> None:
    # a span whose inner bytes are not a valid span
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add()
    good = req.SerializeToString()
    bad_span = b"\x12\x03\xff\xff\xff"  # scope_spans.spans (field 2) holding garbage
    scope = b"\x12" + bytes([len(bad_span)]) + bad_span
    rs = b"\x0a" + bytes([len(scope)]) + scope
    assert good != rs
    with pytest.raises(PermanentError):
        Traces(rs).validate()


def test_metrics_count_and_split() -> None:
    payload = Metrics(metrics_request().SerializeToString())
    payload.validate()
    assert payload.item_count() == 6
    parts = payload.split(4)
    assert [p.item_count() for p in parts] == [4, 2]
    names = [
        m.name
        for p in parts
        for rm in p.message().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    ]
    assert names == ["g", "s", "h"]
    assert Metrics.from_message(metrics_request()).item_count() == 6
