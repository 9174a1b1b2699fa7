"""The shared wire readers (``pipeline/_pbwire.py``, the twin of ``plugins/_native/pbwire.h``):
the values protobuf gives, the bounds and errors each caller asks for. The callers' own twin
tests (``tests/pipeline/test__route.py``, ``tests/plugins/_native/test_tailscan.py``,
``tests/pipeline/test_otlpvalid.py``, ``tests/plugins/test__otlproute.py``, the fuzz corpus)
check that they kept their behaviour."""

from __future__ import annotations

import random

import pytest
from google.protobuf.internal import decoder, encoder
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline._pbwire import (
    MASK64,
    encode_varint,
    field_readers,
    fields_reader,
    malformed,
    varint_reader,
)


class Oops(Exception):
    pass


def test_varints_as_protobuf_writes_and_reads_them() -> None:
    read = varint_reader()
    rng = random.Random(5)
    values = [0, 1, 127, 128, 300, 2**32 - 1, 2**63, MASK64]
    values += [rng.randrange(2 ** rng.randrange(1, 65)) for _ in range(500)]
    for v in values:
        raw = encode_varint(v)
        assert raw == encoder._VarintBytes(v)
        data = b"\xff" + raw + b"\x01"
        assert read(data, 1, len(data)) == (v, 1 + len(raw))
        assert read(data, 1, len(data)) == decoder._DecodeVarint(data, 1)


def test_varint_bounds_and_errors() -> None:
    read = varint_reader()
    ten = b"\xff" * 9 + b"\x7f"  # 10 bytes: the bits past 64 dropped, as protobuf does
    assert read(ten, 0, 10) == (MASK64, 10)
    assert varint_reader(mask=-1)(ten, 0, 10) == ((1 << 70) - 1, 10)
    with pytest.raises(ValueError, match=r"^malformed OTLP request: varint$"):
        read(b"\xff" * 10 + b"\x01", 0, 11)  # 11 bytes
    with pytest.raises(ValueError, match=r"^malformed OTLP request: varint$"):
        read(b"\x80\x01", 0, 1)  # the end comes first, though the bytes go on
    five = varint_reader(Oops, max_bytes=5, truncated="short", overlong="long")
    assert five(b"\xff\xff\xff\xff\x0f", 0, 5) == (2**32 - 1, 5)
    with pytest.raises(Oops, match=r"^long$"):
        five(b"\xff" * 5 + b"\x01", 0, 6)
    with pytest.raises(Oops, match=r"^short$"):
        five(b"\xff\xff", 0, 2)
    assert str(malformed("x")) == "malformed OTLP request: x"


def test_fields_as_pbwire_next_field_gives_them() -> None:
    span = Span(
        trace_id=b"t" * 16,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=7,
        dropped_attributes_count=3,
    ).SerializeToString()
    fields = fields_reader(Oops)
    got = [(n, w, v, span[a:b]) for n, w, v, a, b in fields(span, 0, len(span))]
    assert got == [(1, 2, 0, b"t" * 16), (6, 0, 2, b""), (7, 1, 7, b""), (10, 0, 3, b"")]
    fixed32 = b"\x0d\x01\x00\x00\x00"  # field 1, wire type 5
    assert list(fields(fixed32, 0, 5)) == [(1, 5, 1, 1, 1)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00", "field number 0"),
        (b"\x80\x80\x80\x80\x80\x01", "field number"),  # a tag past 32 bits
        (b"\x0a\x05abc", "length past the end"),
        (b"\x09\x01\x02", "truncated fixed64"),
        (b"\x0d\x01", "truncated fixed32"),
        (b"\x0b", "wire type"),  # a group
        (b"\x08\x80", "varint"),
    ],
)
def test_field_errors_in_the_callers_type(data: bytes, reason: str) -> None:
    with pytest.raises(Oops, match=f"^{reason}$"):
        list(fields_reader(Oops)(data, 0, len(data)))
    read_tag, read_value = field_readers()
    with pytest.raises(ValueError, match=f"^malformed OTLP request: {reason}$"):
        _, wire, pos = read_tag(data, 0, len(data))
        read_value(data, wire, pos, len(data))
