"""OTLP/JSON as the OTLP specification defines it, on top of protobuf's ``json_format`` (shared by
the ``otlp`` receiver, the ``otlphttp`` exporter and the ``kafka`` exporter and receiver).

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


class OTLPJSONError(PermanentError):
    """A body that is not a valid OTLP/JSON request; the text says what is wrong. The one
    exception :func:`parse` raises for bad input, whatever it is (the receiver answers 400)."""


class OTLPJSONBudgetError(OTLPJSONError):
    """A body that holds more JSON values than the decode budget allows, refused before it is
    parsed (the receiver answers 413)."""


DEFAULT_MAX_VALUES = 1_000_000
"""JSON values one body may hold: the default of the receiver's ``max_json_values``."""


def count_values(data: bytes) -> int:
    """An upper bound on the JSON values (objects, arrays, strings, numbers, literals) in
    ``data``: every value but the first of each object or array follows a comma. Counted at
    memory speed (~1 ms per MiB), before anything is built; brackets and commas inside
    strings count too, so the bound errs on the safe side."""
    return data.count(b",") + data.count(b"{") + data.count(b"[") + 1


def _switch_point(obj: dict[str, Any]) -> dict[str, Any]:
    """``json.loads``' object hook, doing nothing: a Python call per JSON object, where the
    interpreter may hand the GIL to another thread. Without it the C parser holds the GIL for
    the whole body (~0.3 s for 12 MiB, during which the event loop could not run while a
    decode thread parsed); it costs no measurable time."""
    return obj


def parse(data: bytes, message: Message, max_values: int = DEFAULT_MAX_VALUES) -> Message:
    """Fill ``message`` from an OTLP/JSON document.

    Raises :class:`OTLPJSONError` saying what is wrong: JSON that does not parse (or nests
    past the parser's limits), a document that is not an OTLP request, values of the wrong
    type, an id that is not hex of its length (naming it, as the Collector refuses the whole
    request: ``resourceSpans[0].scopeSpans[0].spans[3].traceId: '0102' is not an id of 32 hex
    digits``); :class:`OTLPJSONBudgetError` when the body may hold more than ``max_values``
    JSON values. What protobuf could not parse back once encoded (nesting past its limit, a
    required id missing) is refused by the receiver's check of the encoding.

    Cost: each JSON value becomes a Python object (at most ~72 bytes for an empty object or
    array) before it becomes protobuf, so ``max_values`` bounds what a body of tiny values
    (``[],[],...``: 24 times its size) can take.
    """
    values = count_values(data)
    if values > max_values:
        raise OTLPJSONBudgetError(
            f"the JSON body holds up to {values} values, more than max_json_values ({max_values})"
        )
    try:
        doc = json.loads(data, object_hook=_switch_point)
    except RecursionError:
        raise OTLPJSONError("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise OTLPJSONError(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise OTLPJSONError(
            f"malformed OTLP/JSON: expected a JSON object, got {type(doc).__name__}"
        )
    name = message.DESCRIPTOR.name
    try:
        _ids_hex_to_base64(doc)
    except PermanentError as exc:
        raise OTLPJSONError(str(exc)) from None
    except RecursionError:
        raise OTLPJSONError(f"malformed OTLP/JSON {name}: nested too deeply") from None
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except RecursionError:
        raise OTLPJSONError(f"malformed OTLP/JSON {name}: nested too deeply") from None
    except Exception as exc:  # ParseError; anything else json_format trips on is the input's
        raise OTLPJSONError(f"malformed OTLP/JSON {name}: {exc}") from None
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
