"""OTLP/JSON as the OTLP specification defines it, on top of protobuf's ``json_format``.

The specification's JSON mapping is protobuf's canonical one (lowerCamelCase names, 64-bit
integers as strings or numbers, enums as integers) with one exception: trace and span IDs are
hex strings, not base64. ``json_format`` would read them as base64, so they are converted on the
way in and on the way out. Unknown fields are ignored, as the specification requires.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from pipeline import PermanentError

# Fields holding IDs, with their length in bytes (both spellings json_format accepts).
_ID_FIELDS = {
    "traceId": 16,
    "trace_id": 16,
    "spanId": 8,
    "span_id": 8,
    "parentSpanId": 8,
    "parent_span_id": 8,
}


def _ids_hex_to_base64(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            size = _ID_FIELDS.get(key)
            if size is not None and isinstance(value, str):
                if not value:
                    continue
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raise PermanentError(
                        f"invalid {key} {value!r}: expected {size * 2} hex digits"
                    ) from None
                if len(raw) != size:
                    raise PermanentError(
                        f"invalid {key} {value!r}: expected {size * 2} hex digits, got {len(value)}"
                    )
                node[key] = base64.b64encode(raw).decode("ascii")
            elif isinstance(value, dict | list):
                _ids_hex_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _ids_hex_to_base64(item)


def _ids_base64_to_hex(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = binascii.a2b_base64(value).hex()
            elif isinstance(value, dict | list):
                _ids_base64_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _ids_base64_to_hex(item)


def _children(node: Any, camel: str, snake: str) -> list[Any]:
    value = node.get(camel, node.get(snake)) if isinstance(node, dict) else None
    return value if isinstance(value, list) else []


# Requests whose items are accepted or rejected one by one for their IDs: the item lists, as
# (resources, scopes, items) in both spellings json_format accepts.
_ITEM_LEVELS = {
    "ExportTraceServiceRequest": (
        ("resourceSpans", "resource_spans"),
        ("scopeSpans", "scope_spans"),
        ("spans", "spans"),
    ),
    "ExportLogsServiceRequest": (
        ("resourceLogs", "resource_logs"),
        ("scopeLogs", "scope_logs"),
        ("logRecords", "log_records"),
    ),
}


def _item_ids_hex_to_base64(
    doc: dict[str, Any], levels: tuple[tuple[str, str], ...]
) -> tuple[int, str]:
    """Convert the IDs of every item (a span and its links, a log record); drop the items whose
    IDs are invalid.

    Returns how many items were dropped and the first reason, for a partial-success answer.
    """
    (groups, scopes, items_key) = levels
    rejected = 0
    first_error = ""
    for group in _children(doc, *groups):
        for scope in _children(group, *scopes):
            items = _children(scope, *items_key)
            if not items:
                continue
            kept = []
            for item in items:
                try:
                    _ids_hex_to_base64(item)
                except PermanentError as exc:
                    rejected += 1
                    first_error = first_error or str(exc)
                    continue
                kept.append(item)
            if len(kept) != len(items):
                for key in items_key:
                    if key in scope:
                        scope[key] = kept
    return rejected, first_error


# OTLP nests a few levels (plus AnyValue lists and maps): a document nested as deeply as the
# interpreter's recursion limit is refused, not answered with a server error (issue 13)
_TOO_DEEP = "malformed OTLP/JSON: nested too deeply"


def parse(data: bytes, message: Message) -> tuple[Message, int, str]:
    """Fill ``message`` from an OTLP/JSON document.

    Returns ``(message, rejected, error)``: spans and log records whose IDs are not valid hex
    of the right length are left out and counted in ``rejected`` (the receiver answers with a
    partial success); raises ``PermanentError`` saying what is wrong when nothing can be
    accepted.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PermanentError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise PermanentError(_TOO_DEEP) from None
    if not isinstance(doc, dict):
        raise PermanentError(
            f"malformed OTLP/JSON: expected a JSON object, got {type(doc).__name__}"
        )
    rejected, error = 0, ""
    levels = _ITEM_LEVELS.get(message.DESCRIPTOR.name)
    try:
        if levels is not None:
            rejected, error = _item_ids_hex_to_base64(doc, levels)
        else:
            _ids_hex_to_base64(doc)
    except RecursionError:  # a document json.loads could just read
        raise PermanentError(_TOO_DEEP) from None
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise PermanentError(f"malformed OTLP/JSON {message.DESCRIPTOR.name}: {exc}") from None
    return message, rejected, error


def to_dict(message: Message) -> dict[str, Any]:
    """The OTLP/JSON form of ``message`` as a dict (hex IDs, enums as integers)."""
    doc = json_format.MessageToDict(
        message, use_integers_for_enums=True, preserving_proto_field_name=False
    )
    _ids_base64_to_hex(doc)
    return doc


def dumps(message: Message) -> bytes:
    """The OTLP/JSON encoding of ``message``."""
    return json.dumps(to_dict(message), separators=(",", ":")).encode()
