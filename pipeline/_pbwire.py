"""The protobuf wire format read by hand: the Python twin of ``plugins/_native/pbwire.h``,
shared by the Python code that reads encoded OTLP without decoding it (the twins of the C
scanners ``pipeline/_route.py`` and ``plugins/tailsamplingprocessor/scan.py``, the validator's
twin ``pipeline/_otlpvalid.py``, ``plugins/_otlproute.py``).

Each caller keeps its own error type and wording and its own bounds (they follow the C code it
is the twin of, or protobuf's parser): the readers are built once per caller, given how to make
its error from pbwire.h's reason (``"varint"``, ``"field number"``, ``"length past the end"``...)
and its bounds, and are then plain functions (no per-call parameters)::

    read_varint = varint_reader(MyError)              # pbwire.h's read_varint
    read_tag, read_value = field_readers(MyError)     # pbwire.h's next_field, in two steps
    fields = fields_reader(MyError)                   # next_field over a whole message

and :func:`encode_varint` writes one.

Positions are indexes into ``data``; ``end`` bounds the message (nothing is read at or past
it). Fixed-width values are read little-endian, as the C code on x86_64 / aarch64 hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

MASK64 = (1 << 64) - 1

Error = Callable[[str], Exception]
VarintReader = Callable[[bytes, int, int], tuple[int, int]]
TagReader = Callable[[bytes, int, int], tuple[int, int, int]]
ValueReader = Callable[[bytes, int, int, int], tuple[int, int, int, int]]
FieldsReader = Callable[[bytes, int, int], Iterator[tuple[int, int, int, int, int]]]


def malformed(reason: str) -> ValueError:
    """pbwire.h's ``bad()``: ``ValueError("malformed OTLP request: <reason>")``."""
    return ValueError(f"malformed OTLP request: {reason}")


def varint_reader(
    error: Error = malformed,
    *,
    max_bytes: int = 10,
    mask: int = MASK64,
    truncated: str = "varint",
    overlong: str = "varint",
) -> VarintReader:
    """``read_varint(data, pos, end) -> (value, pos after it)``: pbwire.h's ``read_varint``
    with the defaults (at most 10 bytes, the value kept to 64 bits as protobuf keeps it).
    ``error(truncated)`` is raised when ``end`` comes first, ``error(overlong)`` past
    ``max_bytes`` bytes; ``mask=-1`` keeps every bit read."""
    limit = 7 * max_bytes

    def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
        if pos < end and data[pos] < 0x80:
            return data[pos], pos + 1
        value = shift = 0
        while shift < limit:
            if pos >= end:
                raise error(truncated)
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value & mask, pos
            shift += 7
        raise error(overlong)

    return read_varint


def field_readers(
    error: Error = malformed, read_varint: VarintReader | None = None
) -> tuple[TagReader, ValueReader]:
    """pbwire.h's ``next_field`` in two steps, for callers that handle some wire types
    themselves (groups):

    * ``read_tag(data, pos, end) -> (number, wire, pos after the tag)``; ``error("field
      number")`` for a tag past 32 bits, ``error("field number 0")``;
    * ``read_value(data, wire, pos, end) -> (value, start, stop, pos after it)`` for wire types
      0, 1, 2 and 5: a varint or fixed value in ``value`` (0 for length-delimited), the
      payload of a length-delimited field in ``data[start:stop]`` (``start == stop == pos``
      otherwise); ``error("truncated fixed64")``, ``error("truncated fixed32")``,
      ``error("length past the end")``, ``error("wire type")`` for any other wire type."""
    varint = read_varint or varint_reader(error)

    def read_tag(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
        tag, pos = varint(data, pos, end)
        if tag > 0xFFFFFFFF:
            raise error("field number")
        number = tag >> 3
        if number == 0:
            raise error("field number 0")
        return number, tag & 7, pos

    def read_value(data: bytes, wire: int, pos: int, end: int) -> tuple[int, int, int, int]:
        if wire == 0:
            value, pos = varint(data, pos, end)
            return value, pos, pos, pos
        if wire == 2:
            n, pos = varint(data, pos, end)
            if n > end - pos:
                raise error("length past the end")
            return 0, pos, pos + n, pos + n
        if wire == 1:
            if end - pos < 8:
                raise error("truncated fixed64")
            return int.from_bytes(data[pos : pos + 8], "little"), pos, pos, pos + 8
        if wire == 5:
            if end - pos < 4:
                raise error("truncated fixed32")
            return int.from_bytes(data[pos : pos + 4], "little"), pos, pos, pos + 4
        raise error("wire type")

    return read_tag, read_value


def fields_reader(error: Error = malformed) -> FieldsReader:
    """``fields(data, pos, end)``: ``(number, wire, value, start, stop)`` of each field of
    ``data[pos:end]``, as pbwire.h's ``next_field`` gives them (see :func:`field_readers`;
    groups are refused: ``error("wire type")``)."""
    read_tag, read_value = field_readers(error)

    def fields(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
        while pos < end:
            tag = data[pos]
            if tag < 0x80 and tag >= 8:  # one-byte tag (fields 1 to 15): no call
                pos += 1
                number, wire = tag >> 3, tag & 7
            else:
                number, wire, pos = read_tag(data, pos, end)
            if wire == 2 and pos < end and data[pos] < 0x80:  # a short payload: no call
                n = data[pos]
                pos += 1
                if n > end - pos:
                    raise error("length past the end")
                yield number, 2, 0, pos, pos + n
                pos += n
                continue
            value, start, stop, pos = read_value(data, wire, pos, end)
            yield number, wire, value, start, stop

    return fields


def encode_varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
