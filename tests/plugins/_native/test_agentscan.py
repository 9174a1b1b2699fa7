"""The C scanner of the ``agentmetrics`` connector (``plugins/_native/_agentscan.c``) against the
connector's pure-Python path: the same spans give the same series, counts, buckets, windows and
A2A latencies; malformed input is refused with ``ValueError`` and never crashes."""

from __future__ import annotations

import collections
import gc
import random
import sys
import time
import weakref
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline import Kind, Traces
from pipeline.pdata import JoinedParts
from plugins.agentmetricsconnector.calls import (
    FRAMEWORK,
    MCP_CLIENT,
    RECOVERABLE,
    TIMEOUTS,
    Failure,
    Layer,
)
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from tests.plugins._agent_support import Capture, kv, settings, sid, tid
from tests.plugins._native_support import require_native

native = require_native("_agentscan")

T0 = 1_700_000_000_000_000_000
WORDS = ["search", "fetch", "", "Timeout", "cancelled by user", "deadline exceeded", "boom", "ünï"]


def value(rng: random.Random) -> AnyValue:
    pick = rng.random()
    if pick < 0.7:
        codes = ["200", "503", "429", "404", "\uff12\uff10\uff10"]  # the last: non-ASCII digits
        return AnyValue(string_value=rng.choice([*WORDS, *codes]))
    if pick < 0.8:
        return AnyValue(int_value=rng.choice([200, 201, 429, 500, 503, -1, 1 << 40]))
    if pick < 0.88:
        return AnyValue(bool_value=rng.random() < 0.5)
    if pick < 0.96:
        return AnyValue(double_value=rng.choice([0.5, 1e-7, 123456789.0, float("inf")]))
    return AnyValue()  # no value set


KEYS = [
    "gen_ai.operation.name",
    "mcp.method.name",
    "mcp.server.name",
    "server.address",
    "gen_ai.tool.name",
    "error.type",
    "a2a.message.type",
    "a2a.recipient.type",
    "a2a.priority",
    "a2a.sender.type",
    "a2a.processing.status",
    "http.request.method",
    "http.method",
    "http.response.status_code",
    "http.status_code",
    "http.route",
    "db.system.name",
    "db.system",
    "error.severity",
    "error.recoverable",
    "workflow.name",
    "workflow.id",
    "workflow.type",
    "workflow.outcome",
    "workflow.complexity_tier",
    "workflow.agent.id",
    "gen_ai.agent.id",
    "workflow.duration",
    "app.padding",
]


def random_span(rng: random.Random, trace: int, n: int, producers: list[bytes]) -> Span:
    root = rng.random() < 0.2
    kind = rng.choice([0, 1, 2, 2, 3, 4, 4, 5, 5])
    name = rng.choice(["workflow.research", "workflow.", "execute_tool lookup", "plain", "x ü"])
    s = Span(
        trace_id=tid(trace),
        span_id=sid(n),
        parent_span_id=b"" if root else sid(n - 1),
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=T0 + n * 1_000_000,
        end_time_unix_nano=T0 + n * 1_000_000 + rng.randrange(0, 20_000_000_000),
    )
    for key in rng.sample(KEYS, rng.randrange(0, 12)):
        s.attributes.append(KeyValue(key=key, value=value(rng)))
    if rng.random() < 0.3:
        op = rng.choice(["execute_tool", "chat", "invoke_agent"])
        s.attributes.append(kv("gen_ai.operation.name", op))
    if rng.random() < 0.1:
        s.attributes.append(kv("mcp.method.name", "tools/call"))
    if kind in (4, 5) and rng.random() < 0.6:
        s.attributes.append(kv("a2a.message.type", rng.choice(["task", "result", ""])))
    if kind == 2 and rng.random() < 0.6:
        s.attributes.append(kv("http.request.method", rng.choice(["GET", "POST", ""])))
    if rng.random() < 0.1:  # a duplicate key: the last one wins
        s.attributes.append(KeyValue(key="error.type", value=value(rng)))
    if rng.random() < 0.35:
        s.status.CopyFrom(
            Status(code=Status.STATUS_CODE_ERROR, message=rng.choice([*WORDS, "Timed Out"]))
        )
    elif rng.random() < 0.1:
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_OK))
    if rng.random() < 0.2:
        ev = s.events.add(name=rng.choice(["exception", "log"]))
        if rng.random() < 0.8:
            ev.attributes.append(kv("exception.type", rng.choice(["TimeoutError", "KeyError"])))
    if kind == 4:
        producers.append(s.span_id)
    if kind == 5 and producers and rng.random() < 0.5:
        s.links.add(trace_id=tid(trace), span_id=rng.choice(producers))
    return s


def requests(seed: int, count: int = 20, spans: int = 60) -> list[bytes]:
    rng = random.Random(seed)
    producers: list[bytes] = []
    out = []
    n = 1
    for r in range(count):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(kv("service.name", "svc"))
        for _ in range(rng.randrange(1, 3)):
            ss = rs.scope_spans.add()
            for _ in range(spans):
                ss.spans.append(random_span(rng, r, n, producers))
                n += 1
        out.append(req.SerializeToString())
    return out


def connector(monkeypatch: pytest.MonkeyPatch, mode: str) -> AgentMetricsConnector:
    monkeypatch.setenv("PIPELINE_NATIVE", mode)
    cfg = AgentMetricsConfig(
        sla={"default": "5s"},
        # no limit: which series overflow depends on the order spans are counted in, and the
        # scanner counts the spans it leaves to Python last
        aggregation_cardinality_limit=0,
    )
    conn = AgentMetricsConnector(settings(Kind.CONNECTOR, "agentmetrics"), cfg, Capture())
    assert (conn._scanner is not None) == (mode == "1")
    return conn


def state(conn: AgentMetricsConnector) -> dict[str, Any]:
    """The connector's metrics once every held tool call and failure is settled."""
    conn._settle(T0, T0 / 1e9, everything=True)
    out: dict[str, Any] = {"late_layers": conn.joiner.late_layers}
    for m in conn.aggregator.metrics:
        out[m.name] = {
            key: (
                s.count,
                round(s.sum, 6),
                list(s.buckets),
                len(s.exemplars),
            )
            for key, s in m.series.items()
        }
        out[m.name + "/overflowed"] = m.overflowed
    out["windows"] = {
        w: {t: [b[1:] for b in buckets] for t, buckets in win.types.items()}
        for w, win in conn.windows.items()
    }
    out["producers"] = dict(conn._producers)  # the order differs (Python spans last)
    # the workflow roots remembered for the tokens of their traces, in order (put in span
    # order on both paths), and the calls waiting for one
    out["roots"] = list(conn._wf_roots.items())
    out["token_waits"] = {t: calls for t, (_, calls) in conn._token_waits.items()}
    return out


@pytest.mark.parametrize("seed", range(6))
async def test_same_metrics_as_the_python_path(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    reqs = requests(seed)
    # one clock for both: the failure/SLO windows bucket workflows by the time they are counted
    monkeypatch.setattr(time, "time_ns", lambda: T0)
    fast, slow = connector(monkeypatch, "1"), connector(monkeypatch, "0")

    for raw in reqs:
        await fast.consume(Traces(raw))
        await slow.consume(Traces(raw))
    # exemplars are the last few measurements of a series, and the scanner counts the spans it
    # leaves to Python last: how many a series keeps is compared, not which
    a, b = state(fast), state(slow)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
    assert sum(len(m.series) for m in fast.aggregator.metrics) > 20  # the load covered a lot


def test_scan_sends_what_it_cannot_decide_to_python() -> None:
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    # decided in C: an HTTP server span and a workflow root that did not fail, stamped by the
    # workflow processor (the attributes it writes on every span mark no dialect)
    http = Span(trace_id=tid(2), span_id=sid(1), name="GET /x", kind=Span.SPAN_KIND_SERVER)
    http.attributes.append(kv("http.request.method", "GET"))
    ok_root = Span(trace_id=tid(3), span_id=sid(1), name="job")
    ok_root.attributes.append(kv("workflow.type", "research"))
    ok_root.attributes.append(kv("workflow.id", "wf-1"))
    # left to Python: a tool call (joined with its other layers), a failed span (counted once
    # per failure, where it arose), a span a dialect recognises by an attribute key (an
    # inference span), by its name or by its scope's name (a2a-sdk's spans)
    tool = Span(trace_id=tid(1), span_id=sid(2), parent_span_id=sid(1), name="execute_tool x")
    tool.attributes.append(kv("gen_ai.operation.name", "execute_tool"))
    root = Span(trace_id=tid(1), span_id=sid(1), name="workflow.research")
    root.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="délai dépassé"))
    chat = Span(trace_id=tid(1), span_id=sid(4), parent_span_id=sid(1), name="chat m")
    chat.attributes.append(kv("gen_ai.operation.name", "chat"))
    named = Span(trace_id=tid(1), span_id=sid(5), parent_span_id=sid(1), name="a2a.client.x")
    scoped = Span(trace_id=tid(1), span_id=sid(6), parent_span_id=sid(1), name="send")
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "svc"))
    first = rs.scope_spans.add()
    first.scope.name = "app"
    first.spans.extend([http, ok_root, tool, root, chat, named])
    second = rs.scope_spans.add()
    second.scope.name = "a2a-python-sdk"
    second.spans.append(scoped)
    raw = req.SerializeToString()
    series, fallback, consumers, workflows = conn._scanner.scan(raw)
    assert [raw[a:b] for a, b, *_ in fallback] == [
        s.SerializeToString() for s in (tool, root, chat, named, scoped)
    ]
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    for _, _, r0, r1, *_ in fallback:
        assert Resource.FromString(raw[r0:r1]) == rs.resource
    assert [InstrumentationScope.FromString(raw[x[4] : x[5]]).name for x in fallback] == [
        "app", "app", "app", "app", "a2a-python-sdk"
    ]  # fmt: skip
    # with each, its shape (for the Python side's memo) and its ids and times
    for item, span in zip(fallback, (tool, root, chat, named, scoped), strict=True):
        shape, trace, span_id, parent, start, end = item[6:]
        assert isinstance(shape, bytes) and span.name.encode() in shape
        assert (trace, span_id, parent) == (span.trace_id, span.span_id, span.parent_span_id)
        assert (start, end) == (span.start_time_unix_nano, span.end_time_unix_nano)
    assert {s[0] for s in series} == {4, 6, 7}  # HTTP, executions, workflow durations
    assert consumers == [] and workflows == {("research", "success"): [0.0]}


def test_take_failures_gives_a_failed_spans_status_and_exception_as_a_full_decode() -> None:
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )

    def failed(n: int, message: str, events: list[tuple[str, str, str]]) -> Span:
        span = Span(trace_id=tid(1), span_id=sid(n), parent_span_id=sid(1), name=f"step {n}")
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=message))
        for name, key, text in events:
            event = span.events.add(name=name)
            event.attributes.append(kv(key, text))
        return span

    spans = [
        # the first exception event naming each: type from the second, message from the first
        failed(
            2,
            "boom",
            [
                ("log", "exception.type", "Nope"),
                ("exception", "exception.message", "first"),
                ("exception", "exception.type", "ValueError"),
            ],
        ),
        failed(3, "", [("exception", "exception.message", "no status message")]),
        failed(4, "ünï", [("exception", "exception.type", "E")]),  # not ASCII: a full decode
        failed(5, "", []),
    ]
    ok = Span(trace_id=tid(1), span_id=sid(6), parent_span_id=sid(1), name="execute_tool x")
    ok.attributes.append(kv("gen_ai.operation.name", "execute_tool"))
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.extend([*spans, ok])
    raw = req.SerializeToString()
    _, fallback, _, _ = conn._scanner.scan(raw)
    starts = {raw[a:b]: a for a, b, *_ in fallback}
    assert len(starts) == 5
    expected = {starts[spans[0].SerializeToString()]: ("boom", "ValueError", "first"),
                starts[spans[1].SerializeToString()]: ("", "", "no status message"),
                starts[spans[3].SerializeToString()]: ("", "", "")}  # fmt: skip
    assert conn._scanner.take_failures() == expected
    assert conn._scanner.take_failures() is None  # taken
    conn._scanner.scan(ExportTraceServiceRequest().SerializeToString())
    assert conn._scanner.take_failures() is None


def test_settle_layers_settles_the_benchmarks_failed_trace_as_the_python_settle() -> None:
    """The benchmark's failed trace (a failed workflow root, an agent run, a failed tool call
    below it and one that did not fail): the two calls counted in C, the tool call's failure
    counted once (the root and the agent run propagate it), the memories written (their values
    and marks made of ``now`` and the time to live configured); a trace with a join key is
    refused with nothing done; wrong arguments raise, and so does a scanner not configured."""
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    joiner, scanner = conn.joiner, conn._scanner
    assert joiner.native is scanner
    trace = tid(7)
    failed = Layer(trace, sid(3), sid(2), FRAMEWORK, "search", server="web", mcp=True,
                   start=T0, end=T0 + 20_000_000, failed=True,
                   message="connection refused")  # fmt: skip
    ok = Layer(trace, sid(8), sid(2), FRAMEWORK, "add", tool_type="function", start=T0,
               end=T0 + 5_000_000)  # fmt: skip
    labels = (("error_type", "tool chain failed"), ("component", "workflow"),
              ("severity", "error"), ("recoverable", "false"))  # fmt: skip
    root = Failure(trace, sid(1), b"", labels, start=T0, end=T0 + 10**9)
    parents = {sid(3): sid(2), sid(8): sid(2), sid(2): sid(1), sid(1): b""}
    marked = joiner._failed_parents
    config = dict(size=100, keys_size=100, ttl=1.0, marked=marked.items, marked_size=100,
                     marked_ttl=2.0, classify=joiner.classify, timeouts=TIMEOUTS,
                     recoverable=RECOVERABLE)  # fmt: skip
    scanner.configure_settle(**config)

    def settle(layers: list[Layer], errors: list[Any]) -> int:
        done: int = scanner.settle_layers(layers, [root], parents, 0.0, errors)
        return done

    keyed = Layer(trace, sid(9), sid(2), FRAMEWORK, "x", call_id="c1")
    twin = Layer(trace, sid(10), sid(2), FRAMEWORK, "x", call_id="c1")
    session = Layer(trace, sid(11), sid(2), MCP_CLIENT, "x", rpc_id="1", session="s")
    errors: list[Any] = []
    for refused in ([failed, keyed, twin], [failed, session]):
        # two layers of one call (a call id twice), a session: the Python settle's
        assert settle(refused, errors) == -1
        assert errors == [] and not marked.items and not joiner.settled_memory()
        assert scanner.take_calls() == [] and not joiner.settled_keys_memory()
    assert settle([failed, ok], errors) == 2
    classified = joiner.classify("connection refused")
    assert errors == [(("error_type", classified or "_OTHER"), ("component", "mcp"),
                       ("severity", "error"), ("recoverable", "true" if classified in
                       RECOVERABLE else "false"))]  # fmt: skip
    assert list(joiner.settled_memory().items()) == [
        ((trace, sid(3)), (1.0, None)),
        ((trace, sid(8)), (1.0, None)),
    ]
    types = frozenset({errors[0][0][1]})
    assert list(marked.items.items()) == [
        ((trace, sid(2)), (2.0, (types, True))),  # the agent run: its failed child directly
        ((trace, sid(1)), (2.0, (types, False))),  # the root: through the agent run
    ]
    counted = {(index, tuple(values)): count for index, values, count, *_ in scanner.take_calls()}
    assert counted[(0, ("web", "search", "error", errors[0][0][1]))] == 1
    assert counted[(9, ("add", "function", "success", "none"))] == 1
    # a layer with a call id, a call of its own: settled here, its key remembered
    assert settle([keyed], []) == 1
    assert list(joiner.settled_keys_memory()) == [("call", trace, "c1")]
    with pytest.raises(TypeError):
        scanner.settle_layers([], [], {}, 1, None)
    with pytest.raises(AttributeError):
        scanner.settle_layers([object()], [], {}, 1.0, [])
    # the settings by keyword, all of them, of their types
    with pytest.raises(TypeError):
        scanner.configure_settle(*config.values())
    with pytest.raises(TypeError):
        scanner.configure_settle(**{k: v for k, v in config.items() if k != "ttl"})
    with pytest.raises(TypeError):
        scanner.configure_settle(**{**config, "marked": {}.items()})
    with pytest.raises(TypeError):
        scanner.configure_settle(**{**config, "classify": "not callable"})
    # a scanner not configured settles nothing
    bare = conn._native_scanner(1)
    for call in (lambda: bare.settle_layers([ok], [], {}, 0.0, []),
                 lambda: bare.settle_simple([], 0.0),
                 lambda: bare.settle_packed([], [], 0.0, []),
                 lambda: bare.settle_due([], collections.OrderedDict(), 0, 0.0, [])):  # fmt: skip
        with pytest.raises(RuntimeError):
            call()


def test_a_scanner_in_a_cycle_through_its_classifier_is_collected() -> None:
    """The settle configuration's classifier may be any callable: a scanner it refers back to
    is freed by the cyclic collector."""

    class Classifier:
        def __init__(self, scanner: Any) -> None:
            self.scanner = scanner

        def match(self, text: str) -> str:
            return ""

    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    classifier = Classifier(conn._native_scanner(1))
    classifier.scanner.configure_settle(size=1, keys_size=1, ttl=1.0, marked=native.Memory(1),
                                        marked_size=1, marked_ttl=1.0, classify=classifier.match,
                                        timeouts=TIMEOUTS, recoverable=RECOVERABLE)  # fmt: skip
    gone = weakref.ref(classifier)
    del classifier
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("seed", range(3))
def test_malformed_input_raises_value_error_and_never_crashes(seed: int) -> None:
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    scan = conn._scanner.scan
    raw = requests(seed, count=1, spans=20)[0]
    rng = random.Random(seed)
    refused = 0
    for _ in range(400):
        data = bytearray(raw)
        how = rng.random()
        if how < 0.4:
            data = data[: rng.randrange(len(data))]  # truncated
        else:
            for _ in range(rng.randrange(1, 4)):  # flipped bytes
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            scan(bytes(data))
        except ValueError:
            refused += 1
    assert refused > 50
    with pytest.raises(ValueError):
        scan(b"\x0a\xff\xff\xff\xff\x0f")  # a length far past the end
    with pytest.raises(ValueError):
        scan(b"\x0b")  # a group wire type (not used by OTLP)
    with pytest.raises(TypeError):
        scan("not bytes")


def a2a(n: int, kind: int, parent: int, start_ms: int, error: bool = False) -> Span:
    """An A2A span of trace 1 (id ``n``, child of ``parent``) at ``start_ms`` after T0."""
    s = Span(
        trace_id=tid(1),
        span_id=sid(n),
        parent_span_id=sid(parent),
        name="a2a",
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=T0 + start_ms * 1_000_000,
        end_time_unix_nano=T0 + start_ms * 1_000_000,
    )
    s.attributes.append(kv("a2a.message.type", "task"))
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
    return s


def req(spans: list[Span]) -> Traces:
    """One request of ``spans`` (one resource, one scope)."""
    r = ExportTraceServiceRequest()
    r.resource_spans.add().scope_spans.add().spans.extend(spans)
    return Traces(r.SerializeToString())


@pytest.mark.parametrize("mode", ["1", "0"])
async def test_producer_cache_is_bounded_oldest_first(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("PIPELINE_NATIVE", mode)
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"),
        AgentMetricsConfig(a2a_producer_cache_size=2),
        Capture(),
    )

    producer, consumer = Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER
    await conn.consume(
        req([a2a(10, producer, 1, 0), a2a(11, producer, 1, 5), a2a(12, producer, 1, 9)])
    )
    assert list(conn._producers) == [sid(11), sid(12)]  # the first one was evicted
    # a consumer of the evicted producer gives no latency; one found by link does
    late = a2a(20, consumer, 10, 50)
    linked = a2a(21, consumer, 99, 40)
    linked.links.add(trace_id=tid(1), span_id=sid(12))
    await conn.consume(req([late, linked]))
    (series,) = conn.a2a_latency.series.values()
    assert series.count == 1
    assert abs(series.sum - 0.031) < 1e-9


@pytest.mark.parametrize("mode", ["1", "0"])
@pytest.mark.parametrize("failed", [False, True])
async def test_a_producer_sent_again_keeps_its_place_in_the_cache(
    monkeypatch: pytest.MonkeyPatch, mode: str, failed: bool
) -> None:
    """The producer cache is an OrderedDict on the Python path and a C ``Memory`` with the
    scanner, put into by the scan (and by ``Scanner.put_producers`` for the producers read
    in Python: a failed span): a span id put again keeps its place (its start replaced), as
    the OrderedDict keeps it, and is not moved to the end as the Memory's own puts move it."""
    monkeypatch.setenv("PIPELINE_NATIVE", mode)
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"),
        AgentMetricsConfig(a2a_producer_cache_size=2),
        Capture(),
    )
    if mode == "1":
        require_native("_agentscan")
        assert conn._producers.__class__ is not collections.OrderedDict

    producer, consumer = Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER
    await conn.consume(req([a2a(10, producer, 1, 0, failed), a2a(11, producer, 1, 5, failed)]))
    await conn.consume(req([a2a(10, producer, 1, 7, failed)]))  # again: its place kept
    assert list(conn._producers) == [sid(10), sid(11)]
    assert conn._producers[sid(10)] == T0 + 7_000_000
    await conn.consume(req([a2a(12, producer, 1, 9, failed)]))
    assert list(conn._producers) == [sid(11), sid(12)]  # the oldest place went, 10's
    await conn.consume(req([a2a(20, consumer, 11, 50), a2a(21, consumer, 10, 60)]))
    (series,) = conn.a2a_latency.series.values()
    assert series.count == 1  # (10 forgotten)
    assert abs(series.sum - 0.045) < 1e-9


def test_put_producers_takes_a_list_of_span_id_and_start() -> None:
    require_native("_agentscan")
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"),
        AgentMetricsConfig(a2a_producer_cache_size=2),
        Capture(),
    )
    scanner = conn._scanner
    with pytest.raises(TypeError):
        scanner.put_producers((sid(1), 5))
    with pytest.raises(TypeError):
        scanner.put_producers([(sid(1), 5), ("not bytes", 6)])
    assert list(conn._producers) == [sid(1)]  # (those before the bad item put)
    long_id = bytes(range(256)) * 2  # (too long for the scratch key: the object path)
    scanner.put_producers([(long_id, 1), (sid(2), 2), (long_id, 3)])
    assert list(conn._producers) == [long_id, sid(2)]
    assert conn._producers[long_id] == 3


async def test_a_span_ending_centuries_before_it_starts_has_the_python_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by fuzzing (tests/fuzz/regressions/agentscan): the scanner took end - start as an
    int64, which wrapped to 39 years when the end came 545 years before the start; Python's
    integers give the negative duration, and now C does too."""
    monkeypatch.setattr(time, "time_ns", lambda: T0)
    # an HTTP server span: decided in C (tool calls go to Python since issue 12)
    server = Span(
        trace_id=tid(1), span_id=sid(2), parent_span_id=sid(1), name="GET /x",
        kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=(1 << 64) - 1, end_time_unix_nano=1,
    )  # fmt: skip
    server.attributes.append(kv("http.request.method", "GET"))
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.append(server)
    fast, slow = connector(monkeypatch, "1"), connector(monkeypatch, "0")
    for conn in (fast, slow):
        await conn.consume(Traces(req.SerializeToString()))
    assert state(fast) == state(slow)
    ((count, total, _, _),) = state(fast)["http_request_duration"].values()
    assert count == 1 and total < -1.8e10


@pytest.mark.parametrize(
    "given",
    [
        AnyValue(double_value=0.25),
        AnyValue(double_value=-1.0),  # not a duration: the root's own
        AnyValue(double_value=float("inf")),
        AnyValue(double_value=float("nan")),
        AnyValue(int_value=3),  # another encoding: read in Python, as Python reads it
        AnyValue(string_value="0.5"),
        AnyValue(bool_value=True),
    ],
)
async def test_a_root_carrying_its_execution_duration_counts_it_on_both_paths(
    monkeypatch: pytest.MonkeyPatch, given: AnyValue
) -> None:
    """``workflow.duration`` (written by the workflow processor on a root above its execution)
    is the workflow's duration in the histogram and the SLA windows; the HTTP server span it
    is keeps its own duration."""
    monkeypatch.setattr(time, "time_ns", lambda: T0)
    root = Span(
        trace_id=tid(1), span_id=sid(1), name="POST /compute", kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0, end_time_unix_nano=T0 + 2_000_000_000,
    )  # fmt: skip
    root.attributes.append(kv("http.request.method", "POST"))
    root.attributes.append(kv("workflow.id", "wf-1"))
    root.attributes.append(kv("workflow.type", "calculator"))
    root.attributes.append(kv("workflow.outcome", "success"))
    duration = root.attributes.add()
    duration.key = "workflow.duration"
    duration.value.CopyFrom(given)
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.append(root)
    fast, slow = connector(monkeypatch, "1"), connector(monkeypatch, "0")
    for conn in (fast, slow):
        await conn.consume(Traces(req.SerializeToString()))
    assert state(fast) == state(slow)
    ((count, total, _, _),) = state(fast)["agent_workflow_duration"].values()
    kind = given.WhichOneof("value")
    usable = kind != "bool_value" and 0 <= float(getattr(given, kind)) < float("inf")
    assert count == 1 and total == (float(getattr(given, kind)) if usable else 2.0)
    ((_, http_total, _, _),) = state(fast)["http_request_duration"].values()
    assert http_total == 2.0


def repeated_requests() -> list[bytes]:
    """Requests whose spans repeat shapes (the spans the Python side remembers by shape): the
    agent pipeline benchmark's load (tool calls, agent runs, failures) and every recorded
    source of the real libraries, several times each (fresh trace and span ids per copy)."""
    from benchmarks.agent_components import requests as bench_requests
    from benchmarks.agent_pipeline import Load
    from tests.agent_sources._otel import CORPUS, read_corpus

    out = bench_requests(Load(attrs_per_span=8, spans_per_trace=10, traces_per_request=20), 12)
    corpus = [read_corpus(p) for p in sorted(CORPUS.glob("*/*.json"))]
    for copy in range(3):
        for req in corpus:
            req = ExportTraceServiceRequest.FromString(req.SerializeToString())
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        span.trace_id = bytes([copy + 1]) + span.trace_id[1:]
                        if span.parent_span_id:
                            span.parent_span_id = bytes([copy + 1]) + span.parent_span_id[1:]
                        span.span_id = bytes([copy + 1]) + span.span_id[1:]
            out.append(req.SerializeToString())
    return out


async def test_spans_read_by_shape_count_as_when_read_in_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scanner's shapes let the Python side read a repeated tool-call layer or parent link
    once: every count, bucket, join and failure stays that of the pure-Python path (which
    parses every span), and the memo is used."""
    monkeypatch.setattr(time, "time_ns", lambda: T0)
    fast, slow = connector(monkeypatch, "1"), connector(monkeypatch, "0")
    hits = 0
    read = fast._read_span
    calls = 0

    def counting(*args: Any, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        fed: bool = read(*args, **kwargs)
        return fed

    monkeypatch.setattr(fast, "_read_span", counting)
    reqs = repeated_requests()
    for raw in reqs:
        fallback = fast._scanner.scan(raw)[1]
        # (a trace's spans packed for the join's common case are not read in Python at all)
        hits += sum(len(x[1]) // 40 if len(x) == 4 else 1 for x in fallback)
        await fast.consume(Traces(raw))
        await slow.consume(Traces(raw))
    a, b = state(fast), state(slow)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
    assert sum(len(memo) for memo in fast._shapes.values()) > 0
    assert hits - calls > 500  # spans left to Python and read by their shape


async def test_a_scope_that_does_not_decode_is_refused_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scanner does not decode scope names; the shapes' memo is per scope, and a scope
    that does not decode leaves its spans to be read one by one, which refuses the request as
    the pure-Python path does (nothing counted)."""
    from google.protobuf.message import DecodeError

    monkeypatch.setattr(time, "time_ns", lambda: T0)
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.scope.name = "zzzz"
    tool = Span(trace_id=tid(1), span_id=sid(2), parent_span_id=sid(1), name="execute_tool x")
    tool.attributes.append(kv("gen_ai.operation.name", "execute_tool"))
    tool.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    ss.spans.append(tool)
    raw = req.SerializeToString().replace(b"zzzz", b"\xff\xfe\xfd\xfc")
    for mode in ("1", "0"):
        conn = connector(monkeypatch, mode)
        with pytest.raises((DecodeError, ValueError)):
            await conn.consume(Traces(raw))
        assert not conn.joiner.pending and not any(m.series for m in conn.aggregator.metrics)


# -- span shapes: the usual attribute entry read without the walk --------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _walk(data: bytes) -> list[tuple[int, int, Any]]:
    """The fields of a message as pbwire.h's next_field reads them (ValueError as it refuses)."""
    fields: list[tuple[int, int, Any]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        value, shift = 0, 0
        while i < len(data) and shift < 64:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
        raise ValueError("varint")

    while i < len(data):
        tag = varint()
        if tag > 0xFFFFFFFF or tag >> 3 == 0:
            raise ValueError("field number")
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            fields.append((number, wire, varint()))
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if len(data) - i < size:
                raise ValueError("truncated")
            fields.append((number, wire, int.from_bytes(data[i : i + size], "little")))
            i += size
        elif wire == 2:
            n = varint()
            if n > len(data) - i:
                raise ValueError("length")
            fields.append((number, wire, data[i : i + n]))
            i += n
        else:
            raise ValueError("wire type")
    return fields


def _reference_shape(span: bytes, keys: set[bytes], presence: set[bytes]) -> bytes | None:
    """span_shape of _agentscan.c, by its definition (every attribute entry walked)."""
    out = bytearray()

    def put(tag: bytes, data: bytes) -> None:
        out.extend(tag + _varint(len(data)) + data)

    name = parent = status = b""
    kind = 0
    try:
        fields = _walk(span)
    except ValueError:
        return None
    for number, wire, data in fields:
        if number == 4 and wire == 2:
            parent = data
        elif number == 5 and wire == 2:
            name = data
        elif number == 6 and wire == 0:
            kind = data
        elif number == 15 and wire == 2:
            status = data
        elif number == 9 and wire == 2:
            try:
                entry = _walk(data)
            except ValueError:
                return None
            key = None
            for n, w, v in entry:
                if n == 1 and w == 2:
                    if not v.isascii():
                        return None
                    key = v
            if key in keys:
                if key in presence:
                    put(b"p", key)
                else:
                    put(b"a", data)
    put(b"k", kind.to_bytes(8, "little") + bytes([parent == b""]))
    put(b"n", name)
    put(b"s", status)
    return bytes(out)


def _odd_entry(rng: random.Random, key: bytes) -> bytes:
    """An attribute entry (KeyValue) in one of the encodings a sender may use, usual or not."""
    text = bytes(
        rng.choice(b"abcxyz") for _ in range(rng.choice([0, 3, 100, 126, 127, 200, 17000]))
    )
    value = _ld(1, text)  # AnyValue.string_value
    how = rng.randrange(12)
    if how == 0:
        return _ld(1, key)  # the key alone
    if how == 1:
        return _ld(2, value) + _ld(1, key)  # the value first
    if how == 2:
        return _ld(1, key) + _ld(1, key + b"2") + _ld(2, value)  # two keys: the last one counts
    if how == 3:
        return _ld(1, key) + _ld(2, value) + b"\x18\x01"  # an unknown varint field after
    if how == 4 and len(key) < 128:  # a two-byte length where one would do (protobuf reads it)
        return b"\x0a" + bytes([0x80 | len(key), 0]) + key + _ld(2, value)
    if how == 5 and len(key) < 128:
        value = _ld(1, text[:60])
        return b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([0x80 | len(value), 0]) + value
    if how == 6:
        return _ld(1, key) + _ld(2, value)[:-1]  # cut short: not well-formed
    if how == 7:
        return _ld(1, key) + b"\x12" + bytes([0xFF])  # a length that never ends
    if how == 8:
        return _ld(1, "clé".encode()) + _ld(2, value)  # a key that is not ASCII
    if how == 9:
        return _ld(1, key) + _ld(2, value) + _ld(2, value)  # the value twice
    return _ld(1, key) + _ld(2, value)  # the usual encoding


def test_span_shapes_of_odd_attribute_entries_are_those_of_the_walk() -> None:
    """span_shape reads the usual attribute entry (key, then its value, filling the entry)
    without walking it; any other encoding (the key alone, the value first, two keys,
    unknown fields, overlong or multi-byte lengths, an entry cut short or with a key that is
    not ASCII) gives the shape of the full walk: the same bytes, or None for every entry the
    walk refuses; so do spans of more entries than the scan keeps of a span."""
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    keys = set(conn._shape_keys())
    presence = set(conn._presence_keys())
    assert presence and keys - presence
    choices = [*sorted(keys), b"x.other", b"service.peer", b"a" * 130]
    rng = random.Random(2222)
    compared = none = usual = many = 0
    tool = _ld(1, b"gen_ai.operation.name") + _ld(2, _ld(1, b"execute_tool"))
    for _ in range(1500):
        entries = [_odd_entry(rng, rng.choice(choices)) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.3:
            entries = [_ld(1, rng.choice(choices)) + _ld(2, _ld(1, b"v")) for _ in range(3)]
        if rng.random() < 0.15:  # more entries than the scan keeps of a span (64): walked again
            pad = [
                _ld(1, rng.choice(choices)) + _ld(2, _ld(1, b"v"))
                for _ in range(rng.randint(60, 70))
            ]
            entries = pad + entries
        body = b"".join(_ld(9, e) for e in entries)
        span = (_ld(1, tid(1)) + _ld(2, sid(2)) + _ld(4, sid(1)) + _ld(5, b"execute_tool t")
                + b"\x30\x03" + _ld(9, tool) + body
                + _ld(15, b"\x18\x02" if rng.random() < 0.5 else b""))  # fmt: skip
        raw = _ld(1, _ld(2, _ld(2, span)))
        try:
            fallback = conn._scanner.scan(raw)[1]
        except ValueError:
            continue  # (an entry of a key the scan reads, not well-formed: refused whole)
        assert len(fallback) == 1
        expected = _reference_shape(span, keys, presence)
        assert fallback[0][6] == expected, (entries, fallback[0][6], expected)
        compared += 1
        none += expected is None
        usual += expected is not None and all(e[:1] == b"\x0a" for e in entries)
        many += len(entries) + 1 > 64
    assert compared > 1000 and none > 100 and usual > 300, (compared, none, usual)
    assert many > 50, many


ROOT_MESSAGES = [
    "",
    "boom",
    "Timed Out",
    "request CANCELLED",
    "deadline",
    "ünï",
    "x" * 70_000,
    "a\x00b",
]
ROOT_TYPES = ["", "TimeoutError", "KeyError", "ünï", "E" * 100_000, "Cancel\x00led"]


def failed_root(rng: random.Random, trace: int) -> Span:
    """A failed root span of a few repeating shapes with hostile values: odd or huge status
    messages and exception types, non-ASCII evidence, missing or odd workflow fields."""
    span = Span(
        trace_id=tid(trace),
        span_id=sid(trace * 10),
        name=rng.choice(["workflow.research", "workflow.", "run", "ü"]),
        kind=rng.choice([0, 1, 1, 2, 3, 4, 5]),  # type: ignore[arg-type]
        start_time_unix_nano=T0 + trace,
        end_time_unix_nano=T0 + trace + rng.choice([0, 3_000_000_000, -5]),
    )
    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=rng.choice(ROOT_MESSAGES)))
    pick = rng.random
    if pick() < 0.6:
        span.attributes.append(kv("workflow.id", f"wf-{trace}"))  # (a run id: not in the shape)
    for key, values in (
        ("workflow.type", ["research", "", "ü", 7]),
        ("workflow.name", ["named", ""]),
        ("workflow.outcome", ["failed", "timeout", "bogus", "", 1]),
        ("workflow.complexity_tier", ["high", ""]),
        ("workflow.agent.id", ["agent-1", ""]),
        ("gen_ai.agent.id", ["agent-2", ""]),
        ("workflow.duration", [2.5, -1.0, float("inf"), 3, "4.5"]),
        ("error.type", ["RateLimitError", "", "timeout", 500, "ünï"]),
        ("error.severity", ["warning", ""]),
        ("error.recoverable", ["true", ""]),
        ("http.response.status_code", ["503", "429", "4290", "5", "", 503, "\uff15\uff10\uff10"]),
        ("http.status_code", ["502", ""]),
        ("workflow.secondary_root", [True]),
    ):
        if pick() < (0.04 if key == "workflow.secondary_root" else 0.3):
            span.attributes.append(kv(key, rng.choice(values)))
    for _ in range(rng.choice([0, 1, 1, 2])):
        event = span.events.add(name=rng.choice(["exception", "exception", "log"]))
        if pick() < 0.8:
            event.attributes.append(kv("exception.type", rng.choice(ROOT_TYPES)))
        if pick() < 0.5:
            event.attributes.append(kv("exception.message", rng.choice(ROOT_MESSAGES)))
    return span


def counted(conn: AgentMetricsConnector) -> dict[str, Any]:
    """The executions, workflow durations and errors a connector counted, and its windows'
    totals."""
    out: dict[str, Any] = {}
    for metric in (conn.executions, conn.workflow_duration, conn.errors):
        for (_resource, attrs), s in metric.series.items():
            buckets = tuple(getattr(s, "buckets", ()) or ())
            out[f"{metric.name}{attrs}"] = (s.count, round(getattr(s, "sum", 0.0), 6), buckets)
    for horizon, types in conn._window_state().items():  # (the buckets' times are the clock's)
        for wf_type, rows in types.items():
            out[f"window {horizon} {wf_type}"] = [sum(row[i] for row in rows) for i in (1, 2, 3)]
    return out


def test_failed_workflow_roots_are_read_in_c_as_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed roots of repeating shapes with hostile values (huge or non-ASCII status messages
    and exception types, NULs, missing or odd workflow fields, every span kind), each with a
    few spans below it: the C scanner's reading of them (take_roots) counts as the pure-Python
    path's, and most are read from it or counted by it (failed_root in the C source; the first
    of a shape and exception type in Python)."""
    import asyncio

    rng = random.Random(1414)
    templates = [failed_root(rng, 0) for _ in range(40)]  # (shapes that repeat)
    reqs = []
    for r in range(150):
        req = ExportTraceServiceRequest()
        ss = req.resource_spans.add().scope_spans.add()
        for t in range(r * 4 + 1, r * 4 + 5):
            if rng.random() < 0.8:
                root = Span()
                root.CopyFrom(rng.choice(templates))
                root.trace_id, root.span_id = tid(t), sid(t * 10)
                root.start_time_unix_nano += t
                root.end_time_unix_nano += rng.choice([t, 2 * t])
                for a in root.attributes:
                    if a.key == "workflow.id":
                        a.value.string_value = f"wf-{t}"
            else:
                root = failed_root(rng, t)
            child = Span(trace_id=root.trace_id, span_id=sid(t * 10 + 1),
                         parent_span_id=root.span_id, name="step")  # fmt: skip
            ss.spans.extend([root, child])
        reqs.append(req.SerializeToString())
    read: list[int] = []
    failed_root_reading = AgentMetricsConnector._failed_root

    def spy(self: AgentMetricsConnector, *args: Any) -> None:
        read.append(1)
        failed_root_reading(self, *args)

    monkeypatch.setattr(AgentMetricsConnector, "_failed_root", spy)
    fallback_reading = AgentMetricsConnector._read_fallback

    def spy_fallback(
        self: AgentMetricsConnector, raw: Any, fallback: list[Any], *args: Any
    ) -> None:
        # (a failed root the scanner counted itself: its failure handed over, a 9-tuple)
        read.extend(1 for item in fallback if len(item) == 9)
        fallback_reading(self, raw, fallback, *args)

    monkeypatch.setattr(AgentMetricsConnector, "_read_fallback", spy_fallback)

    async def main() -> dict[str, Any]:
        conn = AgentMetricsConnector(
            settings(Kind.CONNECTOR, "agentmetrics"),
            AgentMetricsConfig(tool_call_join={"window": "0s"}),
            Capture(),
        )
        for raw in reqs:
            await conn.consume(Traces(raw))
        await conn.shutdown()
        return counted(conn)

    monkeypatch.delenv("PIPELINE_NATIVE", raising=False)
    c_counts = asyncio.run(main())
    from_c = len(read)
    monkeypatch.setenv("PIPELINE_NATIVE", "0")
    assert asyncio.run(main()) == c_counts
    assert len(read) == from_c  # (the Python path never takes the scanner's reading)
    assert from_c > 80, from_c  # of the 600 roots (112): the rest Python's (kinds, first shapes, ü)
    assert sum(1 for k in c_counts if k.startswith("agent_workflow_executions")) > 10


def test_take_roots_gives_a_failed_workflow_roots_reading() -> None:
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    root = Span(trace_id=tid(1), span_id=sid(1), name="workflow.research",
                kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=T0,
                end_time_unix_nano=T0 + 2_000_000_000)  # fmt: skip
    root.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="took too long: TIMED OUT"))
    root.events.add(name="exception").attributes.append(kv("exception.type", "E" * 100_000))
    root.attributes.append(kv("http.status_code", "429"))
    server = Span(
        trace_id=tid(2), span_id=sid(2), name="workflow.research", kind=Span.SPAN_KIND_SERVER
    )
    server.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR))  # (an HTTP server: Python's)
    odd = Span(trace_id=tid(3), span_id=sid(3), name="workflow.x", kind=Span.SPAN_KIND_INTERNAL)
    odd.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="ünï"))  # (not ASCII)
    plain = Span(
        trace_id=tid(4), span_id=sid(4), name="run", kind=Span.SPAN_KIND_INTERNAL
    )  # (no workflow root)
    plain.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR))
    bare = Span(trace_id=tid(5), span_id=sid(5), name="workflow.", kind=Span.SPAN_KIND_INTERNAL)
    bare.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR))
    bare.attributes.append(kv("error.severity", ""))
    bare.attributes.append(kv("workflow.duration", 1.5))
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.extend([root, server, odd, plain, bare])
    raw = req.SerializeToString()
    _, fallback, _, _ = conn._scanner.scan(raw)
    assert len(fallback) == 5
    starts = {raw[a:b]: a for a, b, *_ in fallback}
    assert conn._scanner.take_roots() == {
        starts[root.SerializeToString()]: ("research", "unknown", "timeout", "unknown", 2.0,
                                           "E" * 100_000, "critical", "true"),
        starts[bare.SerializeToString()]: ("unknown", "unknown", "failed", "unknown", 1.5,
                                           "_OTHER", "", "false"),
    }  # fmt: skip
    assert conn._scanner.take_roots() is None  # taken


def test_span_attrs_reads_an_attribute_as_the_span_view() -> None:
    """span_attrs (the ids of a span remembered by shape) gives the encoded value of a key as
    plugins._spanview.SpanView's attribute map does (the last entry of a key wins, an entry
    without a value gives b"", a key absent None), for entries in every encoding; a span that
    is not well-formed is refused with ValueError (a full decode refuses it too)."""
    from google.protobuf.message import DecodeError

    from plugins._spanview import SpanView

    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    scanner = conn._scanner
    wanted = [b"gen_ai.tool.call.id", b"jsonrpc.request.id", b"x.other", b"a" * 130, b""]
    rng = random.Random(3333)
    compared = found = refused = 0
    for _ in range(3000):
        entries = [_odd_entry(rng, rng.choice(wanted)) for _ in range(rng.randint(0, 5))]
        body = b"".join(_ld(9, e) for e in entries)
        span = (_ld(1, tid(1)) + _ld(2, sid(2)) + _ld(5, b"execute_tool t") + b"\x30\x03"
                + body + _ld(15, b"\x18\x02"))  # fmt: skip
        if rng.random() < 0.05:
            span = span[: rng.randrange(len(span) + 1)]  # cut anywhere
        pad = bytes(rng.randrange(4))
        raw = pad + span + bytes(rng.randrange(4))
        first, second = rng.choice(wanted), rng.choice([*wanted, None])
        try:
            attrs = SpanView.FromString(span).attributes
        except DecodeError:
            attrs = None
        try:
            got = scanner.span_attrs(raw, len(pad), len(pad) + len(span), first, second)
        except ValueError:
            assert attrs is None  # refused: a full decode refuses it too
            refused += 1
            continue
        assert attrs is not None, (entries, span)  # (what a full decode refuses, refused)
        expected = (
            attrs.get(first.decode()),
            attrs.get(second.decode()) if second is not None else None,
        )
        assert got == expected, (entries, first, second, got, expected)
        compared += 1
        found += got[0] is not None
    assert compared > 1500 and found > 400 and refused > 500, (compared, found, refused)
    with pytest.raises(ValueError):
        scanner.span_attrs(b"abc", 2, 5, b"k", None)
    with pytest.raises(TypeError):
        scanner.span_attrs(b"abc", 0, 3, "k", None)


# -- Memory: the joiner's memories in C (calls.py _Memory.items) --------------------------------
class _Raises:
    """``pytest.raises`` for :func:`memory_ops`, which checks a refusal per operation (thousands
    per input, under tracemalloc in the fuzz corpus's leak check): pytest's builds far more."""

    __slots__ = ("error",)

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        if kind is None:
            raise AssertionError(f"DID NOT RAISE {self.error.__name__}")
        return issubclass(kind, self.error)


def memory_ops(data: bytes) -> None:
    """The operations ``data`` spells (a byte each, then a key byte) on a ``Memory`` and on the
    Python twin's ``OrderedDict`` trimmed to the size after each put (as calls.py keeps it):
    the same answers, entries and order after each; keys of each plain kind (bytes, str, int,
    None, tuples of them: two keys of different types never equal), hash-colliding ints
    (-1 and -2 hash alike), a key that is not plain refused with ``TypeError``."""
    import collections

    size = data[0] % 9 if data else 3
    mem = native.Memory(size)
    twin: collections.OrderedDict[Any, Any] = collections.OrderedDict()
    kinds = [
        lambda b: (bytes([b % 16]) * 16, bytes([b % 5]) * 8),
        lambda b: ("call", b"t" * 16, str(b % 7)),
        lambda b: ("rpc", "s", b % 6, "tool"),
        lambda b: bytes([b % 11]),
        lambda b: str(b % 4),
        lambda b: -1 - b % 2,  # (hash(-1) == hash(-2))
        lambda b: None,
        lambda b: (b % 3, (b % 2) * 2**70),  # (a big int)
        # keys alike but not equal: a non-ASCII str, long leaves, empty leaves, the same
        # bytes as bytes and as str, the same concatenation split otherwise
        lambda b: ("call", b"t" * 16, "é" * (b % 3)),
        lambda b: (b"x" * (240 + b % 4 * 4), "y" * (b % 3)),
        lambda b: (b"ab"[: b % 3], b"ab"[b % 3 :]) if b & 4 else ("ab"[: b % 3], "ab"[b % 3 :]),
        lambda b: (str(b % 3),) if b & 1 else (str(b % 3).encode(),),
        # (keys are held encoded: str of each width, ints at their byte boundaries, huge
        # ints of either sign, the same text as str and bytes of each width)
        lambda b: ("ā" * (b % 3), "😀" * (b % 2), "x\x00"[: b % 3]),
        lambda b: (-(1 << (b % 70)), (1 << (8 * (b % 4))) - 1 - b % 2, 127 + b % 3),
        lambda b: (-1 if b & 1 else 1) * 2 ** (1000 + b % 3),
        lambda b: ("é".encode("utf-16-le"),) if b & 1 else ("é".encode("latin-1"),),
        # keys whose hashes share their low bits (an int hashes to itself): one run of slots
        # from the same first slot, searched and shifted back on deletion by their hashes
        lambda b: (b % 8) << 40,
    ]
    clock = 0.0
    for at in range(1, len(data) - 1, 2):
        op, b = data[at], data[at + 1]
        key = kinds[(op >> 4) % len(kinds)](b)
        clock += 1.0
        what = op % 9
        if what <= 2:  # put (the newest; trimmed)
            value = (clock + b % 5, b)
            mem[key] = value
            twin[key] = value
            twin.move_to_end(key)
            while len(twin) > size:
                twin.popitem(last=False)
        elif what == 3 and key in twin:
            mem.move_to_end(key)
            twin.move_to_end(key)
        elif what == 4:
            if twin:
                last = bool(b & 1)
                assert mem.popitem(last=last) == twin.popitem(last=last)
            else:
                with _Raises(KeyError):
                    mem.popitem(last=False)
        elif what == 5:  # prune (calls.py _Memory.prune)
            now = clock - b % 8
            mem.prune(now)
            while twin:
                _key, (expiry, _value) = next(iter(twin.items()))
                if expiry > now:
                    break
                twin.popitem(last=False)
        elif what == 6:
            if key in twin:
                del mem[key]
                del twin[key]
            else:
                with _Raises(KeyError):
                    del mem[key]
        elif what == 7:  # not a plain key: refused, nothing changed
            for odd in ([b], (1.0,), ((b,),), True):
                with _Raises(TypeError):
                    mem[odd] = (0.0, None)
                with _Raises(TypeError):
                    _ = odd in mem
        elif b == 0:
            mem.clear()
            twin.clear()
        elif b == 1:  # a smaller bound: the oldest dropped now
            size = (op >> 4) % 4
            mem.size = size
            while len(twin) > size:
                twin.popitem(last=False)
        assert (key in mem) == (key in twin)
        assert mem.get(key) == twin.get(key) and mem.get(key, 7) == twin.get(key, 7)
        assert len(mem) == len(twin) and mem.size == size
        assert mem.items() == list(twin.items()) and list(mem) == list(twin) == mem.keys()
    assert sys.getsizeof(mem) > 0


def root_memory_ops(data: bytes) -> None:
    """The operations ``data`` spells (a byte each, then a key byte) on a ``RootMemory`` (the
    connector's memory of workflow roots, a C table keyed by the raw trace id) and on its twin
    (connector.py ``RootMemory``): the same answers, entries and order after each. Trace ids
    of 16 bytes drawn from the input (all zero, alike but for one byte or one half) and of
    other lengths (empty, 8, 15, 17, 300 bytes: the edge refuses them, the connector alone
    not), bounds of 0 to 8 and unbounded, a key that is not bytes refused with TypeError."""
    from plugins.agentmetricsconnector.connector import RootMemory

    size = data[0] % 9 if data else 3
    mem, twin = native.RootMemory(size), RootMemory(size)
    kinds = [
        lambda b: bytes([b % 4]) * 16,  # (all zero, all one byte)
        lambda b: bytes(15) + bytes([b % 8]),  # (alike but for the last byte)
        lambda b: bytes([b % 3]) * 8 + bytes(8),  # (one half alike)
        lambda b: data[b % len(data) :][:16].ljust(16, b"\0"),
        lambda b: bytes([b % 2]) * (0, 8, 15, 17, 300)[b % 5],
    ]
    for at in range(1, len(data) - 1, 2):
        op, b = data[at], data[at + 1]
        trace = kinds[(op >> 4) % len(kinds)](b)
        what = op % 8
        if what <= 3:  # put (the newest; trimmed)
            value = (f"t{b % 5}", f"a{b % 3}")
            mem.put(trace, value)
            twin.put(trace, value)
        elif what == 4:  # not a trace id: refused, nothing changed
            for odd in ((trace,), trace.hex(), b, None, bytearray(trace)):
                with _Raises(TypeError):
                    mem.put(odd, ("t", "a"))
                with _Raises(TypeError):
                    _ = odd in mem
        elif what == 5:
            size = (b % 10) if b % 10 < 9 else 1 << 62
            mem.size = twin.size = size
        elif what == 6 and b < 8:
            mem.clear()
            twin.clear()
        assert (trace in mem) == (trace in twin)
        assert mem.get(trace) == twin.get(trace) and mem.get(trace, 7) == twin.get(trace, 7)
        assert len(mem) == len(twin) and mem.size == twin.size
        if len(twin) <= 16 or at % 64 == 1:  # (unbounded, it grows: its entries now and then)
            assert mem.items() == list(twin.items()) and mem.keys() == list(twin)
    assert mem.items() == list(twin.items()) and mem.keys() == list(twin)
    assert sys.getsizeof(mem) > 0


@pytest.mark.parametrize("seed", range(20))
def test_root_memory_keeps_what_its_twin_keeps(seed: int) -> None:
    rng = random.Random(seed)
    root_memory_ops(bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 50, 400, 2000]))))


@pytest.mark.parametrize("seed", range(40))
def test_memory_keeps_what_the_trimmed_ordered_dict_keeps(seed: int) -> None:
    rng = random.Random(seed)
    memory_ops(bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 50, 400, 2000]))))


def test_memory_finds_equal_keys_built_apart_and_keeps_alike_keys_apart() -> None:
    # a key found by another object equal to it (built apart: its hash not cached), keys
    # alike in their bytes (the same concatenation, bytes and str) kept apart, in order
    mem = native.Memory(64)
    keys = [
        (bytes(16), bytes(8)),
        ("call", bytes(16), "pyd_ai_" + "0" * 34),
        ("rpc", "ab" * 16, "7", "tool"),
        ("rpc", "é", "7", "tool"),
        (b"x" * 251,),
        (b"x" * 250, b""),
        (b"x" * 300, "y"),
        ("ab", ""),
        ("a", "b"),
        (b"ab", b""),
        (b"a", b"b"),
        (),
        ("",),
        (b"",),
        ("a", 1),
        ("a", None),
    ]
    for n, key in enumerate(keys):
        mem[key] = (float(n), None)
    assert len(mem) == len(keys)
    for n, key in enumerate(keys):
        copy = tuple(
            bytes(bytearray(x)) if isinstance(x, bytes) else "".join(x) if isinstance(x, str) else x
            for x in key
        )
        assert copy == key and copy in mem and mem[copy] == (float(n), None)
        mem.move_to_end(copy)
    assert mem.keys() == keys


def test_memory_of_negative_size_keeps_nothing_and_frees_its_references() -> None:
    mem = native.Memory(-3)
    mem[b"k"] = (0.0, None)
    assert len(mem) == 0 and mem.size == 0
    mem = native.Memory(2)
    value = (1.0, object())
    before = sys.getrefcount(value)
    for k in range(5):
        mem[(b"t", bytes([k]))] = value
    assert sys.getrefcount(value) == before + 2
    mem.clear()
    assert sys.getrefcount(value) == before
    with pytest.raises(TypeError):
        mem.prune("now")
    mem[b"x"] = "not a tuple"
    with pytest.raises(TypeError):
        mem.prune(2.0)
    cycle: list[Any] = []
    mem[b"y"] = (0.0, cycle)
    cycle.append(mem)  # (collected: the memory is tracked by the cyclic GC)
    del mem, cycle


def test_the_connector_keeps_the_joiners_memories_in_c() -> None:
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    joiner = conn.joiner
    assert joiner.native is not None
    for memory in (joiner._settled_layers, joiner._settled_keys, joiner._failed_parents):
        assert isinstance(memory.items, native.Memory) and memory.items.size == memory.size


# -- a merged payload's parts, scanned where they are ------------------------------------------
def odd_ids_request() -> bytes:
    """An HTTP server span and an A2A consumer whose ids are longer than OTLP's (their exemplars
    are kept as offsets into the request, not inline)."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    http = ss.spans.add(trace_id=b"T" * 20, span_id=b"S" * 12, name="GET /x", kind=2)
    http.attributes.append(kv("http.request.method", "GET"))
    http.end_time_unix_nano = 5_000_000
    consumer = ss.spans.add(trace_id=b"U" * 18, span_id=b"V" * 9, name="recv", kind=5)
    consumer.attributes.append(kv("a2a.message.type", "task"))
    return req.SerializeToString()


def scan_all(parts: bytes | tuple[bytes, ...]) -> tuple[Any, ...]:
    """What a fresh scanner gives for ``parts``: the scan and its failures, roots and late
    layers."""
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    scanner = conn._scanner
    return scanner.scan(parts), scanner.take_failures(), scanner.take_roots(), scanner.take_late()


@pytest.mark.parametrize("seed", range(3))
def test_a_merged_payloads_parts_scan_as_their_concatenation(seed: int) -> None:
    # requests of several resources and scopes, failed spans, A2A pairs, ids of odd lengths
    reqs = [*requests(seed, count=6), odd_ids_request(), *requests(seed + 10, count=3)]
    joined = b"".join(reqs)
    parts = tuple(reqs)
    expected = scan_all(joined)
    assert scan_all(parts) == expected
    assert expected[0][0] and expected[0][1]  # series and spans left to Python
    # the offsets are into the concatenation: the fallback spans, resources and scopes read
    # from the parts without joining them
    view = JoinedParts(parts)
    for start, end, r0, r1, s0, s1, *_ in expected[0][1]:
        assert view[start:end] == joined[start:end]
        assert view[r0:r1] == joined[r0:r1] and view[s0:s1] == joined[s0:s1]
    # empty parts, one part per resource_spans field, every part one byte longer than its own
    # fields (refused: a part is a request of its own)
    assert scan_all((b"", *parts, b"")) == expected
    assert scan_all(()) == scan_all(b"")
    fields = [r[i:j] for r in reqs for i, j in top_level_fields(r)]
    assert scan_all(tuple(fields)) == expected
    with pytest.raises(ValueError):
        scan_all((reqs[0][:-1], reqs[0][-1:], *reqs[1:]))  # a field cut between two parts
    with pytest.raises(TypeError):
        scan_all((reqs[0], "text"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        scan_all(list(parts))  # type: ignore[arg-type]


def top_level_fields(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of each top-level field of an encoded request (all length-delimited)."""
    out = []
    at = 0
    while at < len(raw):
        start = at
        at += 1  # the tag (field 1, wire type 2: one byte)
        n = shift = 0
        while True:
            b = raw[at]
            at += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        at += n
        out.append((start, at))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_corrupt_parts_scan_as_their_concatenation_or_are_refused(seed: int) -> None:
    # a part whose own framing is whole (every part of a merge is a request a receiver
    # accepted) scans as it would joined; one that is not is refused, never read past its end
    reqs = requests(seed, count=4, spans=15)
    rng = random.Random(seed)
    agreed = refused = 0
    for _ in range(60):
        parts = list(reqs)
        i = rng.randrange(len(parts))
        data = bytearray(parts[i])
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        parts[i] = bytes(data)
        try:
            got = scan_all(tuple(parts))
        except ValueError:
            refused += 1
            continue
        assert got == scan_all(b"".join(parts))
        agreed += 1
    assert agreed and refused


async def test_the_connector_counts_a_merged_payload_as_its_joined_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the scan of the parts, and the spans it leaves to Python read from them (their resource
    # and scope, and the join ids of a span remembered by shape): the same metrics, exemplars
    # included, as the joined request; on both paths
    monkeypatch.setattr(time, "time_ns", lambda: T0)
    reqs = [*requests(3, count=8), odd_ids_request()]
    for mode in ("1", "0"):
        merged, whole = connector(monkeypatch, mode), connector(monkeypatch, mode)
        for _ in range(2):  # the second time, shapes read before are remembered
            await merged.consume(Traces.merge([Traces(r) for r in reqs]))
            await whole.consume(Traces(b"".join(reqs)))
        a, b = state(merged), state(whole)
        assert a == b
        assert [[s.exemplars for s in m.series.values()] for m in merged.aggregator.metrics] == [
            [s.exemplars for s in m.series.values()] for m in whole.aggregator.metrics
        ]


def workflow_roots(types: int, agents: int, trace0: int) -> tuple[bytes, list[Any], list[Any]]:
    """A request of workflow roots that did not fail (counted in C), every (type, outcome) and
    (type, agent) pair several times, interleaved: the request, its workflows in span order
    ((type, outcome, duration)) and its roots ((trace id, (type, agent)))."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    outcomes = ("success", "failed", "timeout", "cancelled")
    workflows, roots = [], []
    n = 0
    for rep in range(3):
        for t in range(types):
            for a in range(agents):
                n += 1
                outcome = outcomes[(t + a + rep) % 4]
                span = ss.spans.add(
                    trace_id=tid(trace0 + n),
                    span_id=sid(n),
                    name=f"workflow.type{t}",
                    start_time_unix_nano=T0,
                    end_time_unix_nano=T0 + n * 1_000_000,
                )
                span.attributes.extend(
                    [
                        kv("workflow.type", f"type{t}"),
                        kv("workflow.outcome", outcome),
                        kv("workflow.agent.id", f"agent-{a}"),
                    ]
                )
                workflows.append((f"type{t}", outcome, round(n / 1000, 9)))
                roots.append((tid(trace0 + n), (f"type{t}", f"agent-{a}")))
    return req.SerializeToString(), workflows, roots


def test_workflows_and_roots_of_many_pairs_are_each_their_own() -> None:
    """The scan's workflows ((type, outcome) -> durations) and the roots it puts ((type, agent)
    of each trace) for more pairs than its memos of them hold (count_execution's, by the
    objects' identity; remember_root's shared tuples), in a scanner that scans again."""
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    scanner = conn._scanner
    for trace0, types, agents in ((0, 9, 5), (10_000, 2, 2), (20_000, 13, 4)):
        raw, workflows, roots = workflow_roots(types, agents, trace0)
        _series, fallback, _consumers, got = scanner.scan(raw)
        assert fallback == []
        want: dict[tuple[str, str], list[float]] = {}
        for wf_type, outcome, duration in workflows:
            want.setdefault((wf_type, outcome), []).append(duration)
        assert {k: [round(d, 9) for d in v] for k, v in got.items()} == want
        assert list(got) == list(want)
        memory = native.RootMemory(1 << 20)
        scanner.put_roots(memory)
        assert memory.items() == roots


def test_a_span_named_with_a_defer_prefix_is_left_to_python() -> None:
    """A span whose name starts with a prefix of the dialects' (defer_names) goes to Python, one
    whose name only starts with the same byte, or is empty, is counted in C."""
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    prefixes = conn._defer_names
    assert prefixes and b"" not in prefixes
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    want = []
    names = [p + b"tail" for p in prefixes] + [p[:1] + b"\x01" for p in prefixes] + [b""]
    for n, name in enumerate(names, 1):
        span = ss.spans.add(trace_id=tid(n), span_id=sid(n), name=name.decode(), kind=2)
        span.attributes.append(kv("http.request.method", "GET"))
        if name.startswith(prefixes):
            want.append(n)
    assert want and len(want) < len(names)
    raw = req.SerializeToString()
    _series, fallback, _consumers, _workflows = conn._scanner.scan(raw)
    left = [Span.FromString(raw[item[0] : item[1]]).span_id for item in fallback]
    assert left == [sid(n) for n in want]


def bench_requests(seed: int, count: int) -> list[bytes]:
    """``count`` requests of the agent benchmark (``benchmarks.agent_pipeline``: 20 workflow
    traces of 10 spans, tool calls with call ids, A2A pairs, every 5th workflow failed), fresh
    trace ids."""
    from benchmarks.agent_pipeline import Load, build_template, fill, marker_offsets

    load = Load()
    rng = random.Random(seed)
    out = []
    for variant in range(count):
        template = build_template(load, variant % 8)
        offsets = marker_offsets(template, load.traces_per_request)
        ids = [rng.randbytes(16) for _ in range(load.traces_per_request)]
        out.append(fill(template, offsets, ids))
    return out


async def test_requests_of_other_sizes_count_as_on_the_python_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The benchmark's requests, one, three or five joined, one after the other (the scanner's
    work buffers kept from a larger request to a smaller one and back; the join's layers packed
    once their shapes are learned): the metrics of the Python path."""
    monkeypatch.setattr(time, "time_ns", lambda: T0)
    fast, slow = connector(monkeypatch, "1"), connector(monkeypatch, "0")
    reqs = bench_requests(11, 30)
    at = 0
    for size in (5, 1, 3, 1, 5, 1, 5, 3, 1, 5):
        raw = b"".join(reqs[at : at + size])
        at += size
        await fast.consume(Traces(raw))
        await slow.consume(Traces(raw))
    assert fast._scanner is not None and fast.joiner.native_calls + len(fast.joiner) > 0
    a, b = state(fast), state(slow)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name


def test_a_scanner_scans_each_request_as_a_fresh_one() -> None:
    """A scanner keeps its work buffers (held spans, A2A spans, the join's groups, its memo of
    series) from one scan to the next: requests of other sizes and kinds, scanned one after the
    other, give what a fresh scanner gives for each (its scan, failures, roots, late layers)."""
    bench = bench_requests(7, 3)
    big = b"".join(bench)  # (600 spans, 60 traces)
    roots_rng = random.Random(3)
    failed = ExportTraceServiceRequest()
    ss = failed.resource_spans.add().scope_spans.add()
    ss.spans.extend(failed_root(roots_rng, 500 + k) for k in range(40))
    sequence = [
        big,
        bench[1],
        odd_ids_request(),
        failed.SerializeToString(),
        big,
        workflow_roots(4, 3, 900)[0],
        b"",
        bench[2],
        big,
    ]
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"), AgentMetricsConfig(), Capture()
    )
    scanner = conn._scanner
    for raw in sequence:
        got = scanner.scan(raw), scanner.take_failures(), scanner.take_roots(), scanner.take_late()
        assert got == scan_all(raw)
