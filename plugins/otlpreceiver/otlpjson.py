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


def _ids_hex_to_base64(node: Any, path: str = "") -> None:
    """Convert every id (hex in OTLP/JSON) to base64 for ``json_format``; an id that is not
    hex of its length is a ``PermanentError`` naming it (``path`` is the JSON path so far)."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else key
            size = _ID_FIELDS.get(key)
            if size is not None and isinstance(value, str):
                if value:
                    node[key] = base64.b64encode(_hex_id(value, size, here)).decode("ascii")
            elif isinstance(value, dict | list):
                _ids_hex_to_base64(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict | list):
                _ids_hex_to_base64(item, f"{path}[{i}]")


def _hex_id(value: str, size: int, path: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size or len(value) != size * 2:
        shown = value if len(value) <= 64 else value[:61] + "..."
        raise PermanentError(f"{path}: {shown!r} is not an id of {size * 2} hex digits")
    return raw


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


def parse(data: bytes, message: Message) -> Message:
    """Fill ``message`` from an OTLP/JSON document.

    Raises ``PermanentError`` saying what is wrong: JSON that does not parse (or nests past the
    parser's limit), a document that is not an OTLP request, an id that is not hex of its
    length (naming it: ``resourceSpans[0].scopeSpans[0].spans[3].traceId: '0102' is not an id
    of 32 hex digits``). What protobuf could not parse back once encoded (nesting past its
    limit, a required id missing) is refused by the receiver's check of the encoding."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PermanentError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise PermanentError("malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise PermanentError(
            f"malformed OTLP/JSON: expected a JSON object, got {type(doc).__name__}"
        )
    try:
        _ids_hex_to_base64(doc)
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise PermanentError(f"malformed OTLP/JSON {message.DESCRIPTOR.name}: {exc}") from None
    except RecursionError:
        raise PermanentError(
            f"malformed OTLP/JSON {message.DESCRIPTOR.name}: nested too deeply"
        ) from None
    return message


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
