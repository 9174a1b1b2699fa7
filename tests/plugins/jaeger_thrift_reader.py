"""An independent reader of Thrift structs for the Jaeger tests: it knows nothing of the
plugin's IDL classes and decodes any struct into ``{field_id: value}`` dicts with the
``thrift`` library's pure-Python protocols, so the tests check the bytes, not our own model."""

from __future__ import annotations

from typing import Any

from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.Thrift import TType
from thrift.transport.TTransport import TMemoryBuffer


def _value(proto: Any, ttype: int) -> Any:
    if ttype == TType.STRUCT:
        return _struct(proto)
    if ttype == TType.LIST:
        etype, size = proto.readListBegin()
        out = [_value(proto, etype) for _ in range(size)]
        proto.readListEnd()
        return out
    if ttype == TType.STRING:
        return proto.readBinary()
    reader = {
        TType.BOOL: proto.readBool,
        TType.BYTE: proto.readByte,
        TType.I16: proto.readI16,
        TType.I32: proto.readI32,
        TType.I64: proto.readI64,
        TType.DOUBLE: proto.readDouble,
    }[ttype]
    return reader()


def _struct(proto: Any) -> dict[int, Any]:
    out: dict[int, Any] = {}
    proto.readStructBegin()
    while True:
        _, ftype, fid = proto.readFieldBegin()
        if ftype == TType.STOP:
            break
        out[fid] = _value(proto, ftype)
        proto.readFieldEnd()
    proto.readStructEnd()
    return out


def read_struct(data: bytes, protocol: str = "binary") -> dict[int, Any]:
    buf = TMemoryBuffer(data)
    proto = TBinaryProtocol(buf) if protocol == "binary" else TCompactProtocol(buf)
    return _struct(proto)


def read_message(data: bytes, protocol: str = "compact") -> tuple[str, int, dict[int, Any]]:
    """``(name, message type, argument struct)`` of a Thrift message."""
    buf = TMemoryBuffer(data)
    proto = TBinaryProtocol(buf) if protocol == "binary" else TCompactProtocol(buf)
    name, mtype, _ = proto.readMessageBegin()
    args = _struct(proto)
    proto.readMessageEnd()
    return name, mtype, args


# Field ids of jaeger.thrift, for readable tests.
BATCH_PROCESS, BATCH_SPANS = 1, 2
PROCESS_SERVICE_NAME, PROCESS_TAGS = 1, 2
SPAN_TRACE_ID_LOW, SPAN_TRACE_ID_HIGH, SPAN_ID, SPAN_PARENT_ID, SPAN_NAME = 1, 2, 3, 4, 5
SPAN_REFERENCES, SPAN_FLAGS, SPAN_START, SPAN_DURATION, SPAN_TAGS, SPAN_LOGS = 6, 7, 8, 9, 10, 11
TAG_KEY, TAG_TYPE, TAG_STR, TAG_DOUBLE, TAG_BOOL, TAG_LONG, TAG_BINARY = 1, 2, 3, 4, 5, 6, 7
LOG_TIMESTAMP, LOG_FIELDS = 1, 2
REF_TYPE, REF_TRACE_ID_LOW, REF_TRACE_ID_HIGH, REF_SPAN_ID = 1, 2, 3, 4


def tag_values(tags: list[dict[int, Any]]) -> dict[str, Any]:
    """``{key: value}`` of decoded Tag structs (strings decoded from UTF-8)."""
    out: dict[str, Any] = {}
    for t in tags:
        key = t[TAG_KEY].decode()
        vtype = t[TAG_TYPE]
        value = t.get({0: TAG_STR, 1: TAG_DOUBLE, 2: TAG_BOOL, 3: TAG_LONG, 4: TAG_BINARY}[vtype])
        if vtype == 0:
            value = value.decode()
        out[key] = value
    return out
