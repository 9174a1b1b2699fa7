"""The Jaeger Thrift model: encodings checked against an independent reader and against the
code generated from the IDL that ships inside the PyPI ``jaeger-client``."""

from __future__ import annotations

from typing import Any

import pytest
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.Thrift import TType
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
from tests.hostile import cost
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


# -- hostile input: cost bounded by what the bytes are worth ----------------------------------
def _writer(kind: model.Protocol, buf: TMemoryBuffer) -> Any:
    return TCompactProtocol(buf) if kind == "compact" else TBinaryProtocol(buf)


def _required_span_fields(p: Any) -> None:
    for fid, name in ((1, "traceIdLow"), (2, "traceIdHigh"), (3, "spanId")):
        p.writeFieldBegin(name, TType.I64, fid)
        p.writeI64(1)
        p.writeFieldEnd()
    p.writeFieldBegin("operationName", TType.STRING, 5)
    p.writeString("op")
    p.writeFieldEnd()
    p.writeFieldBegin("startTime", TType.I64, 8)
    p.writeI64(1)
    p.writeFieldEnd()


def batch_with_list(kind: model.Protocol, where: str, element: bytes, n: int) -> bytes:
    """A Batch whose list ``where`` (spans, or the tags / logs / references of its one span,
    or its process tags) holds ``n`` copies of the encoded ``element``; the list is written
    as raw bytes, so millions of elements cost nothing to build."""
    buf = TMemoryBuffer()
    p = _writer(kind, buf)
    p.writeStructBegin("Batch")
    p.writeFieldBegin("process", TType.STRUCT, 1)
    p.writeStructBegin("Process")
    p.writeFieldBegin("serviceName", TType.STRING, 1)
    p.writeString("svc")
    p.writeFieldEnd()
    if where == "process_tags":
        p.writeFieldBegin("tags", TType.LIST, 2)
        p.writeListBegin(TType.STRUCT, n)
        buf.write(element * n)
        p.writeListEnd()
        p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()
    p.writeFieldEnd()
    p.writeFieldBegin("spans", TType.LIST, 2)
    if where == "spans":
        p.writeListBegin(TType.STRUCT, n)
        buf.write(element * n)
    elif where == "process_tags":
        p.writeListBegin(TType.STRUCT, 0)
    else:
        p.writeListBegin(TType.STRUCT, 1)
        p.writeStructBegin("Span")
        _required_span_fields(p)
        fid = {"references": 6, "tags": 10, "logs": 11}[where]
        p.writeFieldBegin(where, TType.LIST, fid)
        p.writeListBegin(TType.STRUCT, n)
        buf.write(element * n)
        p.writeListEnd()
        p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
    p.writeListEnd()
    p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()
    return bytes(buf.getvalue())


def refused(data: bytes, kind: model.Protocol, **kw: Any) -> ThriftDecodeError:
    try:
        decode_batch(data, kind, **kw)
    except ThriftDecodeError as exc:
        return exc
    raise AssertionError("decoded")


EMPTY_STRUCT = b"\x00"  # a struct with no field: its stop byte, in both protocols


@pytest.fixture(params=[True, False], ids=["accelerated", "pure-python"])
def accelerated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both the C decoder and the thrift library's pure-Python twin."""
    monkeypatch.setattr(model, "ACCELERATED", request.param)
    return bool(request.param)


@pytest.mark.parametrize("protocol", ["binary", "compact"])
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("spans", "span #0 lacks the required field 'traceIdLow'"),
        ("tags", "a tag or log field of span #0 lacks its key or type"),
        ("logs", "span #0 has a log without timestamp"),
        ("references", "span #0 has a reference that lacks a required field"),
        ("process_tags", "a process tag lacks its key or type"),
    ],
)
def test_a_list_of_empty_structs_costs_one_struct(
    protocol: model.Protocol, where: str, message: str, accelerated: bool
) -> None:
    """The audit's amplification: 19 MiB of empty spans (one byte each) took 27.7 s and
    3.1 GB (here, 2 million took ~2.8 s and ~280 MB). Every struct is checked as it is built:
    the first one, lacking its required fields, ends the decode."""
    n = 2_000_000 if accelerated else 200_000
    data = batch_with_list(protocol, where, EMPTY_STRUCT, n)
    exc = refused(data, protocol)
    assert message in str(exc)
    assert not isinstance(exc, model.ThriftBudgetError)
    cpu, peak = cost(lambda: refused(data, protocol))
    assert cpu < 0.05, cpu
    assert peak < 64 * 1024, peak


@pytest.mark.parametrize("protocol", ["binary", "compact"])
@pytest.mark.parametrize("where", ["spans", "tags", "logs", "references", "process_tags"])
def test_valid_items_beyond_the_budget_are_refused(
    protocol: model.Protocol, where: str, accelerated: bool
) -> None:
    """Structs with only their required fields are the smallest valid ones (a compact tag is
    5 bytes, a log 3): a batch of them is refused once it holds more than ``max_items``,
    before the rest is built."""
    smallest = {
        "spans": Span(traceIdLow=0, traceIdHigh=0, spanId=0, operationName="", startTime=0),
        "tags": Tag(key="", vType=0),
        "process_tags": Tag(key="", vType=0),
        "logs": Log(timestamp=0),
        "references": SpanRef(refType=0, traceIdLow=0, traceIdHigh=0, spanId=0),
    }[where]
    element = encode_struct(smallest, protocol)
    budget = 1000
    # the batch, its process and (but for spans) its span take 2 or 3 items of the budget
    fits = budget - (2 if where in ("spans", "process_tags") else 3)
    assert len(
        decode_batch(batch_with_list(protocol, where, element, fits), protocol, budget).spans or ()
    ) >= (fits if where == "spans" else 0)
    exc = refused(batch_with_list(protocol, where, element, fits + 1), protocol, max_items=budget)
    assert isinstance(exc, model.ThriftBudgetError)
    assert "more than 1000 items" in str(exc) and "max_batch_items" in str(exc)

    data = batch_with_list(protocol, where, element, 1_000_000 if accelerated else 100_000)
    cpu, peak = cost(lambda: refused(data, protocol, max_items=budget))
    assert cpu < 0.05, cpu
    assert peak < 1000 * 400, peak  # the budget's worth of structs, at most


def test_default_budget_bounds_a_batch_of_tiny_valid_structs() -> None:
    """At the default budget (100,000 structs), the smallest valid ones cost what the
    defaults promise: a few tens of MB at most, well under a second."""
    element = encode_struct(Tag(key="", vType=0), "compact")  # 5 bytes
    data = batch_with_list("compact", "tags", element, 1_000_000)  # 5 MB on the wire
    cpu, peak = cost(lambda: refused(data, "compact"))
    assert peak < model.DEFAULT_MAX_ITEMS * 200, peak
    assert cpu < 1.0, cpu


@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_deep_nesting_is_refused_cheaply(protocol: model.Protocol, accelerated: bool) -> None:
    """100,000 nested structs in a field the IDL does not know: thrift's depth limit (64)."""
    buf = TMemoryBuffer()
    p = _writer(protocol, buf)
    p.writeStructBegin("Batch")
    for _ in range(100_000):
        p.writeFieldBegin("x", TType.STRUCT, 9)
        p.writeStructBegin("x")
    data = bytes(buf.getvalue())
    exc = refused(data, protocol)
    assert "depth" in str(exc)
    cpu, peak = cost(lambda: refused(data, protocol))
    assert cpu < 0.05 and peak < 64 * 1024, (cpu, peak)


@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_both_decoders_refuse_only_with_thrift_decode_error(protocol: model.Protocol) -> None:
    """The C decoder and the thrift library's pure-Python one on mutated messages: each
    decodes or raises ThriftDecodeError, nothing else, and they agree on almost every input.
    (The library's twins differ where the pure-Python one is laxer: it does not check a
    list's element type, reads a compact varint longer than 64 bits as a larger integer,
    takes a bool byte other than 0/1 differently; both read invalid UTF-8 as U+FFFD.)"""
    import random

    batch = sample_batch(3)
    assert batch.process is not None and batch.spans is not None
    framer = EmitBatchFramer(batch.process, protocol)
    packet = framer.packet([framer.encode_span(s) for s in batch.spans])
    rnd = random.Random(11)
    agree = 0
    runs = 600
    for _ in range(runs):
        data = bytearray(packet)
        for _ in range(rnd.randint(1, 3)):
            pos = rnd.randrange(len(data))
            data[pos] = rnd.randrange(256)
        verdicts: list[Any] = []
        for fast in (True, False):
            model.ACCELERATED = fast
            try:
                verdicts.append(decode_emit_batch(bytes(data), protocol, max_items=50))
            except ThriftDecodeError as exc:
                verdicts.append(type(exc))
            finally:
                model.ACCELERATED = True
        agree += repr(verdicts[0]) == repr(verdicts[1])
    assert agree > runs * 0.97, agree


def test_decoded_structs_equal_built_ones() -> None:
    """Decoded structs are instances of checking subclasses; they compare and print as the
    IDL structs they stand for."""
    batch = sample_batch(1)
    decoded = decode_batch(encode_struct(batch))
    assert decoded == batch and batch == decoded
    assert isinstance(decoded, Batch) and type(decoded) is not Batch
    assert repr(decoded) == repr(batch)
    assert decoded.spans is not None and decoded.spans[0].tags == sample_span().tags
