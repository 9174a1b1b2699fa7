"""Which worker owns which part of an encoded OTLP request (``service.workers``).

A request is split by owner without decoding more than the routing key:

* traces: each span's ``trace_id`` (field 1 of ``Span``; read straight from the span's first
  bytes when, as every SDK writes it, it comes first, else by walking the span's top-level
  tags), so that every span of a trace is processed by one worker;
* metrics: each ``ResourceMetrics``' ``resource`` bytes, so that every series of a resource
  lives in one worker (a cumulative series is never held, and summed, twice);
* logs: not routed (no processor keeps state across log records).

The owner of a key is a pure function of its bytes and the worker count (the last 8 bytes of a
trace id, which W3C trace context keeps random, modulo the count; a CRC-32 of the resource), the
same in every process. A request whose items all belong to one worker is returned as it came
(no re-encoding); otherwise the parts are re-encoded through the shallow views of
:mod:`pipeline._wire` (spans copied as opaque bytes, each part repeating the resource and scope
of the spans it holds). Malformed framing raises ``ValueError``; the receivers check every
request before it gets here, so that is a bug, not input.
"""

from __future__ import annotations

import zlib
from typing import Any

from google.protobuf.message import DecodeError

from pipeline import _wire

_SPAN_TRACE_ID_TAG = b"\x0a\x10"  # field 1, length-delimited, 16 bytes


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def field_bytes(data: bytes, number: int) -> bytes:
    """The last occurrence of length-delimited field ``number`` in the message ``data`` (as
    protobuf keeps the last of a repeated singular field), ``b""`` when absent."""
    pos = 0
    found = b""
    end = len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, pos = _varint(data, pos)
            if pos + n > end:
                raise ValueError("truncated field")
            if tag >> 3 == number:
                found = data[pos : pos + n]
            pos += n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")
    return found


def span_trace_id(span: bytes) -> bytes:
    """A span's trace id, reading no other field."""
    if span[:2] == _SPAN_TRACE_ID_TAG and len(span) >= 18:
        # the first field, as every SDK writes it (a span that repeats the field later is
        # routed by this first value, not by the last one a decoder keeps)
        return span[2:18]
    return field_bytes(span, 1)


def trace_owner(trace_id: bytes, workers: int) -> int:
    """The worker (0-based) that processes every span of ``trace_id``."""
    return int.from_bytes(trace_id[-8:], "big") % workers


def resource_owner(resource: bytes, workers: int) -> int:
    """The worker that holds every series of the resource encoded as ``resource``."""
    return zlib.crc32(resource) % workers


def split_traces(data: bytes, workers: int) -> dict[int, tuple[bytes, int | None]]:
    """An ``ExportTraceServiceRequest`` split by owning worker: ``{worker: (request, spans)}``
    with only the workers that own spans (``{}`` for a request without any)."""
    try:
        shallow: Any = _wire.ShallowTraces.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"malformed traces request: {exc}") from None
    owners: list[list[int]] = []
    seen: set[int] = set()
    for rs in shallow.resource_spans:
        for ss in rs.scope_spans:
            row = [trace_owner(span_trace_id(s), workers) for s in ss.spans]
            owners.append(row)
            seen.update(row)
    if not seen:
        return {}
    if len(seen) == 1:
        return {seen.pop(): (data, None)}
    counts = dict.fromkeys(seen, 0)
    for row in owners:
        for owner in row:
            counts[owner] += 1
    parts: dict[int, Any] = {}
    i = 0
    for rs in shallow.resource_spans:
        made: dict[int, Any] = {}
        for ss in rs.scope_spans:
            row = owners[i]
            i += 1
            scoped: dict[int, Any] = {}
            for span, owner in zip(ss.spans, row, strict=True):
                out_ss = scoped.get(owner)
                if out_ss is None:
                    out_rs = made.get(owner)
                    if out_rs is None:
                        req = parts.get(owner)
                        if req is None:
                            req = parts[owner] = _wire.ShallowTraces()
                        out_rs = made[owner] = req.resource_spans.add(
                            resource=rs.resource, schema_url=rs.schema_url
                        )
                    out_ss = scoped[owner] = out_rs.scope_spans.add(
                        scope=ss.scope, schema_url=ss.schema_url
                    )
                out_ss.spans.append(span)
    return {owner: (req.SerializeToString(), counts[owner]) for owner, req in sorted(parts.items())}


def _entries(data: bytes, number: int) -> list[tuple[int, int]]:
    """``(start, end)`` of every encoded occurrence (tag included) of field ``number``."""
    out: list[tuple[int, int]] = []
    pos = 0
    end = len(data)
    while pos < end:
        start = pos
        tag, pos = _varint(data, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, pos = _varint(data, pos)
            pos += n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")
        if tag >> 3 == number and wire == 2:
            out.append((start, pos))
    return out


def split_metrics(data: bytes, workers: int) -> dict[int, tuple[bytes, int | None]]:
    """An ``ExportMetricsServiceRequest`` split by owning worker, one ``ResourceMetrics`` at
    a time: ``{worker: (request, None)}``, the encoded entries copied as they are (two
    encodings joined are one valid request)."""
    entries = _entries(data, 1)
    if not entries:
        return {}
    chunks: dict[int, list[bytes]] = {}
    for start, stop in entries:
        entry = data[start:stop]
        # the entry's body starts after its tag and length
        _, body = _varint(entry, 1)
        owner = resource_owner(field_bytes(entry[body:], 1), workers)
        chunks.setdefault(owner, []).append(entry)
    if len(chunks) == 1:
        return {next(iter(chunks)): (data, None)}
    return {owner: (b"".join(parts), None) for owner, parts in sorted(chunks.items())}
