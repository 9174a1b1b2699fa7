"""The Jaeger Thrift model: encodings checked against an independent reader and against the
code generated from the IDL that ships inside the PyPI ``jaeger-client``."""

from __future__ import annotations

import pytest
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.transport.TTransport import TMemoryBuffer

from plugins._jaegerthrift import model
from plugins._jaegerthrift.model import (
    Batch,
    EmitBatchFramer,
    Log,
    Process,
    Span,
    SpanRef,
    Tag,
    TagType,
    ThriftDecodeError,
    decode_batch,
    decode_emit_batch,
    encode_struct,
)
from tests.plugins import jaeger_thrift_reader as r


def sample_span(i: int = 1) -> Span:
    return Span(
        traceIdLow=-(2**63),
        traceIdHigh=2**63 - 1,
        spanId=-i,
        parentSpanId=0,
        operationName=f"op-é-{i}",
        references=[SpanRef(refType=1, traceIdLow=5, traceIdHigh=6, spanId=7)],
        flags=1,
        startTime=1_700_000_000_000_000,
        duration=1234,
        tags=[
            Tag(key="s", vType=TagType.STRING, vStr="v"),
            Tag(key="d", vType=TagType.DOUBLE, vDouble=1.5),
            Tag(key="b", vType=TagType.BOOL, vBool=True),
            Tag(key="l", vType=TagType.LONG, vLong=-42),
            Tag(key="x", vType=TagType.BINARY, vBinary=b"\xff\x00\x01"),
        ],
        logs=[Log(timestamp=1_700_000_000_000_500, fields=[Tag(key="event", vType=0, vStr="e")])],
    )


def sample_batch(n: int = 2) -> Batch:
    process = Process(serviceName="svc", tags=[Tag(key="hostname", vType=0, vStr="h")])
    return Batch(process=process, spans=[sample_span(i) for i in range(1, n + 1)])


@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_batch_round_trip(protocol: model.Protocol) -> None:
    batch = sample_batch()
    assert decode_batch(encode_struct(batch, protocol), protocol) == batch


def test_accelerated_protocols_are_used() -> None:
    # The thrift wheel here is built with its C extension; the fast path must be taken.
    assert model.ACCELERATED
    proto = model._protocol("compact", TMemoryBuffer())
    assert proto._fast_encode is not None


def test_binary_encoding_read_independently() -> None:
    got = r.read_struct(encode_struct(sample_batch(1), "binary"))
    assert got[r.BATCH_PROCESS][r.PROCESS_SERVICE_NAME] == b"svc"
    span = got[r.BATCH_SPANS][0]
    assert span[r.SPAN_TRACE_ID_LOW] == -(2**63)
    assert span[r.SPAN_TRACE_ID_HIGH] == 2**63 - 1
    assert span[r.SPAN_ID] == -1
    assert span[r.SPAN_NAME] == "op-é-1".encode()
    assert span[r.SPAN_DURATION] == 1234
    assert r.tag_values(span[r.SPAN_TAGS]) == {
        "s": "v",
        "d": 1.5,
        "b": True,
        "l": -42,
        "x": b"\xff\x00\x01",
    }
    assert span[r.SPAN_REFERENCES][0] == {1: 1, 2: 5, 3: 6, 4: 7}


def test_decodes_what_jaeger_client_generated_code_writes() -> None:
    from jaeger_client.thrift_gen.jaeger import ttypes

    theirs = ttypes.Batch(
        process=ttypes.Process(serviceName="svc", tags=[]),
        spans=[
            ttypes.Span(
                traceIdLow=1,
                traceIdHigh=2,
                spanId=3,
                parentSpanId=4,
                operationName="op",
                flags=1,
                startTime=5,
                duration=6,
                tags=[ttypes.Tag(key="k", vType=ttypes.TagType.LONG, vLong=7)],
                logs=[],
                references=[],
            )
        ],
    )
    buf = TMemoryBuffer()
    theirs.write(TBinaryProtocol(buf))
    ours = decode_batch(buf.getvalue(), "binary")
    assert ours.process is not None and ours.process.serviceName == "svc"
    assert ours.spans is not None
    span = ours.spans[0]
    assert (span.traceIdLow, span.traceIdHigh, span.spanId, span.parentSpanId) == (1, 2, 3, 4)
    assert span.tags == [Tag(key="k", vType=TagType.LONG, vLong=7)]


@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_emit_batch_datagram(protocol: model.Protocol) -> None:
    batch = sample_batch(3)
    assert batch.process is not None and batch.spans is not None
    framer = EmitBatchFramer(batch.process, protocol)
    packet = framer.packet([framer.encode_span(s) for s in batch.spans])
    name, mtype, args = r.read_message(packet, protocol)
    assert (name, mtype) == ("emitBatch", 4)  # a oneway call
    assert [s[r.SPAN_ID] for s in args[1][r.BATCH_SPANS]] == [-1, -2, -3]
    assert decode_emit_batch(packet, protocol).spans == batch.spans
    assert len(framer.packet([])) + model.LIST_HEADER_MAX + model.SEQ_ID_SLACK == framer.overhead
    framer._seq = 2**31 - 2  # the longest sequence ids still fit the overhead
    assert len(framer.packet([])) + model.LIST_HEADER_MAX <= framer.overhead


def test_decodes_jaeger_client_agent_message() -> None:
    from jaeger_client.thrift_gen.agent import Agent
    from jaeger_client.thrift_gen.jaeger import ttypes

    buf = TMemoryBuffer()
    proto = TCompactProtocol(buf)
    batch = ttypes.Batch(process=ttypes.Process(serviceName="svc"), spans=[])
    # What the generated Agent client's send_emitBatch writes.
    proto.writeMessageBegin("emitBatch", 4, 0)
    Agent.emitBatch_args(batch=batch).write(proto)
    proto.writeMessageEnd()
    decoded = decode_emit_batch(buf.getvalue(), "compact")
    assert decoded.process is not None and decoded.process.serviceName == "svc"
    assert decoded.spans == []


@pytest.mark.parametrize("cut", [0, 1, 5, 17, 40, -1])
def test_truncated_datagrams_are_refused(cut: int) -> None:
    batch = sample_batch(2)
    assert batch.process is not None and batch.spans is not None
    framer = EmitBatchFramer(batch.process, "compact")
    packet = framer.packet([framer.encode_span(s) for s in batch.spans])
    with pytest.raises(ThriftDecodeError, match=r"truncated|malformed"):
        decode_emit_batch(packet[:cut], "compact")


def test_garbage_and_wrong_calls_are_refused() -> None:
    with pytest.raises(ThriftDecodeError, match="malformed"):
        decode_batch(b"\x0c\x00\x01garbage", "binary")
    with pytest.raises(ThriftDecodeError, match="trailing"):
        decode_batch(encode_struct(sample_batch(1)) + b"\x00\x00", "binary")
    buf = TMemoryBuffer()
    proto = TCompactProtocol(buf)
    proto.writeMessageBegin("emitZipkinBatch", 4, 1)
    proto.writeStructBegin("x")
    proto.writeFieldStop()
    proto.writeStructEnd()
    with pytest.raises(ThriftDecodeError, match="emitZipkinBatch"):
        decode_emit_batch(buf.getvalue(), "compact")
    # A length prefix far beyond the data is refused, not allocated.
    with pytest.raises(ThriftDecodeError):
        decode_batch(b"\x0f\x00\x02\x0c\x7f\xff\xff\xff", "binary")


def test_missing_required_fields_are_refused() -> None:
    span = sample_span()
    span.startTime = None
    data = encode_struct(Batch(process=Process(serviceName="s"), spans=[span]))
    with pytest.raises(ThriftDecodeError, match="startTime"):
        decode_batch(data, "binary")
    with pytest.raises(ThriftDecodeError, match="spans"):
        decode_batch(encode_struct(Batch(process=Process(serviceName="s"))), "binary")


@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_mutated_input_decodes_or_is_refused_cleanly(protocol: model.Protocol) -> None:
    """Random corruption of valid messages: every outcome is a decoded batch that translates
    to OTLP the edge check accepts (what every stage after the receiver can decode), or a
    ThriftDecodeError; never another exception."""
    import random

    from pipeline._otlpvalid import check
    from plugins._jaegerthrift.translate import batch_to_request

    batch = sample_batch(3)
    assert batch.process is not None and batch.spans is not None
    framer = EmitBatchFramer(batch.process, protocol)
    packet = framer.packet([framer.encode_span(s) for s in batch.spans])
    body = encode_struct(batch, protocol)
    rnd = random.Random(7)
    refused = 0
    for i in range(3000):
        data = bytearray(packet if i % 2 else body)
        for _ in range(rnd.randint(1, 4)):
            if not data:
                break
            pos = rnd.randrange(len(data))
            op = rnd.random()
            if op < 0.5:
                data[pos] = rnd.randrange(256)
            elif op < 0.7:
                del data[pos : pos + rnd.randint(1, 10)]
            elif op < 0.85:
                data[pos:pos] = rnd.randbytes(rnd.randint(1, 8))
            else:
                data = data[:pos]
        try:
            decoded = (decode_emit_batch if i % 2 else decode_batch)(bytes(data), protocol)
        except ThriftDecodeError:
            refused += 1
            continue
        request, n = batch_to_request(decoded)
        assert check("traces", request.SerializeToString()) == n
    assert refused > 1000


@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_strings_that_are_not_utf8_become_valid_otlp(protocol: model.Protocol) -> None:
    """Thrift strings are bytes on the wire: what is not UTF-8 (in a service name, an
    operation name, a tag's key or value, a log field) is decoded with U+FFFD in its place, so
    the OTLP made of it is valid; binary tags stay bytes."""
    from pipeline._otlpvalid import check
    from plugins._jaegerthrift.translate import batch_to_request

    batch = sample_batch(1)
    assert batch.process is not None and batch.spans is not None
    batch.process.serviceName = "svcXXXX"
    batch.spans[0].operationName = "opWWWW"
    batch.spans[0].tags = [Tag(key="kQQQQ", vType=TagType.STRING, vStr="vRRRR")]
    assert batch.spans[0].logs is not None
    batch.spans[0].logs[0].fields = [Tag(key="event", vType=0, vStr="eSSSS")]
    data = encode_struct(batch, protocol)
    for marker in (b"XXXX", b"WWWW", b"QQQQ", b"RRRR", b"SSSS"):
        data = data.replace(marker, b"\xff\xed\xa0\x80")  # not UTF-8: a surrogate, 0xff
    request, n = batch_to_request(decode_batch(data, protocol))
    assert check("traces", request.SerializeToString()) == n == 1
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.name.startswith("op\ufffd")
    assert span.attributes[0].key.startswith("k\ufffd")
    assert span.attributes[0].value.string_value.startswith("v\ufffd")
    assert span.events[0].name.startswith("e\ufffd")
    service = request.resource_spans[0].resource.attributes[0].value.string_value
    assert service.startswith("svc\ufffd")


def test_out_of_range_times_are_clamped() -> None:
    from plugins._jaegerthrift.translate import batch_to_request

    span = sample_span()
    span.startTime = 2**62
    span.duration = 2**62
    request, _ = batch_to_request(Batch(process=Process(serviceName="s"), spans=[span]))
    got = request.resource_spans[0].scope_spans[0].spans[0]
    assert got.start_time_unix_nano <= got.end_time_unix_nano < 2**64
