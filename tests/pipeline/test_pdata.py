from __future__ import annotations

import random

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Logs, Metrics, Payload, PermanentError, Signal, Traces, _wire, payload_type
from pipeline.pdata import JoinedParts, describe_payload, iter_log_records


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


def logs_request(
    resources: int = 2, scopes: int = 2, records: int = 3, seed: int = 0
) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for r in range(resources):
        rl = req.resource_logs.add(schema_url=f"https://schema/{r}")
        rl.resource.attributes.add(key="service.name").value.string_value = f"svc{r}"
        for s in range(scopes):
            sl = rl.scope_logs.add(schema_url=f"https://scope-schema/{s}")
            sl.scope.name = f"scope{s}"
            sl.scope.version = "1.0"
            for i in range(records):
                lr = sl.log_records.add(
                    time_unix_nano=1_700_000_000_000_000_000 + i,
                    observed_time_unix_nano=1_700_000_000_000_000_500 + i,
                    severity_number=9,
                    severity_text="INFO",
                    event_name=f"event-{r}-{s}-{i}",
                    trace_id=bytes([seed + 1] * 16),
                    span_id=bytes([i + 1] * 8),
                    flags=1,
                )
                lr.body.string_value = f"record {r}/{s}/{i}"
                lr.attributes.add(key="i").value.int_value = i
    return req


def _records(payload: Payload) -> list[tuple[str, str, str, str]]:
    assert isinstance(payload, Logs)
    return [
        (
            rl.resource.attributes[0].value.string_value,
            rl.schema_url,
            sl.scope.name,
            sl.schema_url + "|" + lr.event_name,
        )
        for rl, sl, lr in iter_log_records(payload)
    ]


def test_logs_count_validate_and_merge_without_decoding() -> None:
    payload = Logs(logs_request().SerializeToString())
    assert payload.item_count() == 12
    payload.validate()
    assert payload._message is None  # counting and validating did not decode
    other = Logs(logs_request(1, 1, 2).SerializeToString())
    merged = Logs.merge([payload, other])
    assert merged.item_count() == 14
    assert merged.to_bytes() == payload.to_bytes() + other.to_bytes()
    assert len(_records(merged)) == 14
    assert Logs.from_message(logs_request()).item_count() == 12
    assert payload_type(Signal.LOGS) is Logs and Logs.signal.item_name == "log_records"


def test_logs_split_keeps_every_record_in_order_with_resource_and_scope() -> None:
    data = logs_request().SerializeToString()
    payload = Logs(data)
    original = _records(payload)
    parts = Logs(data).split(5)
    assert [p.item_count() for p in parts] == [5, 5, 2]
    assert [r for p in parts for r in _records(p)] == original
    # topping up a batch: the first part holds at most `first`
    parts = Logs(data).split(5, first=2)
    assert [p.item_count() for p in parts] == [2, 5, 5]
    assert [r for p in parts for r in _records(p)] == original
    assert payload.split(0) == [payload]
    assert payload.split(12) == [payload]


def test_logs_split_copies_records_byte_for_byte() -> None:
    """A record is never decoded by a split: even fields this protobuf does not know survive."""
    shallow = _wire.ShallowLogs.FromString(logs_request(1, 1, 4).SerializeToString())
    records = shallow.resource_logs[0].scope_logs[0].log_records
    records[2] = records[2] + b"\xa8\x06\x07"  # an unknown field 101 (varint 7)
    payload = Logs(shallow.SerializeToString())
    parts = payload.split(3)
    got = [
        rec
        for p in parts
        for rl in _wire.ShallowLogs.FromString(p.to_bytes()).resource_logs
        for sl in rl.scope_logs
        for rec in sl.log_records
    ]
    assert got == list(records)


def test_logs_split_randomized() -> None:
    rng = random.Random(5)
    for seed in range(30):
        req = logs_request(rng.randint(1, 3), rng.randint(1, 3), rng.randint(0, 5), seed)
        payload = Logs(req.SerializeToString())
        n = payload.item_count()
        size = rng.randint(1, 7)
        first = rng.choice([0, rng.randint(1, size)])
        parts = payload.split(size, first=first)
        counts = [p.item_count() for p in parts]
        assert sum(counts) == n
        assert all(c <= size for c in counts)
        if first and n > first:
            assert counts[0] <= first
        assert [r for p in parts for r in _records(p)] == _records(payload)
        # counts given to the parts are those a decode finds
        assert counts == [Logs(p.to_bytes()).item_count() for p in parts]


@pytest.mark.parametrize(
    "data",
    [b"\xff\xff\xff", logs_request().SerializeToString()[:-5], b"\x0a\x05abc"],
)
def test_logs_validate_refuses_corrupt_data(data: bytes) -> None:
    with pytest.raises(PermanentError, match="malformed ExportLogsServiceRequest"):
        Logs(data).validate()


def test_logs_validate_checks_record_framing() -> None:
    bad_record = b"\x12\x03\xff\xff\xff"  # scope_logs.log_records (field 2) holding garbage
    scope = b"\x12" + bytes([len(bad_record)]) + bad_record
    rl = b"\x0a" + bytes([len(scope)]) + scope
    with pytest.raises(PermanentError):
        Logs(rl).validate()


def test_describe_logs_names_service_and_trace_ids() -> None:
    req = logs_request(1, 1, 2, seed=3)
    req.resource_logs[0].scope_logs[0].log_records.add().body.string_value = "no trace"
    described = describe_payload(Logs(req.SerializeToString()))
    assert described == {"service_name": "svc0", "trace_ids": bytes([4] * 16).hex()}
    assert describe_payload(Logs(b"\x0a\x05abc")) == {"payload": "unreadable framing"}


# -- merged payloads keep their parts until asked for their bytes --------------------------------


def span_names(payload: Payload) -> list[str]:
    msg = payload.message()
    return [s.name for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_merge_keeps_the_parts_and_joins_them_only_when_asked() -> None:
    a, b, c = (Traces(traces_request(1, 1, n).SerializeToString()) for n in (1, 2, 3))
    merged = Traces.merge([a, b, c])
    assert merged.encoded_parts() == (a.to_bytes(), b.to_bytes(), c.to_bytes())
    for chunk, part in zip(merged.encoded_parts(), (a, b, c), strict=True):
        assert chunk is part.to_bytes()  # not copied
    assert merged.nbytes == len(a.to_bytes() + b.to_bytes() + c.to_bytes())
    assert f"bytes={merged.nbytes}" in repr(merged)
    assert merged._encoded is None and merged._message is None
    whole = merged.to_bytes()
    assert whole == a.to_bytes() + b.to_bytes() + c.to_bytes()
    assert merged.to_bytes() is whole  # joined once
    assert merged.encoded_parts() == (whole,)
    assert merged.nbytes == len(whole)


def test_merged_parts_are_counted_without_joining_when_a_count_is_unknown() -> None:
    a = Traces(traces_request(1, 1, 2).SerializeToString())
    b = Traces(traces_request(2, 1, 3).SerializeToString())
    merged = Traces.merge([a, b])
    assert merged._count is None
    assert merged.item_count() == 2 + 6
    assert merged._parts is not None  # counted part by part
    metrics = Metrics.merge([Metrics(metrics_request().SerializeToString()) for _ in range(3)])
    assert metrics.item_count() == 18 and metrics._parts is not None
    logs = Logs.merge([Logs(logs_request().SerializeToString()) for _ in range(2)])
    assert logs.item_count() == 24 and logs._parts is not None


def test_merge_of_merges_flattens_and_drops_empty_parts() -> None:
    a, b, c = (Traces(traces_request(1, 1, n).SerializeToString()) for n in (1, 2, 3))
    empty = Traces(b"", item_count=0)
    inner = Traces.merge([a, empty, b])
    assert inner.encoded_parts() == (a.to_bytes(), b.to_bytes())
    outer = Traces.merge([empty, inner, c, Traces(), inner])
    assert outer.encoded_parts() == (
        a.to_bytes(),
        b.to_bytes(),
        c.to_bytes(),
        *inner.encoded_parts(),
    )
    assert outer.item_count() == 1 + 2 + 3 + 1 + 2
    assert inner._parts is not None  # merging did not join the inner merge


def test_merge_of_empty_and_single_parts_holds_plain_bytes() -> None:
    empty = Traces.merge([Traces(b"", item_count=0), Traces()])
    assert empty.to_bytes() == b"" and empty.encoded_parts() == (b"",) and empty.item_count() == 0
    assert empty._parts is None
    one = Traces(traces_request(1, 1, 2).SerializeToString())
    alone = Traces.merge([Traces(b""), one, Traces(b"")])
    assert alone._parts is None and alone.to_bytes() is one.to_bytes()
    assert alone.item_count() == 2
    assert Traces.merge([one]) is one


def test_merge_serializes_a_changed_part_once() -> None:
    a = Traces(traces_request(1, 1, 1).SerializeToString())
    a.mutable_message().resource_spans[0].scope_spans[0].spans[0].name = "changed"
    b = Traces(traces_request(1, 1, 2).SerializeToString())
    merged = Traces.merge([a, b])
    assert merged.encoded_parts() == (a.to_bytes(), b.to_bytes())
    names = span_names(merged)
    assert names == ["changed", "span-0-0-0", "span-0-0-1"]


def test_a_merged_payload_reads_changes_splits_and_copies_as_the_joined_one() -> None:
    parts = [Traces(traces_request(2, 2, n).SerializeToString()) for n in (1, 2, 3)]
    reference = Traces(b"".join(p.to_bytes() for p in parts))

    def merged() -> Payload:
        return Traces.merge([p.copy() for p in parts])

    assert merged().message() == reference.message()
    for size, first in ((1, 0), (5, 2), (7, 0), (100, 0)):
        got = [p.to_bytes() for p in merged().split(size, first)]
        assert got == [p.to_bytes() for p in reference.split(size, first)]
    changed = merged()
    changed.mutable_message().resource_spans[0].scope_spans[0].spans[0].name = "x"
    assert changed._parts is None and changed.item_count() == 24
    assert span_names(changed)[0] == "x"
    original = merged()
    copy = original.copy()
    assert copy.encoded_parts() is original.encoded_parts()  # shared, not joined
    copy.mutable_message().resource_spans[0].scope_spans[0].spans[0].name = "y"
    assert original.to_bytes() == reference.to_bytes()
    assert span_names(copy)[0] == "y"
    checked = merged()
    checked.validate()
    assert checked.item_count() == 24
    assert describe_payload(merged()) == describe_payload(reference)


def test_merge_carries_tokens_and_whole_traces_with_parts() -> None:
    a = Traces(traces_request(1, 1, 1).SerializeToString()).carry_acks(["t1"])
    b = Traces(traces_request(1, 1, 1).SerializeToString()).carry_acks(["t2", "t1"])
    a.whole_traces = b.whole_traces = True
    merged = Traces.merge([a, b])
    assert merged.ack_tokens == ("t1", "t2") and merged.whole_traces
    copy = merged.copy()
    assert copy.ack_tokens == ("t1", "t2") and copy.whole_traces
    assert all(p.ack_tokens == ("t1", "t2") for p in merged.split(1))


def test_joined_parts_read_ranges_of_the_concatenation_without_joining() -> None:
    parts = (b"abc", b"defgh", b"ij")
    joined = b"".join(parts)
    view = JoinedParts(parts)
    for start in range(len(joined) + 1):
        for end in range(start, len(joined) + 1):
            try:
                got = view[start:end]
            except ValueError:
                # only a range across a part boundary is refused
                assert any(s < b < end for b in (3, 8) for s in (start,))
                continue
            assert got == joined[start:end]
    assert view[3:8] is parts[1]  # a whole part as it is
    assert view.locate(4, 6) == (parts[1], 1, 3)
    assert view.locate(8, 8) == (parts[2], 0, 0)  # an empty range at a boundary: the next part
    for start, end in ((-1, 2), (9, 11), (0, 11), (4, 2)):
        with pytest.raises(ValueError):
            view.locate(start, end)
    single = JoinedParts([joined])
    assert single[2:7] == joined[2:7] and single.locate(0, 10) == (joined, 0, 10)
    with pytest.raises(ValueError):
        single.locate(0, 11)
    with pytest.raises(ValueError):
        JoinedParts(()).locate(0, 0)
