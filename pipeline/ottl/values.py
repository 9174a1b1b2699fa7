"""OTTL values in Python, and maps and slices over the OTLP messages.

A value read from telemetry is ``None`` (unset), ``str``, ``int``, ``float``, ``bool``,
``bytes``, a :class:`PMap` (a map attached to telemetry: changing it changes the telemetry) or a
:class:`PSlice`. Converters may also return detached ``dict`` and ``list`` values; setting one
into telemetry copies it. Every map-like value (attached, lazy or detached) answers the
:class:`MapLike` methods, which is all the standard functions use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


class OTTLRuntimeError(Exception):
    """A statement could not run on one item (a wrong type, a failed conversion): handled by
    the component's ``error_mode``."""


class MapLike(Protocol):
    """What functions may do with a map value."""

    def get(self, key: str) -> Any: ...
    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...
    def keys(self) -> list[str]: ...
    def items(self) -> list[tuple[str, Any]]: ...
    def set(self, key: str, value: Any) -> None: ...
    def remove(self, key: str) -> bool: ...
    def remove_if(self, predicate: Callable[[str, Any], bool]) -> None: ...
    def replace_all(self, items: list[tuple[str, Any]]) -> None: ...


def is_map(value: Any) -> bool:
    return isinstance(value, dict) or hasattr(value, "remove_if")


def is_slice(value: Any) -> bool:
    return isinstance(value, list | tuple | PSlice)


# -- AnyValue <-> Python ------------------------------------------------------------------------
def from_any(av: Any) -> Any:
    """A decoded ``AnyValue`` as an OTTL value (maps and slices stay attached to it)."""
    kind = av.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return av.string_value
    if kind == "int_value":
        return av.int_value
    if kind == "double_value":
        return av.double_value
    if kind == "bool_value":
        return av.bool_value
    if kind == "bytes_value":
        return av.bytes_value
    if kind == "kvlist_value":
        return PMap(av.kvlist_value.values)
    return PSlice(av.array_value.values)


def set_any(av: Any, value: Any) -> None:
    """Write an OTTL value into an ``AnyValue`` (copying maps and slices)."""
    if isinstance(value, PMap | PSlice):
        value = to_plain(value)  # may be part of av itself: copy first
    if value is None:
        av.Clear()
    elif isinstance(value, bool):
        av.bool_value = value
    elif isinstance(value, str):
        av.string_value = value
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise OTTLRuntimeError(f"integer {value} does not fit in 64 bits")
        av.int_value = value
    elif isinstance(value, float):
        av.double_value = value
    elif isinstance(value, bytes | bytearray):
        av.bytes_value = bytes(value)
    elif isinstance(value, dict) or hasattr(value, "remove_if"):
        items = list(value.items())
        av.kvlist_value.SetInParent()
        del av.kvlist_value.values[:]
        for k, v in items:
            set_any(av.kvlist_value.values.add(key=k).value, v)
    elif isinstance(value, list | tuple):
        av.array_value.SetInParent()
        del av.array_value.values[:]
        for v in value:
            set_any(av.array_value.values.add(), v)
    else:
        raise OTTLRuntimeError(f"cannot store a value of type {type(value).__name__}")


def encode_any(value: Any) -> bytes:
    """An OTTL value as an encoded ``AnyValue``."""
    if isinstance(value, str):
        data = value.encode()
        if len(data) < 128:
            return b"\x0a" + bytes((len(data),)) + data
    av = AnyValue()
    set_any(av, value)
    return bytes(av.SerializeToString())


def decode_any(encoded: bytes) -> Any:
    """An encoded ``AnyValue`` as a detached OTTL value (short strings without a parse)."""
    if (
        len(encoded) > 1
        and encoded[0] == 0x0A
        and encoded[1] < 0x80
        and len(encoded) == 2 + encoded[1]
    ):
        return encoded[2:].decode()
    av = AnyValue.FromString(encoded)
    value = from_any(av)
    return value


def to_plain(value: Any) -> Any:
    """A detached copy: maps as ``dict``, slices as ``list``."""
    if isinstance(value, dict) or hasattr(value, "remove_if"):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | PSlice):
        return [to_plain(v) for v in value]
    return value


class PMap:
    """A map attached to telemetry (``repeated KeyValue``): lookups are linear, as in pdata."""

    __slots__ = ("_kvs",)

    def __init__(self, kvs: Any) -> None:
        self._kvs = kvs

    def _find(self, key: str) -> Any:
        for kv in self._kvs:
            if kv.key == key:
                return kv
        return None

    def get(self, key: str) -> Any:
        kv = self._find(key)
        return None if kv is None else from_any(kv.value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) is not None

    def __len__(self) -> int:
        return len(self._kvs)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        return [kv.key for kv in self._kvs]

    def items(self) -> list[tuple[str, Any]]:
        return [(kv.key, from_any(kv.value)) for kv in self._kvs]

    def set(self, key: str, value: Any) -> None:
        if isinstance(value, PMap | PSlice):
            value = to_plain(value)
        kv = self._find(key)
        if kv is None:
            kv = self._kvs.add(key=key)
        set_any(kv.value, value)

    def value_slot(self, key: str) -> Any:
        """The ``AnyValue`` of ``key``, added empty when missing."""
        kv = self._find(key)
        if kv is None:
            kv = self._kvs.add(key=key)
        return kv.value

    def remove(self, key: str) -> bool:
        for i, kv in enumerate(self._kvs):
            if kv.key == key:
                del self._kvs[i]
                return True
        return False

    def remove_if(self, predicate: Callable[[str, Any], bool]) -> None:
        keep = [kv for kv in self._kvs if not predicate(kv.key, from_any(kv.value))]
        if len(keep) != len(self._kvs):
            copies = [KeyValue.FromString(kv.SerializeToString()) for kv in keep]
            del self._kvs[:]
            self._kvs.extend(copies)

    def replace_all(self, items: list[tuple[str, Any]]) -> None:
        plain = [(k, to_plain(v)) for k, v in items]
        del self._kvs[:]
        for k, v in plain:
            set_any(self._kvs.add(key=k).value, v)

    def __eq__(self, other: object) -> bool:
        return is_map(other) and to_plain(self) == to_plain(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PMap({to_plain(self)!r})"


class PSlice:
    """A slice attached to telemetry (``repeated AnyValue``)."""

    __slots__ = ("_values",)

    def __init__(self, values: Any) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return (from_any(v) for v in self._values)

    def __getitem__(self, index: int) -> Any:
        return from_any(self._values[index])

    def set_index(self, index: int, value: Any) -> None:
        set_any(self._values[index], value)

    def __eq__(self, other: object) -> bool:
        return is_slice(other) and to_plain(self) == to_plain(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PSlice({to_plain(self)!r})"


# -- helpers the functions share ----------------------------------------------------------------
def type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "[]byte"
    if is_map(value):
        return "map"
    if is_slice(value):
        return "slice"
    return type(value).__name__


def json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    if is_map(value):
        return dict(value.items())
    if is_slice(value):
        return list(value)
    raise TypeError(type(value).__name__)


def as_string(value: Any) -> str:
    """pcommon's ``Value.AsString``: how a value prints as a string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    return json.dumps(to_plain(value), default=json_default, separators=(",", ":"))


def format_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(f, 'f', -1, 64)`` for ordinary values."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    if "e" in text or "E" in text:
        from decimal import Decimal

        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


class Time:
    """An OTTL ``time.Time``: nanoseconds since the Unix epoch."""

    __slots__ = ("ns",)

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Time) and other.ns == self.ns

    def __lt__(self, other: Time) -> bool:
        return self.ns < other.ns

    def __le__(self, other: Time) -> bool:
        return self.ns <= other.ns

    def __gt__(self, other: Time) -> bool:
        return self.ns > other.ns

    def __ge__(self, other: Time) -> bool:
        return self.ns >= other.ns

    def __hash__(self) -> int:
        return hash(("time", self.ns))

    def __repr__(self) -> str:
        return f"Time({self.ns})"


class Duration:
    """An OTTL ``time.Duration``: nanoseconds."""

    __slots__ = ("ns",)

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.ns == self.ns

    def __lt__(self, other: Duration) -> bool:
        return self.ns < other.ns

    def __le__(self, other: Duration) -> bool:
        return self.ns <= other.ns

    def __gt__(self, other: Duration) -> bool:
        return self.ns > other.ns

    def __ge__(self, other: Duration) -> bool:
        return self.ns >= other.ns

    def __hash__(self) -> int:
        return hash(("duration", self.ns))

    def __repr__(self) -> str:
        return f"Duration({self.ns})"


class DictMap:
    """A detached map (``cache``, a map built by a converter) with the :class:`MapLike`
    methods."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data if data is not None else {}

    def get(self, key: str) -> Any:
        value = self.data.get(key)
        if isinstance(value, dict):
            return DictMap(value)  # attached: editors change it in place
        return value

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.data))

    def keys(self) -> list[str]:
        return list(self.data)

    def items(self) -> list[tuple[str, Any]]:
        return [(k, DictMap(v) if isinstance(v, dict) else v) for k, v in self.data.items()]

    def set(self, key: str, value: Any) -> None:
        self.data[key] = to_plain(value)

    def remove(self, key: str) -> bool:
        return self.data.pop(key, _MISSING) is not _MISSING

    def remove_if(self, predicate: Callable[[str, Any], bool]) -> None:
        for k in [k for k, v in self.data.items() if predicate(k, v)]:
            del self.data[k]

    def replace_all(self, items: list[tuple[str, Any]]) -> None:
        plain = [(k, to_plain(v)) for k, v in items]
        self.data.clear()
        self.data.update(plain)

    def __eq__(self, other: object) -> bool:
        return is_map(other) and to_plain(self) == to_plain(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DictMap({self.data!r})"


_MISSING = object()
