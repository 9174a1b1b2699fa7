"""The OTLP wire encoding the ``workflow`` processor writes: attributes appended to encoded
spans and requests assembled from encoded spans, without building any message.

A repeated field may be appended on the wire, so stamping a span costs one bytes
concatenation (its encoded ``KeyValue`` fields appended); a request is assembled by joining
length-prefixed fields once. The C accelerator (``plugins/_native/_tracewire.c``) writes the
same bytes (the fuzz twin tests compare them).
"""

from __future__ import annotations

import functools
import struct

GroupKey = tuple[bytes, bytes, bytes, bytes]  # resource, its schema url, scope, its schema url


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# field headers (tag, length) for the usual lengths, by tag (larger ones are computed)
_HEADER_TABLE = 1024
_HEADERS: dict[int, list[bytes]] = {
    tag: [bytes((tag,)) + varint(n) for n in range(_HEADER_TABLE)] for tag in (0x0A, 0x12, 0x4A)
}


def _len_field(tag: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < _HEADER_TABLE:
        return _HEADERS[tag][n] + payload
    return bytes((tag,)) + varint(n) + payload


@functools.lru_cache(maxsize=256)
def _key_field(key: str) -> bytes:
    """``KeyValue.key`` (field 1), encoded."""
    return _len_field(0x0A, key.encode())


def encode_attribute_uncached(key: str, value: str) -> bytes:
    """``Span.attributes`` entry (field 9) holding ``KeyValue{key, AnyValue{string_value}}``
    (for values that do not repeat, such as workflow ids)."""
    raw = value.encode()
    n = len(raw)
    if n < 120:  # the usual case: every length fits in a table
        any_value = _HEADERS[0x0A][n] + raw
        kv = _key_field(key) + _HEADERS[0x12][n + 2] + any_value
        return _len_field(0x4A, kv)
    any_value = _len_field(0x0A, raw)
    kv = _len_field(0x0A, key.encode()) + _len_field(0x12, any_value)
    return _len_field(0x4A, kv)


@functools.lru_cache(maxsize=8192)
def encode_attribute(key: str, value: str) -> bytes:
    """``Span.attributes`` entry (field 9) holding ``KeyValue{key, AnyValue{string_value}}``,
    ready to be appended to an encoded span (cached: keys and most values repeat)."""
    return encode_attribute_uncached(key, value)


def encode_double_attribute(key: str, value: float) -> bytes:
    """``Span.attributes`` entry (field 9) holding ``KeyValue{key, AnyValue{double_value}}``
    (the ``workflow.duration`` written on a root above its execution)."""
    any_value = b"\x21" + struct.pack("<d", value)
    return _len_field(0x4A, _key_field(key) + _len_field(0x12, any_value))


def encode_bool_attribute(key: str, value: bool) -> bytes:
    """``Span.attributes`` entry (field 9) holding ``KeyValue{key, AnyValue{bool_value}}``
    (the ``workflow.secondary_root`` mark)."""
    any_value = b"\x10" + (b"\x01" if value else b"\x00")
    return _len_field(0x4A, _key_field(key) + _len_field(0x12, any_value))


def key_marker(key: str) -> bytes:
    """The bytes a ``KeyValue`` with this key starts with (a cheap presence pre-test)."""
    raw = key.encode()
    return b"\x0a" + varint(len(raw)) + raw


# ``ScopeSpans.spans`` field headers (tag 2, length) by span length (lengths repeat), filled
# as lengths are seen (up to _SPAN_HEADERS_MAX)
_SPAN_HEADERS: dict[int, bytes] = {}
_SPAN_HEADERS_MAX = 16384


def assemble_groups(by_group: dict[GroupKey, list[bytes]]) -> bytes:
    """An ``ExportTraceServiceRequest`` with one ``ResourceSpans`` / ``ScopeSpans`` per
    group, written directly on the wire (length-prefixed fields joined once: no message
    is built, each span is copied once). Empty fields are left out, as protobuf does."""
    headers = _SPAN_HEADERS
    out: list[bytes] = []
    for (resource, resource_url, scope, scope_url), spans in by_group.items():
        parts: list[bytes] = []
        if scope:
            parts += (b"\x0a", varint(len(scope)), scope)
        for span_raw in spans:
            n = len(span_raw)
            header = headers.get(n)
            if header is None:
                header = b"\x12" + varint(n)
                if n < _SPAN_HEADERS_MAX:
                    headers[n] = header
            parts += (header, span_raw)
        if scope_url:
            parts += (b"\x1a", varint(len(scope_url)), scope_url)
        scope_spans = b"".join(parts)
        rs: list[bytes] = []
        if resource:
            rs += (b"\x0a", varint(len(resource)), resource)
        rs += (b"\x12", varint(len(scope_spans)), scope_spans)
        if resource_url:
            rs += (b"\x1a", varint(len(resource_url)), resource_url)
        resource_spans = b"".join(rs)
        out += (b"\x0a", varint(len(resource_spans)), resource_spans)
    return b"".join(out)
