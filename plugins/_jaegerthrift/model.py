"""The Jaeger Thrift IDL (``jaeger.thrift``, ``agent.thrift``) as Python structs for the
``thrift`` library's protocols.

The field ids and types are those of the public IDL (jaegertracing/jaeger-idl). Each struct
carries a ``thrift_spec`` tuple; reading and writing go through the C-accelerated protocols
(``TBinaryProtocolAccelerated`` / ``TCompactProtocolAccelerated``, the ``fastbinary`` module)
when the library was built with them, and through the pure-Python protocols otherwise.

Two framings are used on the wire:

* the collector's HTTP endpoint (``POST /api/traces``) takes one binary-encoded ``Batch``;
* the agent's UDP ports take one Thrift message per datagram: ``emitBatch`` (a oneway call of
  the ``Agent`` service) whose argument struct holds the ``Batch``; compact protocol on 6831,
  binary protocol on 6832.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, ClassVar, Literal

from thrift.protocol.TBase import TFrozenBase
from thrift.protocol.TBinaryProtocol import TBinaryProtocol, TBinaryProtocolAccelerated
from thrift.protocol.TCompactProtocol import TCompactProtocol, TCompactProtocolAccelerated
from thrift.Thrift import TMessageType, TType
from thrift.transport.TTransport import CReadableTransport, TMemoryBuffer

from plugins._jaegerthrift import DEFAULT_MAX_BATCH_ITEMS

try:  # the C extension is optional in the thrift package
    from thrift.protocol import fastbinary  # noqa: F401

    ACCELERATED = True
except ImportError:  # pragma: no cover - depends on how thrift was built
    ACCELERATED = False

Protocol = Literal["binary", "compact"]


class TagType:
    """``enum TagType``."""

    STRING = 0
    DOUBLE = 1
    BOOL = 2
    LONG = 3
    BINARY = 4


class SpanRefType:
    """``enum SpanRefType``."""

    CHILD_OF = 0
    FOLLOWS_FROM = 1


class ThriftStruct:
    """Base of the IDL structs: keyword construction, equality, and reading/writing through a
    Thrift protocol (accelerated when the protocol offers it)."""

    __slots__: ClassVar[tuple[str, ...]] = ()
    thrift_spec: ClassVar[tuple[Any, ...]] = ()
    _model: ClassVar[type[ThriftStruct]]
    """The IDL struct a class stands for (decoding classes stand for their base)."""

    def __init_subclass__(cls, decoding: bool = False) -> None:
        super().__init_subclass__()
        if decoding:  # brings its own checking constructor (see _decoding_class)
            return
        cls._model = cls
        # A keyword-only __init__ made for the class: the translator and the decoder build
        # one struct per span, tag and log, and a generic loop over the fields costs twice
        # as much.
        params = ", ".join(f"{n}=None" for n in cls.__slots__)
        body = "".join(f"\n    self.{n} = {n}" for n in cls.__slots__) or "\n    pass"
        namespace: dict[str, Any] = {}
        exec(f"def __init__(self, *, {params}):{body}", namespace)
        cls.__init__ = namespace["__init__"]  # type: ignore[method-assign]

    def __init__(self, **fields: Any) -> None:  # replaced in every subclass
        raise TypeError("ThriftStruct is abstract")

    def read(self, iprot: Any) -> None:
        if iprot._fast_decode is not None and isinstance(iprot.trans, CReadableTransport):
            iprot._fast_decode(self, iprot, [self.__class__, self.thrift_spec])
        else:
            iprot.readStruct(self, self.thrift_spec)

    def write(self, oprot: Any) -> None:
        if oprot._fast_encode is not None:
            oprot.trans.write(oprot._fast_encode(self, [self.__class__, self.thrift_spec]))
        else:
            oprot.writeStruct(self, self.thrift_spec)

    def __eq__(self, other: object) -> bool:
        model = self._model
        return getattr(other, "_model", None) is model and all(
            getattr(self, n) == getattr(other, n) for n in model.__slots__
        )

    def __repr__(self) -> str:
        model = self._model
        fields = ", ".join(
            f"{n}={getattr(self, n)!r}" for n in model.__slots__ if getattr(self, n) is not None
        )
        return f"{model.__name__}({fields})"

    __hash__ = None  # type: ignore[assignment]


def _struct(cls: type[ThriftStruct]) -> list[Any]:
    return [cls, cls.thrift_spec]


def _list_of(cls: type[ThriftStruct]) -> tuple[Any, ...]:
    return (TType.STRUCT, _struct(cls), False)


class Tag(ThriftStruct):
    """``struct Tag``: a typed key/value; the field matching ``vType`` holds the value."""

    __slots__ = ("key", "vBinary", "vBool", "vDouble", "vLong", "vStr", "vType")
    key: str
    vType: int
    vStr: str | None
    vDouble: float | None
    vBool: bool | None
    vLong: int | None
    vBinary: bytes | None


Tag.thrift_spec = (
    None,
    (1, TType.STRING, "key", "UTF8", None),
    (2, TType.I32, "vType", None, None),
    (3, TType.STRING, "vStr", "UTF8", None),
    (4, TType.DOUBLE, "vDouble", None, None),
    (5, TType.BOOL, "vBool", None, None),
    (6, TType.I64, "vLong", None, None),
    (7, TType.STRING, "vBinary", "BINARY", None),
)


class Log(ThriftStruct):
    """``struct Log``: a timestamp (microseconds since the epoch) and fields."""

    __slots__ = ("fields", "timestamp")
    timestamp: int
    fields: list[Tag] | None


Log.thrift_spec = (
    None,
    (1, TType.I64, "timestamp", None, None),
    (2, TType.LIST, "fields", _list_of(Tag), None),
)


class SpanRef(ThriftStruct):
    """``struct SpanRef``: a CHILD_OF or FOLLOWS_FROM reference to another span."""

    __slots__ = ("refType", "spanId", "traceIdHigh", "traceIdLow")
    refType: int
    traceIdLow: int
    traceIdHigh: int
    spanId: int


SpanRef.thrift_spec = (
    None,
    (1, TType.I32, "refType", None, None),
    (2, TType.I64, "traceIdLow", None, None),
    (3, TType.I64, "traceIdHigh", None, None),
    (4, TType.I64, "spanId", None, None),
)


class Span(ThriftStruct):
    """``struct Span``; ids are signed 64-bit integers, times are microseconds."""

    __slots__ = (
        "duration",
        "flags",
        "incomplete",
        "logs",
        "operationName",
        "parentSpanId",
        "references",
        "spanId",
        "startTime",
        "tags",
        "traceIdHigh",
        "traceIdLow",
    )
    traceIdLow: int
    traceIdHigh: int
    spanId: int
    parentSpanId: int
    operationName: str
    references: list[SpanRef] | None
    flags: int
    startTime: int
    duration: int
    tags: list[Tag] | None
    logs: list[Log] | None
    incomplete: bool | None


Span.thrift_spec = (
    None,
    (1, TType.I64, "traceIdLow", None, None),
    (2, TType.I64, "traceIdHigh", None, None),
    (3, TType.I64, "spanId", None, None),
    (4, TType.I64, "parentSpanId", None, None),
    (5, TType.STRING, "operationName", "UTF8", None),
    (6, TType.LIST, "references", _list_of(SpanRef), None),
    (7, TType.I32, "flags", None, None),
    (8, TType.I64, "startTime", None, None),
    (9, TType.I64, "duration", None, None),
    (10, TType.LIST, "tags", _list_of(Tag), None),
    (11, TType.LIST, "logs", _list_of(Log), None),
    (12, TType.BOOL, "incomplete", None, None),
)


class Process(ThriftStruct):
    """``struct Process``: the service name and the process tags."""

    __slots__ = ("serviceName", "tags")
    serviceName: str
    tags: list[Tag] | None


Process.thrift_spec = (
    None,
    (1, TType.STRING, "serviceName", "UTF8", None),
    (2, TType.LIST, "tags", _list_of(Tag), None),
)


class ClientStats(ThriftStruct):
    """``struct ClientStats`` (newer clients send it with their batches)."""

    __slots__ = ("failedToEmitSpans", "fullQueueDroppedSpans", "tooLargeDroppedSpans")


ClientStats.thrift_spec = (
    None,
    (1, TType.I64, "fullQueueDroppedSpans", None, None),
    (2, TType.I64, "tooLargeDroppedSpans", None, None),
    (3, TType.I64, "failedToEmitSpans", None, None),
)


class Batch(ThriftStruct):
    """``struct Batch``: one process and its spans."""

    __slots__ = ("process", "seqNo", "spans", "stats")
    process: Process | None
    spans: list[Span] | None
    seqNo: int | None
    stats: ClientStats | None


Batch.thrift_spec = (
    None,
    (1, TType.STRUCT, "process", _struct(Process), None),
    (2, TType.LIST, "spans", _list_of(Span), None),
    (3, TType.I64, "seqNo", None, None),
    (4, TType.STRUCT, "stats", _struct(ClientStats), None),
)


class EmitBatchArgs(ThriftStruct):
    """The argument struct of ``Agent.emitBatch(1: jaeger.Batch batch)``."""

    __slots__ = ("batch",)
    batch: Batch | None


EmitBatchArgs.thrift_spec = (None, (1, TType.STRUCT, "batch", _struct(Batch), None))

EMIT_BATCH = "emitBatch"


class ThriftDecodeError(ValueError):
    """Bytes that are not a valid Jaeger Thrift message; the text says what is wrong. The one
    exception the decoders (:func:`decode_batch`, :func:`decode_emit_batch`) raise for bad
    input, whatever it is."""


class ThriftBudgetError(ThriftDecodeError):
    """A message that holds more items (structs) than the decode budget allows: refused
    before more of it is decoded, whether or not the rest is valid."""


DEFAULT_MAX_ITEMS = DEFAULT_MAX_BATCH_ITEMS


# -- protocols --------------------------------------------------------------------------------
class _PyBinaryProtocol(TBinaryProtocol):
    """The pure-Python binary protocol, reading strings as the C decoder does: invalid UTF-8
    is replaced (U+FFFD), not refused."""

    def readString(self) -> str:
        return bytes(self.readBinary()).decode("utf-8", "replace")


class _PyCompactProtocol(TCompactProtocol):
    """The pure-Python compact protocol, reading strings as the C decoder does."""

    def readString(self) -> str:
        return bytes(self.readBinary()).decode("utf-8", "replace")


def _protocol(kind: Protocol, trans: Any, limit: int | None = None) -> Any:
    kw: dict[str, Any] = {}
    if limit is not None:
        # No string or list can be longer than the input: refuse lying length prefixes before
        # they turn into huge allocations.
        kw = {"string_length_limit": limit, "container_length_limit": limit}
    if kind == "binary":
        cls: Any = TBinaryProtocolAccelerated if ACCELERATED else _PyBinaryProtocol
        return cls(trans, **kw)
    cls = TCompactProtocolAccelerated if ACCELERATED else _PyCompactProtocol
    return cls(trans, **kw)


def encode_struct(obj: ThriftStruct, kind: Protocol = "binary") -> bytes:
    """One struct in the given protocol."""
    buf = TMemoryBuffer()
    obj.write(_protocol(kind, buf))
    return bytes(buf.getvalue())


# -- decoding: every struct checked and counted as it is built ----------------------------------
#
# Thrift's decoders build a struct once its fields are read. The decoding classes below are
# "frozen" for the thrift library (subclasses of TFrozenBase): it hands them their fields as
# keyword arguments, so their constructor sees a whole struct and can refuse it on the spot.
# A list header claiming 10^8 elements of empty structs then costs one struct, not 10^8: the
# first element lacks its required fields. Every struct that passes takes one item from the
# budget of the message being decoded, so a message of valid but tiny structs (a tag is 5
# bytes in the compact protocol) is refused once it holds more than the budget, before the
# rest is built. Strings and lists cannot be longer than the input (the protocols' length
# limits), and thrift >= 0.25 bounds the nesting (64) and sizes lists by the bytes left.


class _Budget:
    """One decode: the items it may still build, and the spans built so far."""

    __slots__ = ("left", "limit", "process", "spans")

    def __init__(self, limit: int) -> None:
        self.left = self.limit = limit
        self.spans = 0
        self.process = False  # built (its tags come before it, as a span's before the span)


# The decode in progress in this thread (a context variable is per thread, and cheaper to
# read than a threading.local); outside a decode (a decoding class built by hand), no limit.
_budget_var: ContextVar[_Budget] = ContextVar("thrift_decode_budget")
_UNLIMITED = _Budget(1 << 62)


def _over_budget(budget: _Budget) -> None:
    raise ThriftBudgetError(
        f"the batch holds more than {budget.limit} items (spans, tags, logs, references): "
        "over max_batch_items"
    )


def _decode_read(cls: Any, iprot: Any) -> Any:
    if iprot._fast_decode is not None and isinstance(iprot.trans, CReadableTransport):
        return iprot._fast_decode(None, iprot, [cls, cls.thrift_spec])
    return iprot.readStruct(cls, cls.thrift_spec, True)


def _missing_message(cls: type[ThriftStruct], fields: dict[str, Any]) -> str:
    missing = [n for n in _REQUIRED[cls] if fields[n] is None]
    budget = _budget_var.get(_UNLIMITED)
    span = f"span #{budget.spans}"
    if cls is Span:
        return f"malformed Batch: {span} lacks the required field {missing[0]!r}"
    if cls is SpanRef:
        return f"malformed Batch: {span} has a reference that lacks a required field"
    if cls is Log:
        return f"malformed Batch: {span} has a log without timestamp"
    if cls is Tag:
        # clients send the process first: a tag refused before it is built is the process's
        process = not budget.process and budget.spans == 0
        where = "a process tag" if process else f"a tag or log field of {span}"
        return f"malformed Batch: {where} lacks its key or type"
    if cls is Batch:
        return "malformed Batch: the required field 'spans' is missing"
    return "emitBatch message without its batch argument"


# What the IDL marks required and the translation needs (the IDL also requires a span's
# parentSpanId, flags and duration, and a process's serviceName, which clients omit: read as
# 0 / empty, as before).
_REQUIRED: dict[type[ThriftStruct], tuple[str, ...]] = {
    Tag: ("key", "vType"),
    Log: ("timestamp",),
    SpanRef: ("refType", "traceIdLow", "traceIdHigh", "spanId"),
    Span: ("traceIdLow", "traceIdHigh", "spanId", "operationName", "startTime"),
    Process: (),
    ClientStats: (),
    Batch: ("spans",),
    EmitBatchArgs: ("batch",),
}


def _decoding_class(cls: type[ThriftStruct], decoding: dict[type, Any]) -> Any:
    """A subclass of ``cls`` whose constructor refuses a struct without its required fields
    and counts it against the budget; its ``thrift_spec`` builds decoding classes too."""
    required = _REQUIRED[cls]
    params = ", ".join(f"{n}=None" for n in cls.__slots__)
    check = " or ".join(f"{n} is None" for n in required)
    lines = [f"def __init__(self, *, {params}):"]
    if check:
        names = ", ".join(f"{n!r}: {n}" for n in required)
        lines.append(f"    if {check}: raise ThriftDecodeError(_missing(_cls, {{{names}}}))")
    lines.append("    b = _get_budget(_unlimited)")
    lines.append("    b.left -= 1")
    lines.append("    if b.left < 0: _over_budget(b)")
    if cls is Span:
        lines.append("    b.spans += 1")
    elif cls is Process:
        lines.append("    b.process = True")
    lines.extend(f"    self.{n} = {n}" for n in cls.__slots__)
    namespace: dict[str, Any] = {
        "ThriftDecodeError": ThriftDecodeError,
        "_missing": _missing_message,
        "_cls": cls,
        "_get_budget": _budget_var.get,
        "_unlimited": _UNLIMITED,
        "_over_budget": _over_budget,
    }
    exec("\n".join(lines), namespace)

    def _spec_args(ttype: int, args: Any) -> Any:
        if ttype == TType.STRUCT:
            sub = decoding[args[0]]
            return [sub, sub.thrift_spec]
        if ttype == TType.LIST and args[0] == TType.STRUCT:
            sub = decoding[args[1][0]]
            return (TType.STRUCT, [sub, sub.thrift_spec], args[2])
        return args

    spec = tuple(
        None if f is None else (f[0], f[1], f[2], _spec_args(f[1], f[3]), f[4])
        for f in cls.thrift_spec
    )
    return type(
        f"Decoding{cls.__name__}",
        (cls, TFrozenBase),
        {
            "__slots__": (),
            "__init__": namespace["__init__"],
            "thrift_spec": spec,
            "read": classmethod(_decode_read),
        },
        decoding=True,
    )


_DECODING: dict[type, Any] = {}
for _cls in (Tag, Log, SpanRef, Span, Process, ClientStats, Batch, EmitBatchArgs):
    _DECODING[_cls] = _decoding_class(_cls, _DECODING)


def _check_consumed(buf: TMemoryBuffer, data: bytes, what: str) -> None:
    rest = len(data) - buf._buffer.tell()
    if rest:
        raise ThriftDecodeError(f"{rest} trailing byte(s) after the {what}")


def _read_struct(cls: type[ThriftStruct], proto: Any, what: str, max_items: int) -> Any:
    token = _budget_var.set(_Budget(max_items))
    try:
        return _decode_read(_DECODING[cls], proto)
    except ThriftDecodeError:
        raise
    except Exception as exc:
        raise ThriftDecodeError(_describe(exc, what)) from exc
    finally:
        _budget_var.reset(token)


def decode_batch(
    data: bytes, kind: Protocol = "binary", max_items: int = DEFAULT_MAX_ITEMS
) -> Batch:
    """A ``Batch`` from its encoding (the body of ``POST /api/traces``).

    Raises :class:`ThriftDecodeError` for anything that is not a valid batch (its subclass
    :class:`ThriftBudgetError` when it holds more than ``max_items`` structs)."""
    buf = TMemoryBuffer(data)
    batch: Batch = _read_struct(Batch, _protocol(kind, buf, len(data)), "Batch", max_items)
    _check_consumed(buf, data, "Batch")
    return batch


def decode_emit_batch(data: bytes, kind: Protocol, max_items: int = DEFAULT_MAX_ITEMS) -> Batch:
    """The ``Batch`` of an agent datagram (a Thrift ``emitBatch`` message); raises as
    :func:`decode_batch`."""
    buf = TMemoryBuffer(data)
    proto = _protocol(kind, buf, len(data))
    try:
        name, mtype, _seqid = proto.readMessageBegin()
    except Exception as exc:
        raise ThriftDecodeError(_describe(exc, "message header")) from exc
    if name != EMIT_BATCH:
        raise ThriftDecodeError(
            f"unsupported agent call {name!r}: only {EMIT_BATCH!r} is accepted "
            "(Zipkin batches over the agent port are not supported)"
        )
    if mtype not in (TMessageType.ONEWAY, TMessageType.CALL):
        raise ThriftDecodeError(f"unexpected Thrift message type {mtype} for {EMIT_BATCH}")
    args: EmitBatchArgs = _read_struct(EmitBatchArgs, proto, "emitBatch arguments", max_items)
    try:
        proto.readMessageEnd()
    except Exception as exc:
        raise ThriftDecodeError(_describe(exc, "emitBatch message")) from exc
    _check_consumed(buf, data, "emitBatch message")
    assert args.batch is not None  # required: checked as it was built
    return args.batch


def _describe(exc: Exception, what: str) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError) or "EOF" in text or "end of" in text.lower():
        return f"truncated {what}: the data ends early ({text})"
    return f"malformed {what}: {text}"


# -- agent datagrams, assembled from spans encoded once ----------------------------------------
LIST_HEADER_MAX = 6  # compact: 1 byte + a varint of up to 5 bytes; binary: 5 bytes
SEQ_ID_SLACK = 4  # compact: a seq id is a varint of 1 to 5 bytes (binary: always 4)


class EmitBatchFramer:
    """Builds ``emitBatch`` datagrams for one process from spans encoded one by one.

    A struct's encoding does not depend on where it stands (true of both protocols), so each
    span is encoded once, its size known, and datagrams are concatenations of span encodings
    between a prefix (message header, process) and a suffix (the closing stop bytes).
    """

    def __init__(self, process: Process, kind: Protocol = "compact") -> None:
        self.kind = kind
        self.process_bytes = encode_struct(process, kind)
        self._seq = 0
        # Size of a datagram holding no span, at its largest: the prefix, the suffix, a list
        # header of the longest form, and a sequence id grown to its longest varint.
        self.overhead = len(self.packet([])) + LIST_HEADER_MAX + SEQ_ID_SLACK
        self._seq = 0

    def encode_span(self, span: Span) -> bytes:
        return encode_struct(span, self.kind)

    def packet(self, encoded_spans: list[bytes]) -> bytes:
        """One datagram holding these encoded spans, in order."""
        buf = TMemoryBuffer()
        # The framing goes through the pure-Python protocol (tiny); the spans and the process
        # were encoded by the accelerated one.
        proto: Any = TCompactProtocol(buf) if self.kind == "compact" else TBinaryProtocol(buf)
        self._seq = self._seq % (2**31 - 1) + 1
        proto.writeMessageBegin(EMIT_BATCH, TMessageType.ONEWAY, self._seq)
        proto.writeStructBegin("emitBatch_args")
        proto.writeFieldBegin("batch", TType.STRUCT, 1)
        proto.writeStructBegin("Batch")
        proto.writeFieldBegin("process", TType.STRUCT, 1)
        buf.write(self.process_bytes)
        proto.writeFieldEnd()
        proto.writeFieldBegin("spans", TType.LIST, 2)
        proto.writeListBegin(TType.STRUCT, len(encoded_spans))
        for s in encoded_spans:
            buf.write(s)
        proto.writeListEnd()
        proto.writeFieldEnd()
        proto.writeFieldStop()
        proto.writeStructEnd()
        proto.writeFieldEnd()
        proto.writeFieldStop()
        proto.writeStructEnd()
        proto.writeMessageEnd()
        return bytes(buf.getvalue())
