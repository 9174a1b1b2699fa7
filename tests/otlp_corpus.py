"""Valid OTLP requests of every shape, and mutations of them: the corpus of the tests of the edge
check (``pipeline/_otlpvalid.py``, ``plugins/_native/_otlpvalid.c``) and of the components
behind it.

* :func:`random_request`: every field of every message type of a request (from the OTLP
  descriptors), valid, with ids of the right length;
* :func:`sdk_requests`: what the OpenTelemetry SDK itself exports (spans with events, links and
  statuses; every metric instrument, exponential histograms included; log records);
* :func:`mutate`: the corruptions a fuzzer would find, at two levels: on the request's tree
  (a field added, duplicated or re-encoded with another wire type, an id resized, invalid UTF-8
  in a string, deep nesting, an unknown group, a oneof member replaced, packed data resized)
  and on its bytes (bit flips, truncation, splices of another request).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pipeline._otlpvalid import (
    BYTES,
    FIXED32,
    FIXED64,
    ID_RULES,
    MESSAGE,
    STRING,
    VARINT,
    requests,
    tables,
)
from pipeline._otlpvalid import Message as Table
from tests.plugins._native_support import varint

KINDS = ("traces", "metrics", "logs")

_TEXT = "abcxyz ._-/:0123456789ABCÉßçøΩЖ中文日本語한국🙂🚀\u200b\U0010fffd"


def random_text(rng: random.Random, n: int | None = None) -> str:
    n = rng.randint(0, 12) if n is None else n
    if rng.random() < 0.6:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz._") for _ in range(n))
    return "".join(rng.choice(_TEXT) for _ in range(n))


_RECURSIVE = {"ArrayValue", "KeyValueList"}


def _fill(msg: Message, rng: random.Random, depth: int) -> None:
    desc: Descriptor = msg.DESCRIPTOR
    rules = ID_RULES.get(desc.full_name, {})
    chosen_oneofs: dict[str, str] = {
        o.name: rng.choice(o.fields).name for o in desc.oneofs if rng.random() < 0.85
    }
    for fd in desc.fields:
        o = fd.containing_oneof
        if o is not None and chosen_oneofs.get(o.name) != fd.name:
            continue
        if fd.name in rules:
            size, optional = rules[fd.name]
            if optional and rng.random() < 0.3:
                continue
            setattr(msg, fd.name, rng.randbytes(size))
            continue
        if o is None and rng.random() < 0.35:
            continue
        if fd.message_type is not None:
            if fd.message_type.name in _RECURSIVE and depth > 3:
                continue
            if depth > 8:
                continue
            if fd.is_repeated:
                for _ in range(rng.randint(1 if depth < 3 else 0, 3)):
                    _fill(getattr(msg, fd.name).add(), rng, depth + 1)
            else:
                child = getattr(msg, fd.name)
                child.SetInParent()
                _fill(child, rng, depth + 1)
            continue
        values = [_scalar(fd, rng) for _ in range(rng.randint(0, 4) if fd.is_repeated else 1)]
        if fd.is_repeated:
            getattr(msg, fd.name).extend(values)
        else:
            setattr(msg, fd.name, values[0])


def _scalar(fd: FieldDescriptor, rng: random.Random) -> Any:
    t = fd.type
    if t == fd.TYPE_STRING:
        return random_text(rng)
    if t == fd.TYPE_BYTES:
        return rng.randbytes(rng.randint(0, 10))
    if t == fd.TYPE_BOOL:
        return rng.random() < 0.5
    if t in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
        return rng.choice([0.0, 1.5, -2.25, 1e300 if t == fd.TYPE_DOUBLE else 3e38, rng.random()])
    if t in (fd.TYPE_INT32, fd.TYPE_SINT32, fd.TYPE_SFIXED32):
        return rng.randint(-(2**31), 2**31 - 1)
    if t in (fd.TYPE_UINT32, fd.TYPE_FIXED32):
        return rng.randint(0, 2**32 - 1)
    if t in (fd.TYPE_INT64, fd.TYPE_SINT64, fd.TYPE_SFIXED64):
        return rng.randint(-(2**63), 2**63 - 1)
    if t in (fd.TYPE_UINT64, fd.TYPE_FIXED64):
        return rng.randint(0, 2**64 - 1)
    if t == fd.TYPE_ENUM:
        return rng.choice([0, 1, 2, 3, 5, 17, -1, 2**31 - 1])
    raise TypeError(fd.full_name)


def random_request(kind: str, rng: random.Random) -> bytes:
    """A valid request of ``kind`` with every field type set somewhere, ids of the right
    length; up to a few resources, scopes and items."""
    cls = requests()[kind]
    msg = cls()
    _fill(msg, rng, 0)
    return bytes(msg.SerializeToString())


def message_class(desc: Descriptor) -> Any:
    return message_factory.GetMessageClass(desc)


# -- what the OpenTelemetry SDK exports ------------------------------------------------------------
def sdk_requests() -> dict[str, list[bytes]]:
    """Requests encoded by the OpenTelemetry SDK's own OTLP encoders."""
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, Status, StatusCode

    resource = Resource.create({"service.name": "corpus", "deployment.environment": "tést"})
    spans = InMemorySpanExporter()
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(spans))
    tracer = tp.get_tracer("corpus.tracer", "1.0", attributes={"scope.attr": 1})
    with tracer.start_as_current_span("workflow.research", attributes={"workflow.id": "wf-1"}):
        with tracer.start_as_current_span(
            "execute_tool search",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search",
                "tags": ["a", "b"],
                "weights": [1.5, 2.5],
                "flags": [True, False],
                "counts": [1, 2, 3],
            },
        ) as child:
            child.add_event("exception", {"exception.type": "TimeoutError", "n": 3})
            child.set_status(Status(StatusCode.ERROR, "timed out ⏰"))
        other = tracer.start_span("a2a send", links=[Link(child.get_span_context(), {"k": "v"})])
        other.end()

    reader = InMemoryMetricReader()
    mp = MeterProvider(
        resource=resource,
        metric_readers=[reader],
        views=[
            View(instrument_name="exp.*", aggregation=ExponentialBucketHistogramAggregation()),
            View(instrument_name="*"),
        ],
    )
    meter = mp.get_meter("corpus.meter", "2.0")
    meter.create_counter("calls").add(3, {"route": "/a"})
    meter.create_up_down_counter("inflight").add(-2, {"route": "/b"})
    hist = meter.create_histogram("latency", unit="s")
    exp = meter.create_histogram("exp.latency", unit="s")
    for v in (0.001, 0.2, 3.0, 45.0):
        hist.record(v, {"tool": "search"})
        exp.record(v, {"tool": "search"})
    meter.create_gauge("temperature").set(21.5, {"room": "kitchen"})
    meter.create_observable_gauge("queue", callbacks=[lambda _options: []])
    data = reader.get_metrics_data()
    assert data is not None
    metrics = [bytes(encode_metrics(data).SerializeToString())]
    mp.shutdown()

    logs_out = InMemoryLogRecordExporter()
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    otel_logger = lp.get_logger("corpus.logs", "3.0")
    with tracer.start_as_current_span("with-log"):
        otel_logger.emit(
            LogRecord(
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                body={"message": "tool search failed: timeout ⏰", "attempt": 2, "ok": False},
                attributes={"tool": "search", "codes": [1, 2]},
                event_name="tool.failure",
            )
        )
    otel_logger.emit(LogRecord(severity_number=SeverityNumber.ERROR, body="no span here"))
    lp.shutdown()
    tp.shutdown()
    logs = [bytes(encode_logs(logs_out.get_finished_logs()).SerializeToString())]
    traces = [bytes(encode_spans(spans.get_finished_spans()).SerializeToString())]
    return {"traces": traces, "metrics": metrics, "logs": logs}


# -- agent workflows, as the agent components read them ------------------------------------------
def agent_requests(seed: int, count: int = 6) -> list[bytes]:
    """Requests of agent workflow traces spread over requests and resources: roots, tool calls
    (MCP and GenAI, some failed with exception events), agents, A2A producers and consumers,
    HTTP server spans, spans already stamped, non-workflow traces."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from tests.plugins._agent_support import kv, span

    rng = random.Random(seed)
    reqs: list[list[Any]] = [[] for _ in range(count)]
    for t in range(1, 30):
        workflow = t % 5 != 0
        root_attrs: dict[str, Any] = {"workflow.name": "support"} if workflow else {}
        if t % 3 == 0:
            root_attrs["workflow.id"] = f"wf-{t}"
        if t % 4 == 0:
            root_attrs["gen_ai.agent.id"] = "root-agent"
        spans = [
            span(
                t,
                1,
                None,
                "workflow.support" if workflow else "GET /",
                attrs=root_attrs,
                error="tool chain failed: timeout" if t % 6 == 0 else None,
                kind=Span.SPAN_KIND_SERVER if not workflow else Span.SPAN_KIND_INTERNAL,
            )
        ]
        for i in range(2, rng.randint(2, 10)):
            attrs: dict[str, Any] = {}
            kind = Span.SPAN_KIND_INTERNAL
            r = rng.random()
            if r < 0.25:
                attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
                kind = Span.SPAN_KIND_CLIENT
            elif r < 0.35:
                attrs = {"mcp.method.name": "tools/call", "mcp.server.name": "web"}
            elif r < 0.45:
                attrs = {"gen_ai.agent.id": f"agent-{t}", "gen_ai.agent.name": "writer"}
            elif r < 0.55:
                attrs = {"a2a.message.type": "task", "a2a.recipient.type": "writer"}
                kind = Span.SPAN_KIND_PRODUCER
            elif r < 0.65:
                attrs = {"a2a.message.type": "task", "a2a.sender.type": "planner"}
                kind = Span.SPAN_KIND_CONSUMER
            elif r < 0.75:
                attrs = {"http.request.method": "POST", "http.response.status_code": 503}
                kind = Span.SPAN_KIND_SERVER
            elif r < 0.8:
                attrs = {"workflow.outcome": "success", "workflow.complexity_tier": "simple"}
            error = "boom: timed out" if r < 0.35 and rng.random() < 0.4 else None
            s = span(t, i, rng.randint(1, i - 1), f"op{i}", attrs=attrs, error=error, kind=kind)
            if error and rng.random() < 0.5:
                s.events.add(name="exception").attributes.append(
                    kv("exception.type", rng.choice(["TimeoutError", "ValueError"]))
                )
            spans.append(s)
        for s in spans:
            reqs[rng.randrange(count)].append((rng.choice(["a", "b"]), s))
    out = []
    for items in reqs:
        req = requests()["traces"]()
        by_service: dict[str, Any] = {}
        for service, s in items:
            rs = by_service.get(service)
            if rs is None:
                rs = by_service[service] = req.resource_spans.add()
                rs.resource.attributes.append(kv("service.name", service))
                rs.scope_spans.add().scope.name = "agent"
            rs.scope_spans[0].spans.append(s)
        out.append(bytes(req.SerializeToString()))
    return out


# -- the request as a tree of fields, for structured mutations ------------------------------------
class Node:
    """One field as it stands on the wire: its number, wire type and value (raw bytes, or the
    fields of a known message)."""

    __slots__ = ("number", "raw", "sub", "table", "wire")

    def __init__(
        self,
        number: int,
        wire: int,
        raw: bytes = b"",
        sub: list[Node] | None = None,
        table: Table | None = None,
    ) -> None:
        self.number, self.wire, self.raw, self.sub, self.table = number, wire, raw, sub, table


def parse_tree(table: Table, data: bytes) -> list[Node]:
    """The fields of a well-formed message (known message fields parsed, the rest raw)."""
    out: list[Node] = []
    p = 0
    while p < len(data):
        tag, p = _read_varint(data, p)
        number, wire = tag >> 3, tag & 7
        f = table.fields.get(number)
        if wire == 0:
            _, q = _read_varint(data, p)
            out.append(Node(number, 0, data[p:q]))
            p = q
        elif wire == 1:
            out.append(Node(number, 1, data[p : p + 8]))
            p += 8
        elif wire == 5:
            out.append(Node(number, 5, data[p : p + 4]))
            p += 4
        elif wire == 2:
            n, p = _read_varint(data, p)
            value = data[p : p + n]
            p += n
            if f is not None and f.kind == MESSAGE and f.sub is not None:
                out.append(Node(number, 2, sub=parse_tree(f.sub, value), table=f.sub))
            else:
                out.append(Node(number, 2, value))
        else:  # a group: kept raw up to its end tag (included)
            start = p
            depth = 1
            while depth:
                t, p = _read_varint(data, p)
                if t & 7 == 3:
                    depth += 1
                elif t & 7 == 4:
                    depth -= 1
                elif t & 7 == 0:
                    p = _read_varint(data, p)[1]
                elif t & 7 == 1:
                    p += 8
                elif t & 7 == 5:
                    p += 4
                else:
                    n, p = _read_varint(data, p)
                    p += n
            out.append(Node(number, 3, data[start:p]))
    return out


def _read_varint(data: bytes, p: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = data[p]
        p += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, p
        shift += 7


def encode_tree(nodes: list[Node]) -> bytes:
    out = bytearray()
    for n in nodes:
        out += varint(n.number << 3 | n.wire)
        if n.wire == 2:
            value = encode_tree(n.sub) if n.sub is not None else n.raw
            out += varint(len(value)) + value
        else:
            out += n.raw
    return bytes(out)


def _all_nodes(nodes: list[Node], table: Table, out: list[tuple[list[Node], Table]]) -> None:
    out.append((nodes, table))
    for n in nodes:
        if n.sub is not None and n.table is not None:
            _all_nodes(n.sub, n.table, out)


def _deep_value(levels: int) -> Node:
    """An AnyValue nested ``levels`` arrays deep (a string at the bottom), as a value field."""
    value = b"\x0a\x01x"  # string_value
    for _ in range(levels):
        array = b"\x0a" + varint(len(value)) + value  # ArrayValue.values
        value = b"\x2a" + varint(len(array)) + array  # AnyValue.array_value
    return Node(2, 2, value)


_BAD_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"]


def _structured(kind: str, data: bytes, rng: random.Random) -> bytes:
    table = tables()[kind]
    tree = parse_tree(table, data)
    places: list[tuple[list[Node], Table]] = []
    _all_nodes(tree, table, places)
    for _ in range(rng.randint(1, 2)):
        nodes, t = rng.choice(places)
        op = rng.randrange(13)
        known = [n for n in nodes if n.number in t.fields]
        if op == 0 and known:  # an id or a bytes field resized
            n = rng.choice(known)
            if n.wire == 2 and n.sub is None:
                n.raw = rng.randbytes(rng.choice([0, 1, 7, 8, 9, 15, 16, 17, len(n.raw)]))
        elif op == 1:  # invalid UTF-8 in a string
            strings = [n for n in known if t.fields[n.number].kind == STRING and n.wire == 2]
            if strings:
                n = rng.choice(strings)
                i = rng.randint(0, len(n.raw))
                n.raw = n.raw[:i] + rng.choice(_BAD_UTF8) + n.raw[i:]
        elif op == 2 and nodes:  # a field duplicated (a second occurrence, merged or last wins)
            nodes.insert(rng.randint(0, len(nodes)), rng.choice(nodes))
        elif op == 3 and known:  # another wire type: an unknown field for upb
            n = rng.choice(known)
            n.wire, n.sub, n.raw = rng.choice(
                [(0, None, b"\x05"), (1, None, bytes(8)), (5, None, bytes(4)), (2, None, b"zz")]
            )
        elif op == 4:  # an unknown field, maybe with a known number
            number = rng.choice([*t.fields, 99, 1000, 2**29 - 1])
            wire = rng.choice([0, 1, 2, 5, 3])
            raw = {0: varint(rng.getrandbits(64)), 1: bytes(8), 5: bytes(4), 2: b"\xff\xfe"}.get(
                wire, b""
            )
            if wire == 3:
                raw = varint(7 << 3) + b"\x01" + varint(number << 3 | 4)
            nodes.insert(rng.randint(0, len(nodes)), Node(number, wire, raw))
        elif op == 5:  # deep nesting in a value (the limit is 100 levels below the request)
            kv_tables = [(ns, tt) for ns, tt in places if tt.name == "KeyValue"]
            if kv_tables:
                ns, _ = rng.choice(kv_tables)
                ns[:] = [n for n in ns if n.number != 2]
                ns.append(_deep_value(rng.choice([40, 44, 45, 46, 47, 48, 49, 50, 60])))
        elif op == 6 and t.name == "Metric":  # another member of the data oneof
            member = rng.choice([5, 7, 9, 10, 11])
            sub = t.fields[member].sub
            assert sub is not None
            body = random_request_of(sub, rng)
            nodes.append(Node(member, 2, sub=parse_tree(sub, body), table=sub))
        elif op == 7 and known:  # packed data resized
            packed = [
                n
                for n in known
                if t.fields[n.number].repeated
                and t.fields[n.number].kind in (VARINT, FIXED64, FIXED32)
                and n.wire == 2
            ]
            if packed:
                n = rng.choice(packed)
                n.raw = n.raw[: rng.randint(0, len(n.raw))] + rng.choice([b"", b"\x80", b"\x01"])
        elif op == 8 and nodes:  # a field removed
            del nodes[rng.randrange(len(nodes))]
        elif op == 9:  # a nested message's raw bytes corrupted
            msgs = [n for n in nodes if n.sub is not None]
            if msgs:
                n = rng.choice(msgs)
                raw = bytearray(encode_tree(n.sub or []))
                if raw:
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
                n.sub, n.raw = None, bytes(raw)
        elif op == 10:  # a value of another type (an agent attribute as a map, an int...)
            kv_nodes = [(ns, tt) for ns, tt in places if tt.name == "KeyValue"]
            if kv_nodes:
                ns, _ = rng.choice(kv_nodes)
                ns[:] = [n for n in ns if n.number != 2] + [Node(2, 2, _random_any_value(rng))]
        elif op == 11 and known:  # an extreme number in a known varint or fixed field
            n = rng.choice(known)
            if n.wire == 0:
                n.raw = varint(rng.choice([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, 6, 7, 255]))
            elif n.wire == 1:
                n.raw = rng.choice([bytes(8), b"\xff" * 8, struct.pack("<d", float("nan"))])
            elif n.wire == 5:
                n.raw = rng.choice([bytes(4), b"\xff" * 4])
        else:  # unpacked repeated scalars
            reps = [
                f for f in t.fields.values() if f.repeated and f.kind in (VARINT, FIXED64, FIXED32)
            ]
            if reps:
                f = rng.choice(reps)
                raw = {VARINT: varint(rng.getrandbits(20)), FIXED64: bytes(8), FIXED32: bytes(4)}
                wire = {VARINT: 0, FIXED64: 1, FIXED32: 5}[f.kind]
                nodes.append(Node(f.number, wire, raw[f.kind]))
    return encode_tree(tree)


def _random_any_value(rng: random.Random) -> bytes:
    cls = message_class(_descriptor("opentelemetry.proto.common.v1.AnyValue"))
    value = cls()
    choice = rng.randrange(8)
    if choice == 0:
        value.string_value = random_text(rng, rng.choice([0, 1, 3, 200]))
    elif choice == 1:
        value.int_value = rng.choice([0, -1, 2**63 - 1, -(2**63), 404, 503])
    elif choice == 2:
        value.double_value = rng.choice([0.0, -1.5, float("inf"), float("nan"), 1e308])
    elif choice == 3:
        value.bool_value = rng.random() < 0.5
    elif choice == 4:
        value.bytes_value = rng.randbytes(rng.randint(0, 20))
    elif choice == 5:
        value.array_value.values.add().string_value = "x"
        value.array_value.values.add().int_value = 3
    elif choice == 6:
        kv = value.kvlist_value.values.add(key="k")
        kv.value.string_value = "v"
    return bytes(value.SerializeToString())  # choice 7: an empty value


def random_request_of(table: Table, rng: random.Random) -> bytes:
    """A valid message of one table (a sub-message), through its generated class."""
    cls = message_class(_descriptor(table.full_name))
    msg = cls()
    _fill(msg, rng, 3)
    return bytes(msg.SerializeToString())


def _descriptor(full_name: str) -> Descriptor:
    for cls in requests().values():
        try:
            return cls.DESCRIPTOR.file.pool.FindMessageTypeByName(full_name)  # type: ignore[no-any-return]
        except KeyError:
            continue
    raise KeyError(full_name)


_SPECIAL = [0x00, 0x01, 0x02, 0x0A, 0x0B, 0x0C, 0x12, 0x13, 0x14, 0x7F, 0x80, 0xFF, 0xC0, 0xED]


def _bytes_level(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not out:
            break
        op = rng.random()
        i = rng.randrange(len(out))
        if op < 0.25:
            out[i] ^= 1 << rng.randrange(8)
        elif op < 0.4:
            out[i] = rng.randrange(256)
        elif op < 0.55:
            del out[i:]
        elif op < 0.7:
            out[i:i] = bytes([rng.choice(_SPECIAL)])
        elif op < 0.8:
            del out[i : i + rng.randint(1, 8)]
        elif op < 0.95 and pool:
            other = rng.choice(pool)
            j = rng.randrange(len(other) or 1)
            out[i : i + rng.randint(0, 16)] = other[j : j + rng.randint(1, 64)]
        else:
            j = rng.randrange(len(out))
            out[i:i] = out[j : j + rng.randint(1, 32)]
    return bytes(out)


def mutate(kind: str, data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """``data`` (a valid request of ``kind``) corrupted: structurally, on its bytes or both."""
    r = rng.random()
    if r < 0.5:
        return _structured(kind, data, rng)
    if r < 0.8:
        return _bytes_level(data, rng, pool)
    return _bytes_level(_structured(kind, data, rng), rng, pool)


def corpus(kind: str, seed: int, n: int, extra: list[bytes] | None = None) -> list[bytes]:
    """``n`` valid requests of ``kind``: random ones, and ``extra``."""
    rng = random.Random(seed)
    return [random_request(kind, rng) for _ in range(n)] + list(extra or [])


def fuzz(
    kind: str,
    seeds: list[bytes],
    count: int,
    seed: int,
    check: Callable[[bytes], None],
) -> None:
    """Calls ``check`` on ``count`` mutations of ``seeds``."""
    rng = random.Random(seed)
    for _ in range(count):
        check(mutate(kind, rng.choice(seeds), rng, seeds))


__all__ = [
    "BYTES",
    "FIXED32",
    "FIXED64",
    "KINDS",
    "Node",
    "corpus",
    "encode_tree",
    "fuzz",
    "mutate",
    "parse_tree",
    "random_request",
    "sdk_requests",
]
