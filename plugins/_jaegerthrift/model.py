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

from typing import Any, ClassVar, Literal

from thrift.protocol.TBinaryProtocol import TBinaryProtocol, TBinaryProtocolAccelerated
from thrift.protocol.TCompactProtocol import TCompactProtocol, TCompactProtocolAccelerated
from thrift.Thrift import TMessageType, TType
from thrift.transport.TTransport import CReadableTransport, TMemoryBuffer

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

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
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
        return type(other) is type(self) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__
        )

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{n}={getattr(self, n)!r}" for n in self.__slots__ if getattr(self, n) is not None
        )
        return f"{type(self).__name__}({fields})"

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
    """Bytes that are not a valid Jaeger Thrift message; the text says what is wrong."""


# -- protocols --------------------------------------------------------------------------------
def _protocol(kind: Protocol, trans: Any, limit: int | None = None) -> Any:
    kw: dict[str, Any] = {}
    if limit is not None:
        # No string or list can be longer than the input: refuse lying length prefixes before
        # they turn into huge allocations.
        kw = {"string_length_limit": limit, "container_length_limit": limit}
    if kind == "binary":
        cls: Any = TBinaryProtocolAccelerated if ACCELERATED else TBinaryProtocol
        return cls(trans, **kw)
    cls = TCompactProtocolAccelerated if ACCELERATED else TCompactProtocol
    return cls(trans, **kw)


def encode_struct(obj: ThriftStruct, kind: Protocol = "binary") -> bytes:
    """One struct in the given protocol."""
    buf = TMemoryBuffer()
    obj.write(_protocol(kind, buf))
    return bytes(buf.getvalue())


def _check_consumed(buf: TMemoryBuffer, data: bytes, what: str) -> None:
    rest = len(data) - buf._buffer.tell()
    if rest:
        raise ThriftDecodeError(f"{rest} trailing byte(s) after the {what}")


def decode_batch(data: bytes, kind: Protocol = "binary") -> Batch:
    """A ``Batch`` from its encoding (the body of ``POST /api/traces``)."""
    buf = TMemoryBuffer(data)
    batch = Batch()
    try:
        batch.read(_protocol(kind, buf, len(data)))
    except Exception as exc:
        raise ThriftDecodeError(_describe(exc, "Batch")) from exc
    _check_consumed(buf, data, "Batch")
    check_batch(batch)
    return batch


def decode_emit_batch(data: bytes, kind: Protocol) -> Batch:
    """The ``Batch`` of an agent datagram (a Thrift ``emitBatch`` message)."""
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
    args = EmitBatchArgs()
    try:
        args.read(proto)
        proto.readMessageEnd()
    except Exception as exc:
        raise ThriftDecodeError(_describe(exc, "emitBatch arguments")) from exc
    _check_consumed(buf, data, "emitBatch message")
    if args.batch is None:
        raise ThriftDecodeError("emitBatch message without its batch argument")
    check_batch(args.batch)
    return args.batch


def _describe(exc: Exception, what: str) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError) or "EOF" in text or "end of" in text.lower():
        return f"truncated {what}: the data ends early ({text})"
    return f"malformed {what}: {text}"


_REQUIRED_SPAN_FIELDS = ("traceIdLow", "traceIdHigh", "spanId", "operationName", "startTime")


def check_batch(batch: Batch) -> None:
    """Refuse a decoded batch that lacks what the IDL marks ``required`` (and we need)."""
    if batch.spans is None:
        raise ThriftDecodeError("malformed Batch: the required field 'spans' is missing")
    for i, span in enumerate(batch.spans):
        for name in _REQUIRED_SPAN_FIELDS:
            if getattr(span, name) is None:
                raise ThriftDecodeError(
                    f"malformed Batch: span #{i} lacks the required field {name!r}"
                )
        for ref in span.references or ():
            if None in (ref.refType, ref.traceIdLow, ref.traceIdHigh, ref.spanId):
                raise ThriftDecodeError(
                    f"malformed Batch: span #{i} has a reference that lacks a required field"
                )
        for log in span.logs or ():
            if log.timestamp is None:
                raise ThriftDecodeError(f"malformed Batch: span #{i} has a log without timestamp")
        for tags in (span.tags or [], *(log.fields or [] for log in span.logs or [])):
            for tag in tags:
                if tag.key is None or tag.vType is None:
                    raise ThriftDecodeError(
                        f"malformed Batch: span #{i} has a tag without its key or type"
                    )
    process = batch.process
    if process is not None:
        for tag in process.tags or ():
            if tag.key is None or tag.vType is None:
                raise ThriftDecodeError("malformed Batch: a process tag lacks its key or type")


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
