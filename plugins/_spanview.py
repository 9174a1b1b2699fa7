"""A read-only view of an encoded ``ExportTraceServiceRequest`` for the agent connectors.

Spans are parsed by protobuf's C backend with their ``attributes`` read as a
``map<string, bytes>`` (a map field is encoded exactly as ``repeated KeyValue``: key 1, value
2), so looking up one attribute is a C-level map access that decodes nothing else, instead of a
Python loop over every ``KeyValue``. Values stay encoded ``AnyValue`` s: :func:`value_str`
decodes the few that are read. Resource, scope, events, links and status stay encoded.

The module name starts with ``_``: it is not a plugin.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_F = descriptor_pb2.FieldDescriptorProto


def _build() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="pipeline_agent_spanview.proto", package="pipeline_agent_spanview", syntax="proto3"
    )
    pkg = ".pipeline_agent_spanview."

    def message(parent: Any, name: str, fields: list[tuple[str, int, int, int, str | None]]) -> Any:
        m = parent.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
        return m

    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    msg, byt, st = _F.TYPE_MESSAGE, _F.TYPE_BYTES, _F.TYPE_STRING
    message(fdp.message_type, "Request", [("resource_spans", 1, msg, rep, pkg + "ResourceSpans")])
    message(
        fdp.message_type,
        "ResourceSpans",
        [
            ("resource", 1, byt, opt, None),
            ("scope_spans", 2, msg, rep, pkg + "ScopeSpans"),
            ("schema_url", 3, byt, opt, None),
        ],
    )
    message(
        fdp.message_type,
        "ScopeSpans",
        [
            ("scope", 1, byt, opt, None),
            ("spans", 2, msg, rep, pkg + "Span"),
            ("schema_url", 3, byt, opt, None),
        ],
    )
    span = message(
        fdp.message_type,
        "Span",
        [
            ("trace_id", 1, byt, opt, None),
            ("span_id", 2, byt, opt, None),
            ("parent_span_id", 4, byt, opt, None),
            ("name", 5, byt, opt, None),
            ("kind", 6, _F.TYPE_INT32, opt, None),
            ("start_time_unix_nano", 7, _F.TYPE_FIXED64, opt, None),
            ("end_time_unix_nano", 8, _F.TYPE_FIXED64, opt, None),
            ("attributes", 9, msg, rep, pkg + "Span.AttributesEntry"),
            ("events", 11, byt, rep, None),
            ("links", 13, byt, rep, None),
            ("status", 15, byt, opt, None),
        ],
    )
    entry = message(
        span.nested_type,
        "AttributesEntry",
        [("key", 1, st, opt, None), ("value", 2, byt, opt, None)],
    )
    entry.options.map_entry = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
        for name in ("pipeline_agent_spanview.Request", "pipeline_agent_spanview.Span")
    }


_CLASSES = _build()
TracesView: Any = _CLASSES["pipeline_agent_spanview.Request"]
"""``TracesView.FromString(encoded_request)``: spans with ``attributes`` as a map."""
SpanView: Any = _CLASSES["pipeline_agent_spanview.Span"]


def value_str(encoded: bytes) -> str:
    """An encoded ``AnyValue`` as a label string: strings as they are, integers in decimal,
    booleans ``true``/``false``, doubles with ``%g``; ``""`` for other kinds."""
    if encoded[:1] == b"\x0a" and len(encoded) > 1 and encoded[1] < 0x80:
        return encoded[2 : 2 + encoded[1]].decode("utf-8", "replace")
    value = AnyValue.FromString(encoded)
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return f"{value.double_value:g}"
    return ""


DECODED: dict[bytes, str] = {}
DECODED_MAX = 65_536
DECODED_MAX_BYTES = 256
"""Encodings longer than this are decoded every time, never remembered: the cache is bounded in
bytes too (65,536 hostile 1 MiB values would otherwise hold 128 GiB)."""


def cached_str(encoded: bytes) -> str:
    """:func:`value_str`, remembered per distinct encoding (label values repeat: a bounded
    cache, cleared when full, turns most decodes into one dict lookup)."""
    text = DECODED.get(encoded)
    if text is None:
        text = value_str(encoded)
        if len(encoded) <= DECODED_MAX_BYTES:
            if len(DECODED) >= DECODED_MAX:
                DECODED.clear()
            DECODED[encoded] = text
    return text
