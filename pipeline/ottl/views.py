"""Lazy views of encoded spans and log records: read what a statement touches, decode the rest
only when it is changed.

A traces (logs) request is parsed twice by protobuf's C backend: *shallow* (each span or log
record kept as its encoded bytes, to rebuild the request) and as a *view* (each span's scalar
fields parsed, its ``attributes`` read as a ``map<string, bytes>``, every attribute value, the
events, links and the log body left encoded). Reading ``name`` or ``attributes["http.route"]`` is
then a C-level field or map access and one small decode of that value; nothing else of the span
becomes a Python object. A change either appends an encoded attribute to the span's bytes (a new
key: repeated fields concatenate on the wire) or decodes that one span fully and re-encodes it.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline._pbwire import encode_varint
from pipeline.ottl.values import PMap, decode_any, encode_any, from_any, is_map, is_slice

_F = descriptor_pb2.FieldDescriptorProto


SPAN_FIELDS: dict[str, tuple[int, int]] = {
    "trace_id": (1, _F.TYPE_BYTES), "span_id": (2, _F.TYPE_BYTES),
    "trace_state": (3, _F.TYPE_STRING), "parent_span_id": (4, _F.TYPE_BYTES),
    "name": (5, _F.TYPE_STRING), "kind": (6, _F.TYPE_INT32),
    "start_time_unix_nano": (7, _F.TYPE_FIXED64), "end_time_unix_nano": (8, _F.TYPE_FIXED64),
    "attributes": (9, _F.TYPE_MESSAGE), "dropped_attributes_count": (10, _F.TYPE_UINT32),
    "events": (11, _F.TYPE_BYTES), "dropped_events_count": (12, _F.TYPE_UINT32),
    "links": (13, _F.TYPE_BYTES), "dropped_links_count": (14, _F.TYPE_UINT32),
    "status": (15, _F.TYPE_MESSAGE), "flags": (16, _F.TYPE_FIXED32),
}  # fmt: skip
LOG_FIELDS: dict[str, tuple[int, int]] = {
    "time_unix_nano": (1, _F.TYPE_FIXED64), "severity_number": (2, _F.TYPE_INT32),
    "severity_text": (3, _F.TYPE_STRING), "body": (5, _F.TYPE_BYTES),
    "attributes": (6, _F.TYPE_MESSAGE), "dropped_attributes_count": (7, _F.TYPE_UINT32),
    "flags": (8, _F.TYPE_FIXED32), "trace_id": (9, _F.TYPE_BYTES), "span_id": (10, _F.TYPE_BYTES),
    "observed_time_unix_nano": (11, _F.TYPE_FIXED64), "event_name": (12, _F.TYPE_STRING),
}  # fmt: skip
_REPEATED = {"events", "links"}


@functools.cache
def view_classes(signal: str) -> tuple[Any, Any]:
    """``(request view class, item view class)`` for ``signal`` (``traces`` or ``logs``): every
    field of a span (log record) parsed, its attributes, events, links and the log body kept
    encoded (about 0.2 µs a span with 8 attributes, against 0.75 for a full parse; declaring
    fewer fields costs more: protobuf keeps the others as unknown fields)."""
    item_fields = SPAN_FIELDS if signal == "traces" else LOG_FIELDS
    key = "bytes"
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"pipeline_ottl_view_{signal}_{key}.proto",
        package="pipeline_ottl_view",
        syntax="proto3",
    )
    pkg = ".pipeline_ottl_view."
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    msg, byt, st = _F.TYPE_MESSAGE, _F.TYPE_BYTES, _F.TYPE_STRING

    def message(parent: Any, name: str, spec: list[tuple[str, int, int, int, str | None]]) -> Any:
        m = parent.add(name=name)
        for fname, number, ftype, label, type_name in spec:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = pkg + type_name
        return m

    group, scope_items, item_name = (
        ("resource_spans", "scope_spans", "spans")
        if signal == "traces"
        else ("resource_logs", "scope_logs", "log_records")
    )
    message(fdp.message_type, "Request", [(group, 1, msg, rep, "Resource")])
    message(
        fdp.message_type,
        "Resource",
        [("resource", 1, byt, opt, None), (scope_items, 2, msg, rep, "Scope"),
         ("schema_url", 3, byt, opt, None)],
    )  # fmt: skip
    message(
        fdp.message_type,
        "Scope",
        [("scope", 1, byt, opt, None), (item_name, 2, msg, rep, "Item"),
         ("schema_url", 3, byt, opt, None)],
    )  # fmt: skip
    spec: list[tuple[str, int, int, int, str | None]] = []
    for name in sorted(item_fields, key=lambda n: item_fields[n][0]):
        number, ftype = item_fields[name]
        if name == "attributes":
            spec.append((name, number, byt, rep, None))
        elif name == "status":
            spec.append((name, number, msg, opt, "Status"))
        else:
            spec.append((name, number, ftype, rep if name in _REPEATED else opt, None))
    message(fdp.message_type, "Item", spec)
    message(
        fdp.message_type,
        "Status",
        [("message", 2, st, opt, None), ("code", 3, _F.TYPE_INT32, opt, None)],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    request = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("pipeline_ottl_view.Request")
    )
    item_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("pipeline_ottl_view.Item")
    )
    return request, item_class


def _ld(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def _is_scalar(value: Any) -> bool:
    return not (is_map(value) or is_slice(value))


class LazyItem:
    """A span or log record: its view for reading, its bytes, and its full decode once changed.

    ``full`` is decoded from ``raw`` (plus what was appended) at the first change that cannot be
    appended; afterwards it is read and written directly.
    """

    __slots__ = ("_view", "added", "extra", "full", "raw")
    full_class: Any = None
    attributes_tag = 0
    signal = ""

    def __init__(self, raw: bytes, view: Any = None) -> None:
        self._view = view
        self.raw = raw
        self.full: Any = None
        self.extra = b""
        self.added: dict[str, Any] | None = None

    @property
    def view(self) -> Any:
        """The parsed view of this item (every field), when the request's view was not parsed
        or lacks a field."""
        view = self._view
        if view is None:
            view = self._view = view_classes(self.signal)[1].FromString(self.raw)
        return view

    def _find_attribute(self, key: str) -> Any:
        """The first ``KeyValue`` with ``key`` (as pdata finds it), or ``None``: only the
        encoded attributes holding the key's encoding are decoded."""
        needle = _key_needle(key)
        for encoded in self.view.attributes:
            if needle in encoded:
                kv = KeyValue.FromString(encoded)
                if kv.key == key:
                    return kv
        return None

    def materialize(self) -> Any:
        if self.full is None:
            self.full = self.full_class.FromString(self.raw + self.extra)
            self.added = None
        return self.full

    @property
    def src(self) -> Any:
        return self.view if self.full is None else self.full

    def changed(self) -> bool:
        return self.full is not None or bool(self.extra)

    def encoded(self) -> bytes:
        if self.full is not None:
            return bytes(self.full.SerializeToString())
        return self.raw + self.extra

    # -- attributes --------------------------------------------------------------------------
    def get_attr(self, key: str) -> Any:
        if self.full is not None:
            return PMap(self.full.attributes).get(key)
        if self.added is not None and key in self.added:
            return self.added[key]
        if _key_needle(key) not in self.raw:
            return None  # the key's encoding appears nowhere in the item: not an attribute
        kv = self._find_attribute(key)
        if kv is None:
            return None
        value = from_any(kv.value)
        if is_map(value) or is_slice(value):
            # maps and slices are returned attached, so editors can change them in place
            return PMap(self.materialize().attributes).get(key)
        return value

    def has_attr(self, key: str) -> bool:
        if self.full is not None:
            return key in PMap(self.full.attributes)
        if self.added is not None and key in self.added:
            return True
        return _key_needle(key) in self.raw and self._find_attribute(key) is not None

    def set_attr(self, key: str, value: Any) -> None:
        if self.full is None and _is_scalar(value) and value is not None and not self.has_attr(key):
            kv = _ld(0x0A, key.encode()) + _ld(0x12, encode_any(value))
            self.extra += _ld(self.attributes_tag, kv)
            if self.added is None:
                self.added = {}
            self.added[key] = value
            return
        PMap(self.materialize().attributes).set(key, value)

    def attributes(self) -> LazyAttributes:
        return LazyAttributes(self)


class LazySpan(LazyItem):
    __slots__ = ()
    full_class = Span
    attributes_tag = 0x4A  # field 9, length-delimited
    signal = "traces"


class LazyLog(LazyItem):
    __slots__ = ()
    full_class = LogRecord
    attributes_tag = 0x32  # field 6, length-delimited
    signal = "logs"

    def body(self) -> Any:
        if self.full is not None:
            return from_any(self.full.body) if self.full.HasField("body") else None
        body = self.view.body
        if not body:
            return None
        value = decode_any(body)
        if is_map(value) or is_slice(value):
            return from_any(self.materialize().body)
        return value


_NEEDLES: dict[str, bytes] = {}


_FIELDS: dict[tuple[int, str, Any, type], bytes] = {}


def attribute_field(tag: int, key: str, value: Any) -> bytes:
    """The encoded attributes field (``tag``) holding ``KeyValue(key, value)``; remembered for
    the values written again and again (a bounded cache)."""
    cache_key = (tag, key, value, type(value))
    field = _FIELDS.get(cache_key)
    if field is None:
        field = _ld(tag, _ld(0x0A, key.encode()) + _ld(0x12, encode_any(value)))
        if len(_FIELDS) >= 4096:
            _FIELDS.clear()
        _FIELDS[cache_key] = field
    return field


def key_needle(key: str) -> bytes:
    return _key_needle(key)


def _key_needle(key: str) -> bytes:
    """How a ``KeyValue`` with this key starts on the wire (field 1, its length, the key)."""
    needle = _NEEDLES.get(key)
    if needle is None:
        data = key.encode()
        needle = b"\x0a" + encode_varint(len(data)) + data
        if len(_NEEDLES) >= 4096:  # keys computed from data: bounded
            _NEEDLES.clear()
        _NEEDLES[key] = needle
    return needle


class LazyAttributes:
    """The ``attributes`` map of a lazy item: lookups read the view; a change decodes the item
    (but a new key is appended, and removing a missing key changes nothing)."""

    __slots__ = ("item",)

    def __init__(self, item: LazyItem) -> None:
        self.item = item

    def _full(self) -> PMap:
        return PMap(self.item.materialize().attributes)

    def get(self, key: str) -> Any:
        return self.item.get_attr(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.item.has_attr(key)

    def __len__(self) -> int:
        return len(self._full())

    def __iter__(self) -> Any:
        return iter(self.keys())

    def keys(self) -> list[str]:
        return self._full().keys()

    def items(self) -> list[tuple[str, Any]]:
        return self._full().items()

    def set(self, key: str, value: Any) -> None:
        self.item.set_attr(key, value)

    def value_slot(self, key: str) -> Any:
        return self._full().value_slot(key)

    def remove(self, key: str) -> bool:
        if not self.item.has_attr(key):
            return False
        return self._full().remove(key)

    def remove_if(self, predicate: Any) -> None:
        self._full().remove_if(predicate)

    def replace_all(self, items: list[tuple[str, Any]]) -> None:
        self._full().replace_all(items)

    def __eq__(self, other: object) -> bool:
        return self._full() == other

    __hash__ = None  # type: ignore[assignment]


@functools.cache
def shallow_class(signal: str) -> Any:
    """The request of ``signal`` with its items (spans, log records, metrics) kept as encoded
    bytes, like ``pipeline._wire``'s shallow views, but every occurrence of a resource or scope
    kept (``repeated bytes``): a request that writes ``resource`` twice means their merge (as a
    full parse reads it), and a rebuilt request must say the same."""
    group, scopes, items = {
        "traces": ("resource_spans", "scope_spans", "spans"),
        "logs": ("resource_logs", "scope_logs", "log_records"),
        "metrics": ("resource_metrics", "scope_metrics", "metrics"),
    }[signal]
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"pipeline_ottl_shallow_{signal}.proto",
        package="pipeline_ottl_shallow",
        syntax="proto3",
    )
    pkg = ".pipeline_ottl_shallow."
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    msg, byt = _F.TYPE_MESSAGE, _F.TYPE_BYTES
    specs: dict[str, list[tuple[str, int, int, int, str | None]]] = {
        "Request": [(group, 1, msg, rep, "Group")],
        "Group": [("resource", 1, byt, rep, None), (scopes, 2, msg, rep, "Scope"),
                  ("schema_url", 3, byt, opt, None)],
        "Scope": [("scope", 1, byt, rep, None), (items, 2, byt, rep, None),
                  ("schema_url", 3, byt, opt, None)],
    }  # fmt: skip
    for name, spec in specs.items():
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in spec:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = pkg + type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("pipeline_ottl_shallow.Request")
    )


def joined(occurrences: Any) -> bytes:
    """Every occurrence of a repeated-bytes message field as one encoding: concatenated
    encodings of one message type parse as their merge."""
    return occurrences[0] if len(occurrences) == 1 else b"".join(occurrences)


def replace_occurrences(occurrences: Any, encoded: bytes) -> None:
    del occurrences[:]
    occurrences.append(encoded)
