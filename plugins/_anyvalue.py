"""An OTLP ``AnyValue`` as text, shared by the components that compare or print attribute
values (the ``redaction`` processor's rules, the Prometheus translation's labels)."""

from __future__ import annotations

import base64
import json
from typing import Any


def scalar_to_string(value: Any) -> str:
    """A scalar ``AnyValue`` as text (the Collector's ``AsString`` for strings, booleans,
    integers, doubles and base64 for bytes); ``""`` for arrays, maps and an empty value."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return ""


def any_value_to_string(value: Any) -> str:
    """An ``AnyValue`` as text: scalars as :func:`scalar_to_string`, arrays and maps as
    compact JSON."""
    if value.WhichOneof("value") in ("array_value", "kvlist_value"):
        return json.dumps(to_python(value), separators=(",", ":"))
    return scalar_to_string(value)


def to_python(value: Any) -> Any:
    """An ``AnyValue`` as Python data: lists, dicts, ints, floats, bools, ``None``; strings
    and bytes as :func:`scalar_to_string`."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: to_python(kv.value) for kv in value.kvlist_value.values}
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind is None:
        return None
    return scalar_to_string(value)
