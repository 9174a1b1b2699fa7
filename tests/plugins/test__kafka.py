"""Hostile Kafka message values through the kafka receiver's decoder (``plugins._kafka.decode``)
for every signal, in both encodings: seeded random mutations of valid requests, corrupt but
framing-valid requests, huge and deeply nested ones. Every value either decodes to a request
that every later stage can read, or is refused with ``PermanentError`` (which the receiver
counts as undecodable, logs with its offset and skips: ``test_kafka.py`` checks that against a
real broker, with good messages after the bad ones). Seeded: each run tries the same inputs."""

from __future__ import annotations

import random

import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import PermanentError, Signal
from pipeline.pdata import payload_type
from plugins import _kafka, _otlpjson
from tests.hostile import mutate

ENCODINGS = ("otlp_proto", "otlp_json")
MUTATIONS_PER_CASE = 250


def _attrs(holder: object, rng: random.Random) -> None:
    attrs = holder.attributes  # type: ignore[attr-defined]
    attrs.add(key="s").value.string_value = rng.choice(["", "x", "é€", "a" * 40])
    attrs.add(key="i").value.int_value = rng.randint(-(2**63), 2**63 - 1)
    kv = attrs.add(key="kv").value.kvlist_value.values.add(key="n")
    kv.value.array_value.values.add().double_value = rng.random()


def request(signal: Signal, seed: int) -> Message:
    rng = random.Random(seed)
    if signal == Signal.TRACES:
        t = ExportTraceServiceRequest()
        rs = t.resource_spans.add()
        _attrs(rs.resource, rng)
        ss = rs.scope_spans.add()
        ss.scope.name = "hostile"
        for i in range(3):
            span = ss.spans.add(
                trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name=f"s{i}", kind=2
            )
            _attrs(span, rng)
            span.events.add(name="e", time_unix_nano=rng.randint(0, 2**63))
        return t
    if signal == Signal.METRICS:
        m = ExportMetricsServiceRequest()
        rm = m.resource_metrics.add()
        _attrs(rm.resource, rng)
        sm = rm.scope_metrics.add()
        gauge = sm.metrics.add(name="g")
        _attrs(gauge.gauge.data_points.add(as_double=rng.random()), rng)
        hist = sm.metrics.add(name="h").histogram
        hist.aggregation_temporality = 2
        hist.data_points.add(count=3, sum=1.5, bucket_counts=[1, 2], explicit_bounds=[1.0])
        return m
    lg = ExportLogsServiceRequest()
    rl = lg.resource_logs.add()
    _attrs(rl.resource, rng)
    sl = rl.scope_logs.add()
    for i in range(3):
        rec = sl.log_records.add(severity_number=9, trace_id=rng.randbytes(16))
        rec.body.string_value = f"line {i}"
        _attrs(rec, rng)
    return lg


def encode(message: Message, encoding: str) -> bytes:
    return _otlpjson.dumps(message) if encoding == "otlp_json" else message.SerializeToString()


def decode(signal: Signal, value: bytes, encoding: str) -> int | None:
    """The item count of what the decoder accepts (checked readable by every later stage), or
    ``None`` when it refuses it; any other error fails the test."""
    try:
        payload = _kafka.decode(signal, value, encoding)
    except PermanentError:
        return None
    n = payload.item_count()
    make = payload_type(signal)
    again = make.request_class.FromString(payload.to_bytes())
    assert make._count_message(again) == n
    return n


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.METRICS, Signal.LOGS])
def test_mutated_values_decode_or_are_refused(signal: Signal, encoding: str) -> None:
    rng = random.Random(f"{signal}/{encoding}")
    seeds = [encode(request(signal, s), encoding) for s in range(4)]
    for seed in seeds:
        assert decode(signal, seed, encoding)
    refused = 0
    for i in range(MUTATIONS_PER_CASE):
        value = mutate(rng.choice(seeds), rng, seeds[i % len(seeds)])
        if decode(signal, value, encoding) is None:
            refused += 1
    assert refused > MUTATIONS_PER_CASE // 10  # the mutations reach the decoder's checks


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_corrupt_but_well_framed_values_are_refused_naming_the_field(encoding: str) -> None:
    """Framing that parses, content that does not: a trace id of 3 bytes, a span id of 9."""
    message = request(Signal.TRACES, 1)
    assert isinstance(message, ExportTraceServiceRequest)
    message.resource_spans[0].scope_spans[0].spans[1].trace_id = b"abc"
    message.resource_spans[0].scope_spans[0].spans[2].span_id = b"123456789"
    # (OTLP/JSON cannot spell a 3-byte id as the serializer writes it: hex of the wrong length)
    value = _json_with_bad_ids() if encoding == "otlp_json" else message.SerializeToString()
    with pytest.raises(PermanentError, match=r"(?i)trace_?id"):
        _kafka.decode(Signal.TRACES, value, encoding)


def _json_with_bad_ids() -> bytes:
    return (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"abc","spanId":'
        b'"0102030405060708","name":"s"}]}]}]}'
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _field(number: int, body: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def _nested_value(depth: int) -> bytes:
    """An AnyValue of kvlists ``depth`` deep (AnyValue.kvlist_value = 6, KeyValueList.values =
    1, KeyValue.key = 1 / value = 2)."""
    value = _field(1, b"leaf")
    for _ in range(depth):
        value = _field(6, _field(1, _field(1, b"k") + _field(2, value)))
    return value


@pytest.mark.parametrize("depth", [200, 5_000])
@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.LOGS])
def test_deeply_nested_values_are_refused(signal: Signal, depth: int) -> None:
    attribute = _field(1, b"a") + _field(2, _nested_value(depth))
    if signal == Signal.TRACES:  # span.attributes = 9, scope_spans.spans = 2, ...
        span = _field(1, bytes(16)[:15] + b"\x01") + _field(2, b"\x01" * 8) + _field(9, attribute)
        value = _field(1, _field(2, _field(2, span)))
    else:  # log_record.attributes = 6
        value = _field(1, _field(2, _field(2, _field(6, attribute))))
    with pytest.raises(PermanentError):
        _kafka.decode(signal, value, "otlp_proto")
    body = b'{"arrayValue":{"values":[' * depth + b"]}}" * depth
    js = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + body + b"}]}]}]}"
    with pytest.raises(PermanentError):
        _kafka.decode(Signal.LOGS, js, "otlp_json")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_huge_value_is_decoded_whole(encoding: str) -> None:
    """10,000 log records with a 1 MB body among them: taken, every record counted."""
    message = ExportLogsServiceRequest()
    records = message.resource_logs.add().scope_logs.add().log_records
    for i in range(10_000):
        records.add(severity_number=9).body.string_value = f"r{i}"
    records[7].body.string_value = "x" * (1 << 20)
    assert decode(Signal.LOGS, encode(message, encoding), encoding) == 10_000


def test_garbage_and_empty_values() -> None:
    rng = random.Random(7)
    for signal in (Signal.TRACES, Signal.METRICS, Signal.LOGS):
        for encoding in ENCODINGS:
            for size in (1, 2, 5, 64, 4096):
                decode(signal, rng.randbytes(size), encoding)
            for value in (b"\x00", b"\xff" * 10, b"{", b"[]", b"null", b'{"resourceSpans": 1}'):
                decode(signal, value, encoding)
