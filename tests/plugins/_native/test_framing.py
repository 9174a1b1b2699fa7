"""The C framing check of trace requests (plugins/_native/_framing.c) against the protobuf
one it replaces in the OTLP receiver (``Traces.validate``): same span counts, same verdicts on
corrupt input."""

from __future__ import annotations

import random

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline import PermanentError, Traces
from tests.plugins._native_support import ld, require_native

framing = require_native("_framing")


def python_count(data: bytes) -> int | None:
    try:
        return Traces._validate(data)
    except PermanentError:
        return None


def native_count(data: bytes) -> int | None:
    try:
        return int(framing.count_spans(data))
    except ValueError:
        return None


def one_span(span: bytes) -> bytes:
    """A request of one resource, one scope and this (hand-encoded) span."""
    return ld(1, ld(2, ld(2, span)))


def request(rng: random.Random) -> bytes:
    req = ExportTraceServiceRequest()
    for r in range(rng.randint(0, 3)):
        rs = req.resource_spans.add(schema_url=f"s{r}")
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=f"svc{r}"))
        for s in range(rng.randint(0, 3)):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope{s}"
            for i in range(rng.randint(0, 6)):
                span = ss.spans.add(name=f"span{i}", trace_id=rng.randbytes(16))
                span.span_id = rng.randbytes(8)
                span.start_time_unix_nano = rng.getrandbits(63)
                span.attributes.extend(
                    KeyValue(key=f"k{j}", value=AnyValue(int_value=rng.getrandbits(40)))
                    for j in range(rng.randint(0, 4))
                )
                if rng.random() < 0.3:
                    span.events.add(name="exception").attributes.add(
                        key="exception.type", value=AnyValue(string_value="ValueError")
                    )
                span.status.code = rng.choice([0, 1, 2])
    return req.SerializeToString()


def test_counts_match_on_valid_requests() -> None:
    rng = random.Random(1)
    for _ in range(300):
        data = request(rng)
        assert (
            native_count(data)
            == python_count(data)
            == len(
                [
                    s
                    for rs in ExportTraceServiceRequest.FromString(data).resource_spans
                    for ss in rs.scope_spans
                    for s in ss.spans
                ]
            )
        )


def test_unknown_fields_and_groups_are_skipped_as_protobuf_does() -> None:
    span = b"\x0a\x01a"  # Span.trace_id (field 1): one byte
    group = b"\x9b\x01" + b"\x08\x05" + b"\x9c\x01"  # field 19 start group, varint, end group
    unknown = b"\xf8\x07\x01"  # field 127, varint
    scope = b"\x12" + bytes([len(span + group + unknown)]) + span + group + unknown
    resource = b"\x12" + bytes([len(scope)]) + scope + b"\x20\x01"  # + field 4 varint
    # resource_spans with a wrong wire type is skipped, not counted
    data = b"\x0a" + bytes([len(resource)]) + resource + b"\x08\x01"
    assert native_count(data) == python_count(data) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05\x12\x03\x12\x01",  # a span's length runs past its scope
        b"\x0a\x04\x12\x02\x12\x05",  # length past the end
        b"\x0a\x03\x12\x01\x12",  # truncated tag inside
        b"\x0a\x04\x12\x02\x12\x00\x00",  # field number 0
        b"\x0a\x06\x12\x04\x12\x02\x0c\x00",  # span: an end-group tag with no group
        b"\x0a\x06\x12\x04\x12\x02\x0b\x00",  # span: a group never closed
        b"\x0f",  # wire type 7
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # overlong varint
    ],
)
def test_corrupt_framing_is_refused_by_both(data: bytes) -> None:
    assert python_count(data) is None
    assert native_count(data) is None


def full_parse_refuses(data: bytes) -> bool:
    try:
        ExportTraceServiceRequest.FromString(data)
    except DecodeError:
        return True
    return False


def test_same_verdict_on_mutated_requests() -> None:
    """The same verdicts and counts, except one quirk of protobuf's framing parse: in a span
    read as a message with no known fields, a field number 0 after a length-delimited field
    is let through; the C walk refuses it, as every full parse of the request does."""
    rng = random.Random(7)
    disagreements = []
    for _ in range(6000):
        data = bytearray(request(rng))
        if not data:
            continue
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            i = rng.randrange(len(data))
            if op < 0.4:
                data[i] = rng.randrange(256)
            elif op < 0.7:
                del data[i:]
                if not data:
                    break
            else:
                inserted = rng.choice([0x0B, 0x0C, 0x13, 0x14, 0x00, 0x80, 0xFF, 0x30, 0x39, 0xA0])
                data[i:i] = bytes([inserted])
        raw = bytes(data)
        native = native_count(raw)
        if native != python_count(raw) and not (native is None and full_parse_refuses(raw)):
            disagreements.append(raw)
    assert disagreements == []


def test_a_field_number_0_in_a_span_is_refused_as_a_full_parse_refuses_it() -> None:
    data = one_span(b"\x2a\x05span1" + b"\x00\x0d")  # name, then a tag with field number 0
    assert full_parse_refuses(data)
    assert native_count(data) is None


def test_accepts_any_buffer() -> None:
    data = request(random.Random(3))
    assert native_count(memoryview(data)) == python_count(data)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        framing.count_spans("text")


def test_slow_path_fields_inside_a_span() -> None:
    """Fields the C walk reads off its fast path (multi-byte tags and lengths, 10-byte
    varints, fixed-width values) are framed as protobuf frames them."""
    name = b"n" * 200  # a two-byte length
    fields = (
        b"\x2a" + b"\xc8\x01" + name  # name (field 5), length 200
        + b"\x30" + b"\xff" * 9 + b"\x01"  # kind (field 6) = -1: a ten-byte varint
        + b"\xa0\x06\x07"  # field 100, varint: a two-byte tag
        + b"\x39" + b"\x00" * 8  # start_time_unix_nano (field 7), fixed64
        + b"\x85\x01" + b"\x00" * 4  # field 16, fixed32, two-byte tag
    )  # fmt: skip
    data = one_span(fields)
    assert native_count(data) == python_count(data) == 1
    # an eleven-byte varint and a truncated fixed64 are refused by both
    bad_varint = b"\x30" + b"\xff" * 10 + b"\x01"
    bad_fixed = b"\x39" + b"\x00" * 3
    for span_bytes in (bad_varint, bad_fixed):
        data = one_span(span_bytes)
        assert native_count(data) is None and python_count(data) is None
