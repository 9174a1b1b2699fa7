"""What a receiver checks before it accepts an encoded OTLP request.

The gateway keeps requests encoded, so a request is checked once, at the edge, for everything a
later stage will need: every component that decodes it (``Payload.message()``, the C scanners
of the agent components, exporters' backends) must get a request protobuf parses. The check
refuses exactly what a full parse of ``Export{Trace,Metrics,Logs}ServiceRequest`` by
protobuf's C backend (upb) refuses, at every depth: invalid UTF-8 in a string field, truncated
tags, varints, lengths and fixed-width values, lengths past the end of their message, bad wire
types and field number 0, groups not closed (unknown groups are skipped, as upb skips them),
packed fixed-width data whose length is not a multiple of the element, nesting deeper than
protobuf's recursion limit (100). A known field with another wire type than its declaration's is
an unknown field, kept and not read, as upb treats it. On top of that it refuses OTLP ids of
the wrong length, which protobuf lets through: a span's ``trace_id`` must hold 16 bytes and its
``span_id`` 8 (the specification makes both required), ``parent_span_id`` 8 or none, a link's
ids 16 and 8, an exemplar's and a log record's 16 / 8 or none. The rule applies to the decoded
request: the last of repeated occurrences of an id counts, and the members of a ``oneof`` that
a later member replaced (a metric's ``gauge`` followed by its ``sum``) are not checked for ids.
It also counts the items (spans, metric data points, log records) as a full parse would see
them.

Two implementations give the same verdicts and counts:

* the C walk of ``plugins/_native/_otlpvalid.c``, used when it was built: it walks the request
  once, with the message tables generated from this module (:func:`c_header`), creating no
  object; about 1,000 instructions (0.1 µs) per span of 8 attributes;
* the pure-Python twin, used without it (or with ``PIPELINE_NATIVE=0``): protobuf's full parse,
  the id lengths read from the decoded message, and, only when the parse fails, a walk in Python
  (:class:`_Walk`, the C walk's rules line for line) to say which field is wrong.

A refusal is a ``ValueError`` whose message names the field, e.g.
``resource_spans[0].resource.attributes[2].value.string_value: invalid UTF-8``.

One difference from the installed protobuf, on purpose: a field number 0 inside an unknown group
is refused (as newer upb releases refuse it; the older ones skip it), so that no protobuf in the
supported range refuses what the gateway accepted.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from pipeline._pbwire import varint_reader

MAX_DEPTH = 100  # upb's default recursion limit, which protobuf for Python uses

# wire-level kinds of the fields
VARINT, FIXED64, FIXED32, STRING, BYTES, MESSAGE = range(6)
_KINDS = {
    FieldDescriptor.TYPE_DOUBLE: FIXED64,
    FieldDescriptor.TYPE_FIXED64: FIXED64,
    FieldDescriptor.TYPE_SFIXED64: FIXED64,
    FieldDescriptor.TYPE_FLOAT: FIXED32,
    FieldDescriptor.TYPE_FIXED32: FIXED32,
    FieldDescriptor.TYPE_SFIXED32: FIXED32,
    FieldDescriptor.TYPE_INT64: VARINT,
    FieldDescriptor.TYPE_UINT64: VARINT,
    FieldDescriptor.TYPE_INT32: VARINT,
    FieldDescriptor.TYPE_UINT32: VARINT,
    FieldDescriptor.TYPE_SINT32: VARINT,
    FieldDescriptor.TYPE_SINT64: VARINT,
    FieldDescriptor.TYPE_BOOL: VARINT,
    FieldDescriptor.TYPE_ENUM: VARINT,
    FieldDescriptor.TYPE_STRING: STRING,  # proto3: UTF-8 checked by upb
    FieldDescriptor.TYPE_BYTES: BYTES,
    FieldDescriptor.TYPE_MESSAGE: MESSAGE,
}
_KIND_NAMES = ("K_VARINT", "K_FIXED64", "K_FIXED32", "K_STRING", "K_BYTES", "K_MESSAGE")

KINDS = ("traces", "metrics", "logs")  # the C module has one entry point per kind


@functools.cache
def requests() -> dict[str, Any]:
    """The request class of each kind (imported on first use: with the C module built, a
    gateway needs neither them nor the tables below)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    return {
        "traces": ExportTraceServiceRequest,
        "metrics": ExportMetricsServiceRequest,
        "logs": ExportLogsServiceRequest,
    }


# OTLP ids: message -> field -> (length in bytes, may be empty)
ID_RULES: dict[str, dict[str, tuple[int, bool]]] = {
    "opentelemetry.proto.trace.v1.Span": {
        "trace_id": (16, False),
        "span_id": (8, False),
        "parent_span_id": (8, True),
    },
    "opentelemetry.proto.trace.v1.Span.Link": {"trace_id": (16, False), "span_id": (8, False)},
    "opentelemetry.proto.metrics.v1.Exemplar": {"trace_id": (16, True), "span_id": (8, True)},
    "opentelemetry.proto.logs.v1.LogRecord": {"trace_id": (16, True), "span_id": (8, True)},
}
# the fields whose every element is one item of the request
COUNTED = {
    ("opentelemetry.proto.trace.v1.ScopeSpans", "spans"),
    ("opentelemetry.proto.metrics.v1.Gauge", "data_points"),
    ("opentelemetry.proto.metrics.v1.Sum", "data_points"),
    ("opentelemetry.proto.metrics.v1.Histogram", "data_points"),
    ("opentelemetry.proto.metrics.v1.ExponentialHistogram", "data_points"),
    ("opentelemetry.proto.metrics.v1.Summary", "data_points"),
    ("opentelemetry.proto.logs.v1.ScopeLogs", "log_records"),
}


@dataclass(eq=False)
class Field:
    """One field of a message table."""

    name: str
    number: int
    kind: int
    repeated: bool
    sub: Message | None = None
    counted: bool = False  # each element is an item
    id_len: int = 0  # an OTLP id of this length (0: not an id)
    id_optional: bool = False  # the id may be empty
    id_slot: int = -1
    oneof: bool = False  # a member of the message's tracked oneof (see Message.oneof)


@dataclass(eq=False)
class Message:
    """The table of one message type: its fields by number."""

    full_name: str
    fields: dict[int, Field] = field(default_factory=dict)
    ids: list[Field] = field(default_factory=list)
    # the name of the one oneof whose members hold items or ids: only its last member counts
    # (a member replaced by another is dropped by a full parse), "" if none
    oneof: str = ""
    has_ids: bool = False  # ids in this message or below
    has_items: bool = False  # counted fields in this message or below

    @property
    def name(self) -> str:
        return self.full_name.rsplit(".", 1)[-1]

    @property
    def c_name(self) -> str:
        return self.full_name.removeprefix("opentelemetry.proto.").replace(".", "_")


@functools.cache
def tables() -> dict[str, Message]:
    """The message tables, built from the generated OTLP descriptors; roots by request kind."""
    messages: dict[str, Message] = {}
    descriptors: dict[str, Descriptor] = {}

    def build(desc: Descriptor) -> Message:
        found = messages.get(desc.full_name)
        if found is not None:
            return found
        m = messages[desc.full_name] = Message(desc.full_name)
        descriptors[desc.full_name] = desc
        rules = ID_RULES.get(desc.full_name, {})
        for fd in desc.fields:
            if fd.type not in _KINDS:
                raise TypeError(f"{fd.full_name}: field type {fd.type} is not supported")
            f = Field(
                fd.name,
                fd.number,
                _KINDS[fd.type],
                fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED,
                counted=(desc.full_name, fd.name) in COUNTED,
            )
            if fd.name in rules:
                if f.kind != BYTES or f.repeated:
                    raise TypeError(f"{fd.full_name}: an id must be a singular bytes field")
                f.id_len, f.id_optional = rules[fd.name]
                f.id_slot = len(m.ids)
                m.ids.append(f)
            m.fields[fd.number] = f
        for fd in desc.fields:
            if fd.message_type is not None:
                m.fields[fd.number].sub = build(fd.message_type)
        return m

    roots = {name: build(cls.DESCRIPTOR) for name, cls in requests().items()}
    # what holds items or ids, down the tree (recursive messages converge: iterate)
    changed = True
    while changed:
        changed = False
        for m in messages.values():
            ids = bool(m.ids) or any(f.sub is not None and f.sub.has_ids for f in m.fields.values())
            items = any(
                f.counted or (f.sub is not None and f.sub.has_items) for f in m.fields.values()
            )
            if (ids, items) != (m.has_ids, m.has_items):
                m.has_ids, m.has_items, changed = ids, items, True
    for desc_name, m in messages.items():
        desc = descriptors[desc_name]
        tracked = set()
        for fd in desc.fields:
            o = fd.containing_oneof
            sub = m.fields[fd.number].sub
            if o is None or sub is None or not (sub.has_ids or sub.has_items):
                continue
            tracked.add(o.name)
            m.fields[fd.number].oneof = True
        if len(tracked) > 1:
            raise TypeError(f"{desc_name}: more than one oneof holds items or ids")
        m.oneof = tracked.pop() if tracked else ""
        if m.oneof and m.ids:
            raise TypeError(f"{desc_name}: ids beside a oneof holding ids are not supported")
    return roots


def all_messages() -> list[Message]:
    """Every message table, in a stable order (depth first from the roots, as declared)."""
    seen: dict[str, Message] = {}

    def visit(m: Message) -> None:
        if m.full_name in seen:
            return
        seen[m.full_name] = m
        for f in m.fields.values():
            if f.sub is not None:
                visit(f.sub)

    for root in tables().values():
        visit(root)
    return list(seen.values())


# -- the walk, in Python (the C walk's rules line for line) ---------------------------------------
class Invalid(ValueError):
    """A request the gateway refuses; the message names the field."""


class _Reason(Exception):
    """Why a varint is invalid (the readers' error, turned into :class:`Invalid` with the
    place it is at)."""


# pbwire.h's varint reader (pipeline/_pbwire.py) with upb's bounds: tags and lengths of at most
# 5 bytes, values of at most 10
_tag = varint_reader(_Reason, max_bytes=5, truncated="truncated tag", overlong="invalid tag")
_length = varint_reader(
    _Reason, max_bytes=5, truncated="truncated length", overlong="invalid length"
)
_varint = varint_reader(
    _Reason, truncated="truncated varint", overlong="varint longer than 10 bytes"
)


class _Frame:
    """A message being walked: how its parent reached it, for the path in an error."""

    __slots__ = ("field", "parent", "start", "tag")

    def __init__(self, parent: _Frame | None, fld: Field | None, start: int, tag: int) -> None:
        self.parent = parent  # the parent message's frame
        self.field = fld  # the parent's field holding this message
        self.start = start  # where the parent message's bytes begin
        self.tag = tag  # where this message's tag stands in the parent


def _abbreviate(components: list[str]) -> str:
    if len(components) > 16:
        components = [*components[:6], f"<{len(components) - 12} more>", *components[-6:]]
    return ".".join(components)


class _Walk:
    """One walk over an encoded request: :meth:`message` raises :class:`Invalid` at the first
    thing a full parse refuses; the first id of the wrong length is kept in ``id_error`` and
    raised by :func:`walk` once the whole request parsed."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.id_error: str | None = None

    # -- errors ------------------------------------------------------------------------------
    def _index(self, start: int, tag_at: int, number: int) -> int:
        """How many elements of field ``number`` stand in a message's bytes before ``tag_at``
        (the bytes from ``start`` were walked already: they are well formed)."""
        p, n = start, 0
        while p < tag_at:
            tag, p = self._varint(p)
            wire = tag & 7
            if tag >> 3 == number and wire == 2:
                n += 1
            p = self._skip_known_good(p, tag, wire)
        return n

    def _skip_known_good(self, p: int, tag: int, wire: int) -> int:
        if wire == 0:
            return self._varint(p)[1]
        if wire == 1:
            return p + 8
        if wire == 5:
            return p + 4
        if wire == 2:
            n, p = self._varint(p)
            return p + n
        # a group (the end tag included)
        end_tag = (tag & ~7) | 4
        while True:
            inner, p = self._varint(p)
            if inner == end_tag:
                return p
            p = self._skip_known_good(p, inner, inner & 7)

    def _varint(self, p: int) -> tuple[int, int]:
        return _varint(self.data, p, len(self.data))  # (walked already: well formed)

    def _components(self, frame: _Frame | None) -> list[str]:
        out: list[str] = []
        while frame is not None and frame.field is not None:
            f = frame.field
            parent = frame.parent
            assert parent is not None
            name = f.name
            if f.repeated:  # a message
                name += f"[{self._index(frame.start, frame.tag, f.number)}]"
            out.append(name)
            frame = parent
        out.reverse()
        return out

    def where(
        self, frame: _Frame, fld: Field | None = None, start: int = 0, tag_at: int = -1
    ) -> str:
        """The path of ``frame``'s message, or of its field ``fld`` (whose tag is at
        ``tag_at`` in the message's bytes beginning at ``start``; -1: no index)."""
        components = self._components(frame)
        if fld is not None:
            name = fld.name
            if fld.repeated and fld.kind >= STRING and tag_at >= 0:  # not a packed scalar
                name += f"[{self._index(start, tag_at, fld.number)}]"
            components.append(name)
        return _abbreviate(components)

    @staticmethod
    def _message(where: str, detail: str) -> str:
        return f"{where}: {detail}" if where else detail

    def fail(self, frame: _Frame, detail: str) -> Invalid:
        return Invalid(self._message(self.where(frame), detail))

    def fail_field(
        self, frame: _Frame, fld: Field, start: int, tag_at: int, detail: str
    ) -> Invalid:
        return Invalid(self._message(self.where(frame, fld, start, tag_at), detail))

    # -- reading -----------------------------------------------------------------------------
    def read_tag(self, p: int, end: int, frame: _Frame) -> tuple[int, int]:
        """A tag (at most 5 bytes and 32 bits)."""
        try:
            v, p = _tag(self.data, p, end)
        except _Reason as exc:
            raise self.fail(frame, str(exc)) from None
        if v > 0xFFFFFFFF:
            raise self.fail(frame, "invalid tag")
        return v, p

    def read_varint(self, p: int, end: int) -> tuple[int, int] | str:
        """A varint value (up to 10 bytes, the extra bits of the tenth ignored, as upb does),
        or the reason it is invalid."""
        try:
            return _varint(self.data, p, end)
        except _Reason as exc:
            return str(exc)

    def read_length(self, p: int, end: int) -> tuple[int, int] | str:
        """A length (at most 5 bytes and 2^31 - 1), or the reason it is invalid."""
        try:
            v, p = _length(self.data, p, end)
        except _Reason as exc:
            return str(exc)
        if v > 0x7FFFFFFF:
            return "invalid length"
        if v > end - p:
            return "length past the end"
        return v, p

    def skip_group(self, p: int, end: int, number: int, budget: int, frame: _Frame) -> int:
        """Past an unknown group's end tag; errors name the outermost group's field."""
        budget -= 1
        if budget < 0:
            raise self.fail(frame, f"field {number}: nesting deeper than {MAX_DEPTH} levels")
        return self._group_body(p, end, number, number, budget, frame)

    def _group_body(
        self, p: int, end: int, number: int, outer: int, budget: int, frame: _Frame
    ) -> int:
        end_tag = number << 3 | 4
        while p < end:
            tag, p = self.read_tag(p, end, frame)
            if tag == end_tag:
                return p
            n, wire = tag >> 3, tag & 7
            if n == 0:
                raise self.fail(frame, f"field {outer}: field number 0")
            if wire == 0:
                r = self.read_varint(p, end)
                if isinstance(r, str):
                    raise self.fail(frame, f"field {outer}: {r}")
                p = r[1]
            elif wire == 1:
                if end - p < 8:
                    raise self.fail(frame, f"field {outer}: truncated fixed64")
                p += 8
            elif wire == 5:
                if end - p < 4:
                    raise self.fail(frame, f"field {outer}: truncated fixed32")
                p += 4
            elif wire == 2:
                ln = self.read_length(p, end)
                if isinstance(ln, str):
                    raise self.fail(frame, f"field {outer}: {ln}")
                p = ln[1] + ln[0]
            elif wire == 3:
                if budget - 1 < 0:
                    raise self.fail(frame, f"field {outer}: nesting deeper than {MAX_DEPTH} levels")
                p = self._group_body(p, end, n, outer, budget - 1, frame)
            elif wire == 4:
                raise self.fail(frame, f"field {outer}: mismatched end-group tag")
            else:
                raise self.fail(frame, f"field {outer}: invalid wire type {wire}")
        raise self.fail(frame, f"field {outer}: group not closed")

    # -- messages ----------------------------------------------------------------------------
    def message(self, m: Message, start: int, end: int, budget: int, frame: _Frame) -> int:
        """Walk one message's bytes; returns its items."""
        data = self.data
        ids = [0] * len(m.ids)
        items = 0
        member = 0  # the tracked oneof's current member (field number), its items, and
        member_items = 0  # whether an id error was already kept when it began
        member_mark = False
        p = start
        while p < end:
            tag_at = p
            tag, p = self.read_tag(p, end, frame)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise self.fail(frame, "field number 0")
            f = m.fields.get(number)
            if wire == 0:
                r = self.read_varint(p, end)
                if isinstance(r, str):
                    if f is not None and f.kind == VARINT:
                        raise self.fail_field(frame, f, start, tag_at, r)
                    raise self.fail(frame, f"field {number}: {r}")
                p = r[1]
            elif wire == 1:
                if end - p < 8:
                    if f is not None and f.kind == FIXED64:
                        raise self.fail_field(frame, f, start, tag_at, "truncated fixed64")
                    raise self.fail(frame, f"field {number}: truncated fixed64")
                p += 8
            elif wire == 5:
                if end - p < 4:
                    if f is not None and f.kind == FIXED32:
                        raise self.fail_field(frame, f, start, tag_at, "truncated fixed32")
                    raise self.fail(frame, f"field {number}: truncated fixed32")
                p += 4
            elif wire == 2:
                ln = self.read_length(p, end)
                known = f is not None and (f.kind >= STRING or f.repeated)
                if isinstance(ln, str):
                    if known:
                        assert f is not None
                        raise self.fail_field(frame, f, start, tag_at, ln)
                    raise self.fail(frame, f"field {number}: {ln}")
                n, p = ln
                if known:
                    assert f is not None
                    value_end = p + n
                    if f.kind == STRING:
                        try:
                            data[p:value_end].decode("utf-8")
                        except UnicodeDecodeError:
                            raise self.fail_field(
                                frame, f, start, tag_at, "invalid UTF-8"
                            ) from None
                    elif f.kind == BYTES:
                        if f.id_slot >= 0:
                            ids[f.id_slot] = n
                    elif f.kind == MESSAGE:
                        assert f.sub is not None
                        if budget - 1 < 0:
                            raise self.fail_field(
                                frame, f, start, tag_at, f"nesting deeper than {MAX_DEPTH} levels"
                            )
                        child = _Frame(frame, f, start, tag_at)
                        if f.oneof and number != member:
                            # another member replaces the current one: what the replaced
                            # one held is dropped by a full parse (its items, its ids)
                            if member and not member_mark:
                                self.id_error = None
                            member, member_items = number, 0
                            member_mark = self.id_error is not None
                        got = self.message(f.sub, p, value_end, budget - 1, child)
                        if f.counted:
                            got += 1
                        if f.oneof:
                            member_items += got
                        else:
                            items += got
                    elif f.kind == VARINT:  # packed
                        q = p
                        while q < value_end:
                            r = self.read_varint(q, value_end)
                            if isinstance(r, str):
                                raise self.fail_field(frame, f, start, tag_at, r)
                            q = r[1]
                    else:
                        size = 8 if f.kind == FIXED64 else 4
                        if n % size:
                            raise self.fail_field(
                                frame, f, start, tag_at, f"packed length not a multiple of {size}"
                            )
                    p = value_end
                else:
                    p += n
            elif wire == 3:
                p = self.skip_group(p, end, number, budget, frame)
            elif wire == 4:
                raise self.fail(frame, "end-group tag without a group")
            else:
                raise self.fail(frame, f"invalid wire type {wire}")
        if ids and self.id_error is None:
            for f in m.ids:
                n = ids[f.id_slot]
                if n != f.id_len and not (n == 0 and f.id_optional):
                    self.id_error = self._message(self.where(frame, f), _id_detail(n, f))
                    break
        return items + member_items


def _id_detail(n: int, f: Field) -> str:
    return f"{n} bytes, expected {f.id_len}" + (" (or none)" if f.id_optional else "")


def walk(kind: str, data: bytes) -> int:
    """The Python walk of a request of ``kind`` (``traces``, ``metrics``, ``logs``): the item
    count, or :class:`Invalid`. Gives what the C walk gives (messages included); used by the
    twin only to name the field when protobuf refused a request, and by the tests."""
    w = _Walk(bytes(data))
    count = w.message(tables()[kind], 0, len(w.data), MAX_DEPTH, _Frame(None, None, 0, 0))
    if w.id_error is not None:
        raise Invalid(w.id_error)
    return count


# -- the twin: protobuf's full parse, the ids read from the decoded request ------------------------
def _check_ids(obj: Any, m: Message, path: list[str]) -> str | None:
    """The first id of the wrong length, in the order the C walk finds them (a message's ids
    once its fields were walked), or None."""
    which = obj.WhichOneof(m.oneof) if m.oneof else None
    for f in m.fields.values():
        sub = f.sub
        if sub is None or not sub.has_ids or (f.oneof and f.name != which):
            continue
        if f.repeated:
            for i, child in enumerate(getattr(obj, f.name)):
                path.append(f"{f.name}[{i}]")
                found = _check_ids(child, sub, path)
                if found is not None:
                    return found
                path.pop()
        elif obj.HasField(f.name):
            path.append(f.name)
            found = _check_ids(getattr(obj, f.name), sub, path)
            if found is not None:
                return found
            path.pop()
    for f in m.ids:
        n = len(getattr(obj, f.name))
        if n != f.id_len and not (n == 0 and f.id_optional):
            return f"{_abbreviate([*path, f.name])}: {_id_detail(n, f)}"
    return None


def _count(obj: Any, m: Message) -> int:
    which = obj.WhichOneof(m.oneof) if m.oneof else None
    total = 0
    for f in m.fields.values():
        sub = f.sub
        if sub is None or not (f.counted or sub.has_items) or (f.oneof and f.name != which):
            continue
        if f.repeated:
            children = getattr(obj, f.name)
            if f.counted:
                total += len(children)
            if sub.has_items:
                total += sum(_count(c, sub) for c in children)
        elif obj.HasField(f.name):
            total += _count(getattr(obj, f.name), sub) + (1 if f.counted else 0)
    return total


def check_python(kind: str, data: bytes) -> int:
    """The pure-Python twin of the C walk: the same verdicts, counts and (but for the paths of
    ids in merged messages) messages."""
    try:
        request = requests()[kind].FromString(data)
    except DecodeError as exc:
        try:
            walk(kind, data)
        except Invalid as invalid:
            raise Invalid(str(invalid)) from exc
        raise Invalid(f"the protobuf wire format is corrupt ({exc})") from exc
    except RecursionError as exc:  # pragma: no cover - upb stops at its own depth limit
        raise Invalid(f"nesting deeper than {MAX_DEPTH} levels") from exc
    m = tables()[kind]
    if m.has_ids:
        found = _check_ids(request, m, [])
        if found is not None:
            raise Invalid(found)
    return _count(request, m)


# -- which implementation ------------------------------------------------------------------------
_native_flag: object = "unset"
_native: Any = None

# PIPELINE_NATIVE is read on every check (once per request received), so that setting it takes
# effect at once. os.environ.get of an unset name raises and catches a KeyError inside
# (~2 µs, half of a check's Python cost); the mapping behind os.environ (its _data, keyed by
# encoded names: what setenv and monkeypatch change) answers the same without an exception.
_ENV_DATA: Any = getattr(os.environ, "_data", None)
_ENV_KEY: Any = (
    os.environ.encodekey("PIPELINE_NATIVE") if _ENV_DATA is not None else "PIPELINE_NATIVE"
)


def _native_setting() -> object:
    """``PIPELINE_NATIVE`` as set now (encoded as the environment keeps it), or None."""
    if _ENV_DATA is not None:
        return _ENV_DATA.get(_ENV_KEY)
    return os.environ.get(_ENV_KEY)


def native() -> Any:
    """The C module (``plugins._native._otlpvalid``), or None when it was not built or
    ``PIPELINE_NATIVE=0`` is set (read again when it changes)."""
    global _native_flag, _native
    flag = _native_setting()
    if flag != _native_flag:
        from plugins._native import load

        _native = load("_otlpvalid")
        _native_flag = flag
    return _native


_ENTRY_POINTS = {
    "traces": "validate_traces",
    "metrics": "validate_metrics",
    "logs": "validate_logs",
}


def checker(kind: str) -> Callable[[bytes], int]:
    """The check of a request of ``kind``: the C entry point when it is available, else the
    twin. Both raise ``ValueError`` naming the field."""
    mod = native()
    if mod is not None:
        # a constant name: one built per call (f"validate_{kind}") stays in CPython's type
        # attribute cache, which the fuzz corpus's leak check counts
        fn: Callable[[bytes], int] = getattr(mod, _ENTRY_POINTS[kind])
        return fn
    return lambda data: check_python(kind, data)


def check(kind: str, data: bytes) -> int:
    """The item count of a valid request of ``kind``; ``ValueError`` naming the field else."""
    return checker(kind)(data)


# -- the C tables ------------------------------------------------------------------------------
def c_header() -> str:
    """``plugins/_native/_otlpvalid_tables.h``: the tables above, for the C walk."""
    from importlib.metadata import version

    msgs = all_messages()
    out = [
        "/* The message tables of the C walk (_otlpvalid.c). Generated from the OTLP descriptors",
        f" * of opentelemetry-proto {version('opentelemetry-proto')} by",
        " * `python -m pipeline._otlpvalid > plugins/_native/_otlpvalid_tables.h`: do not edit",
        " * (tests/plugins/_native/test_otlpvalid.py checks it is current). */",
        "",
    ]
    out += [f"static const pbmsg M_{m.c_name};" for m in msgs]
    out.append("")
    for m in msgs:
        fields = sorted(m.fields.values(), key=lambda f: f.number)
        out.append(f"static const pbfield F_{m.c_name}[] = {{")
        for f in fields:
            flags = [
                flag
                for flag, on in (
                    ("PF_REPEATED", f.repeated),
                    ("PF_COUNTED", f.counted),
                    ("PF_ID_OPTIONAL", f.id_optional),
                    ("PF_ONEOF", f.oneof),
                )
                if on
            ]
            sub = f"&M_{f.sub.c_name}" if f.sub is not None else "NULL"
            out.append(
                f'    {{"{f.name}", {f.number}, {_KIND_NAMES[f.kind]}, '
                f"{' | '.join(flags) or '0'}, {f.id_len}, {f.id_slot}, {sub}}},"
            )
        out.append("};")
        top = max(m.fields)
        index = [-1] * (top + 1)
        for i, f in enumerate(fields):
            index[f.number] = i
        out.append(
            f"static const int8_t N_{m.c_name}[{top + 1}] = {{{', '.join(map(str, index))}}};"
        )
        ids = "NULL"
        if m.ids:
            ids = f"I_{m.c_name}"
            slots = ", ".join(str(index[f.number]) for f in m.ids)
            out.append(f"static const int8_t I_{m.c_name}[{len(m.ids)}] = {{{slots}}};")
        out.append(
            f'static const pbmsg M_{m.c_name} = {{"{m.name}", {top}, N_{m.c_name}, '
            f"F_{m.c_name}, {len(fields)}, {len(m.ids)}, {ids}}};"
        )
        out.append("")
    for kind, root in tables().items():
        out.append(f"#define ROOT_{kind.upper()} (&M_{root.c_name})")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(c_header())
