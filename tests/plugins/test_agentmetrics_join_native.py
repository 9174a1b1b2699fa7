"""The join's common case in C (``_agentscan.c``: packed traces, ``settle_simple``) against the
pure-Python join, on random request sequences: the same tool calls, failures and late layers.

Each sequence sends random spans of a few traces over several requests: tool-call layers of
a few shapes (framework function tools, MCP client spans, model retries), agent runs (links),
failed spans, layers below other layers, span ids given twice, layers arriving after their
trace was settled; with a join window of 0 s (every trace settled with its request), of an
hour (everything held until shutdown) and a small ``max_traces`` (the oldest settled early).

The traces with a failure (held as Layer and Failure objects) are settled in C too
(``settle_layers``): whole failed traces through the connector against the pure-Python
path, and random layers, failures and links through the joiner alone against a pure-Python
joiner (the same calls, errors_total label sets in order, late and early counts, memories).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind
from plugins._native import load
from plugins.agentmetricsconnector.calls import (
    Call,
    CallJoiner,
    Failure,
    Layer,
    _Entry,
    settle_due,
    settle_front,
)
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from tests.plugins._agent_support import Capture, kv, request, settings, span
from tests.plugins._join_probe import replayed

T0 = 1_700_000_000.0

pytestmark = pytest.mark.skipif(load("_agentscan") is None, reason="_agentscan not built")

TOOLS = [
    ("execute_tool search", {"gen_ai.operation.name": "execute_tool",
                             "gen_ai.tool.name": "search", "mcp.server.name": "web"}),
    ("execute_tool add", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add",
                          "gen_ai.tool.type": "function"}),
    ("tools/call fetch", {"mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch",
                          "server.address": "mcp.local"}),
]  # fmt: skip


def two_layers(trace: int, parent: int = 9, call_id: str = "c1") -> list[Span]:
    """Two layers of one tool call (call id ``call_id``) in ``trace``: a framework span (2,
    child of 1) and a layer below it (4, child of ``parent``; by default not the first's)."""
    return [
        span(trace, 2, 1, "execute_tool add", attrs={"gen_ai.operation.name": "execute_tool",
             "gen_ai.tool.name": "add", "gen_ai.tool.call.id": call_id}, start=T0),
        span(trace, 4, parent, "execute_tool add", attrs={"gen_ai.operation.name":
             "execute_tool", "gen_ai.tool.name": "add", "gen_ai.tool.call.id": call_id},
             start=T0 + 0.001),
    ]  # fmt: skip


def random_spans(rng: random.Random, traces: list[int], ids: dict[int, list[int]]) -> list[Span]:
    """One request's spans: random layers, links and failures of ``traces``."""
    out = []
    for _ in range(rng.randint(1, 12)):
        trace = rng.choice(traces)
        known = ids.setdefault(trace, [1])
        roll = rng.random()
        if roll < 0.05 and len(known) > 1:
            span_id = rng.choice(known)  # a span id given twice
        else:
            span_id = max(known) + 1
            known.append(span_id)
        parent = rng.choice(known[:-1] or [1]) if rng.random() < 0.9 else 1
        start = T0 + rng.randint(0, 1000) / 1000
        duration = rng.choice([0.001, 0.02, 0.3, 2.5, 12.0])
        error = "connection refused" if rng.random() < 0.08 else None
        what = rng.random()
        if what < 0.6:
            name, attrs = rng.choice(TOOLS)
            attrs = dict(attrs)
            if rng.random() < 0.05:
                attrs["error.type"] = "ModelRetry"
            kind = Span.SPAN_KIND_CLIENT
        elif what < 0.85:
            name, attrs = "invoke_agent", {"gen_ai.operation.name": "invoke_agent",
                                           "gen_ai.agent.name": "planner"}  # fmt: skip
            kind = Span.SPAN_KIND_INTERNAL
        else:
            name, attrs, kind = "SELECT orders", {"db.system.name": "pg"}, Span.SPAN_KIND_CLIENT
            error = error or "deadlock"
        out.append(span(trace, span_id, parent, name, kind=kind, attrs=attrs, error=error,
                        start=start, duration=duration))  # fmt: skip
    return out


def outcome(conn: AgentMetricsConnector) -> dict[str, Any]:
    """What the connector counted: every series of the tool-call and error metrics (sums
    rounded: the C side adds a request's durations before merging them), the join's counts."""
    out: dict[str, Any] = {}
    for metric in (conn.tool_calls, conn.tool_duration, conn.function_calls,
                   conn.function_duration, conn.errors):  # fmt: skip
        for (_resource, attrs), s in metric.series.items():
            buckets = tuple(getattr(s, "buckets", ()) or ())
            out[f"{metric.name}{attrs}"] = (s.count, round(getattr(s, "sum", 0.0), 6), buckets)
    out["late"] = conn.joiner.late_layers
    out["early"] = conn.joiner.early_settled
    return out


class Counting:
    """The joiner's C side, counting the traces ``settle_layers`` settled and refused."""

    def __init__(self, scanner: Any, counts: collections.Counter[str]) -> None:
        self.scanner = scanner
        self.counts = counts
        self.configure_settle = scanner.configure_settle
        self.settle_simple = scanner.settle_simple

    def settle_due(self, *args: Any) -> tuple[int, int]:
        # the loop's Python twin, through settle_layers below (counted)
        return settle_due(self, *args)

    def settle_front(self, *args: Any) -> tuple[Any, int, int]:
        # the settle loop's Python twin, through settle_layers below (counted)
        return settle_front(self, *args)

    def settle_packed(self, *args: Any) -> int:
        done: int = self.scanner.settle_packed(*args)
        self.counts["packed settled in C" if done >= 0 else "packed refused"] += 1
        if done >= 0:
            self.counts["packed with failures"] += 1
        return done

    def settle_layers(self, *args: Any) -> int:
        done: int = self.scanner.settle_layers(*args)
        self.counts["settled in C" if done >= 0 else "refused"] += 1
        if done >= 0 and args[1]:
            self.counts["with failures"] += 1
        if done >= 0 and any(layer.failed for layer in args[0]):
            self.counts["with failed layers"] += 1
        if done >= 0 and any(layer.call_id or layer.rpc_id for layer in args[0]):
            self.counts["with ids"] += 1
        return done


def connector(join: dict[str, Any], counts: collections.Counter[str] | None) -> Any:
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"),
        AgentMetricsConfig(tool_call_join=join),
        Capture(),
    )
    if counts is not None and conn.joiner.native is not None:
        conn.joiner.native = Counting(conn.joiner.native, counts)
    return conn


async def run(
    requests: list[list[Span]],
    join: dict[str, Any],
    counts: collections.Counter[str] | None = None,
) -> dict[str, Any]:
    conn = connector(join, counts)
    for spans in requests:
        await conn.consume(request(spans))
    await conn.shutdown()
    return outcome(conn)


# the join settled with each request, held for an hour, and held with early settling
JOIN_SETTINGS = pytest.mark.parametrize(
    "join",
    [{"window": "0s"}, {"window": "1h"}, {"window": "1h", "max_traces": 3}],
    ids=["settled-each-request", "held", "early"],
)


@JOIN_SETTINGS
def test_the_c_join_counts_as_the_python_join(
    join: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(1214)
    packed = 0
    for _sequence in range(150):
        ids: dict[int, list[int]] = {}
        traces = list(range(1, rng.randint(2, 8)))
        requests = [random_spans(rng, traces, ids) for _ in range(rng.randint(1, 8))]
        # every shape is read once in Python before the C scanner packs it: a warm-up request
        # of each shape first, in its own trace, so that the sequence itself is packed
        warm = [span(999, 2 + i, 1, name, kind=Span.SPAN_KIND_CLIENT, attrs=attrs, start=T0)
                for i, (name, attrs) in enumerate(TOOLS)]  # fmt: skip
        warm.append(span(999, 9, 1, "invoke_agent", attrs={"gen_ai.operation.name":
                         "invoke_agent", "gen_ai.agent.name": "planner"}, start=T0))  # fmt: skip
        sequence = [warm, *requests]
        monkeypatch.delenv("PIPELINE_NATIVE", raising=False)
        native = asyncio.run(run(sequence, join))
        monkeypatch.setenv("PIPELINE_NATIVE", "0")
        python = asyncio.run(run(sequence, join))
        assert native == python, sequence
        packed += 1
    assert packed == 150


def test_the_scanner_packs_the_common_case_and_settles_it_in_c() -> None:
    """The benchmark's kind of trace (a tool call and an agent run, nothing failed) is packed
    after its shapes were read once, and counted by settle_simple: the same series as the
    first, read in Python."""

    async def main() -> AgentMetricsConnector:
        conn = AgentMetricsConnector(
            settings(Kind.CONNECTOR, "agentmetrics"),
            AgentMetricsConfig(tool_call_join={"window": "0s"}),
            Capture(),
        )
        for trace in (1, 2, 3):
            await conn.consume(request([
                span(trace, 2, 1, "invoke_agent", attrs={"gen_ai.operation.name":
                     "invoke_agent", "gen_ai.agent.name": "planner"}, start=T0),
                span(trace, 3, 2, TOOLS[0][0], kind=Span.SPAN_KIND_CLIENT, attrs=TOOLS[0][1],
                     start=T0, duration=0.02),
            ]))  # fmt: skip
        return conn

    conn = asyncio.run(main())
    assert conn.joiner.native is not None
    assert len(conn._join_series) == 1 and len(conn._join_shapes) == 2
    ((attrs, s),) = [(a, s) for (_r, a), s in conn.tool_calls.series.items()]
    assert dict(attrs) == {"server": "web", "tool": "search", "status": "success",
                           "error_type": "none"}  # fmt: skip
    assert s.count == 3
    assert len(conn.joiner.settled_memory()) == 3


class CountingScans:
    """The C scanner, counting the items its scans leave to Python and pack."""

    def __init__(self, scanner: Any, items: collections.Counter[str]) -> None:
        self.scanner = scanner
        self.items = items

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scanner, name)

    def scan(self, raw: bytes) -> Any:
        found = self.scanner.scan(raw)
        self.items.update("packed" if len(item) == 4 else "python" for item in found[1])
        return found


def test_per_run_ids_do_not_make_new_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workflow processor writes ``workflow.id`` on every span, and frameworks write a
    conversation id: values unique to a run. The tables read them for their presence only (a
    workflow root, a run id), so a shape holds their presence, not their value: the second
    run's spans are packed like the benchmark's (whose 160 workflow ids repeated), and count
    as the pure-Python path does."""

    def spans(trace: int) -> list[Span]:
        run = {"workflow.id": f"wf-{trace:032x}", "gen_ai.conversation.id": f"c-{trace}"}
        return [
            span(trace, 2, 1, "invoke_agent", attrs={"gen_ai.operation.name": "invoke_agent",
                 "gen_ai.agent.name": "planner", **run}, start=T0),
            span(trace, 3, 2, TOOLS[0][0], kind=Span.SPAN_KIND_CLIENT,
                 attrs={**TOOLS[0][1], **run}, start=T0, duration=0.02),
        ]  # fmt: skip

    items: collections.Counter[str] = collections.Counter()

    async def main() -> tuple[dict[str, Any], AgentMetricsConnector]:
        conn = connector({"window": "0s"}, None)
        if conn._scanner is not None:
            conn._scanner = CountingScans(conn._scanner, items)
        for trace in range(1, 7):
            await conn.consume(request(spans(trace)))
        await conn.shutdown()
        return outcome(conn), conn

    monkeypatch.delenv("PIPELINE_NATIVE", raising=False)
    native, conn = asyncio.run(main())
    assert conn.joiner.native is not None
    assert len(conn._join_shapes) == 2  # one per shape, not one per run
    assert items == {"packed": 5, "python": 2}  # every run after the first packed in C
    monkeypatch.setenv("PIPELINE_NATIVE", "0")
    python, _ = asyncio.run(main())
    assert native == python
    ((attrs, count),) = [(a, v[0]) for a, v in native.items() if "tool_calls" in a]
    assert count == 6, attrs


def test_the_scanner_forgets_the_shapes_the_python_side_drops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scanner remembers the shapes it found in ``join_shapes`` (by content, across
    requests): a shape the Python side drops (its table full: cleared) is not packed again
    until it is learned again."""
    monkeypatch.setattr("plugins.agentmetricsconnector.connector.JOIN_SHAPES", 2)
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"),
        AgentMetricsConfig(tool_call_join={"window": "1h"}),
        Capture(),
    )

    def trace(n: int, tool: int) -> list[Span]:
        return [
            span(n, 2, 1, "invoke_agent", attrs={"gen_ai.operation.name": "invoke_agent",
                 "gen_ai.agent.name": "planner"}, start=T0),
            span(n, 3, 2, TOOLS[tool][0], kind=Span.SPAN_KIND_CLIENT, attrs=TOOLS[tool][1],
                 start=T0, duration=0.02),
        ]  # fmt: skip

    def packed(spans: list[Span]) -> bool:
        _series, fallback, _consumers, _workflows = conn._scanner.scan(request(spans).to_bytes())
        return [len(item) for item in fallback] == [4]

    asyncio.run(conn.consume(request(trace(1, 0))))  # learns the agent run's and the tool's
    assert len(conn._join_shapes) == 2 and packed(trace(2, 0))
    asyncio.run(conn.consume(request(trace(3, 1))))  # another tool: the table is cleared first
    assert len(conn._join_shapes) == 1  # (the new tool's shape only: the agent run's is gone)
    assert not packed(trace(4, 0))
    assert not packed(trace(5, 1))  # (its agent run's shape is not known any more)


EXCEPTIONS = ["TimeoutError", "ConnectionError", "ValueError", "mcp.shared.exceptions.McpError"]


def failing_spans(rng: random.Random, traces: list[int], ids: dict[int, list[int]]) -> list[Span]:
    """One request's spans, failures first: a failed workflow root, agent runs and tool-call
    layers whose failures say what failed in any of the ways a span can (a status message or
    none, ``error.type``, an exception event with its type and message, an attribute given
    twice), beside the layers of :func:`random_spans`."""
    out = random_spans(rng, traces, ids)
    for _ in range(rng.randint(1, 6)):
        trace = rng.choice(traces)
        known = ids.setdefault(trace, [1])
        span_id = max(known) + 1
        known.append(span_id)
        what = rng.random()
        start = T0 + rng.randint(0, 1000) / 1000
        if what < 0.25 and 1 not in known[1:-1]:
            # the failed root: a workflow of the gateway's dialect
            s = span(trace, 1, None, "workflow.checkout", attrs={"workflow.type": "checkout"},
                     error=rng.choice(["", "deadline exceeded", "boom"]), start=start,
                     duration=3.0)  # fmt: skip
        else:
            parent = rng.choice(known[:-1] or [1])
            if what < 0.7:
                name, attrs = rng.choice(TOOLS)
                attrs = dict(attrs)
                kind = Span.SPAN_KIND_CLIENT
            else:
                name, attrs = "invoke_agent", {"gen_ai.operation.name": "invoke_agent",
                                               "gen_ai.agent.name": "planner"}  # fmt: skip
                kind = Span.SPAN_KIND_INTERNAL
            if rng.random() < 0.3:
                attrs["error.type"] = rng.choice(["rate_limited", "ModelRetry", "tool_error"])
            message = rng.choice(["", "", "timed out", "connection refused"])
            s = span(trace, span_id, parent, name, kind=kind, attrs=attrs, error=message,
                     start=start, duration=rng.choice([0.02, 0.3, 2.5]))  # fmt: skip
            if rng.random() < 0.1:  # an attribute given twice (the last one wins)
                s.attributes.add(key="error.type").value.string_value = "twice"
        if rng.random() < 0.6:
            event = s.events.add(name="exception", time_unix_nano=s.start_time_unix_nano)
            event.attributes.add(key="exception.type").value.string_value = rng.choice(EXCEPTIONS)
            if rng.random() < 0.5:
                event.attributes.add(key="exception.message").value.string_value = "timed out"
        out.insert(rng.randint(0, len(out)), s)
    return out


def count_packed(conn: AgentMetricsConnector, count: Callable[[tuple[Any, ...]], None]) -> None:
    """Wraps the connector's C scanner: ``count`` sees every packed trace (a 4-tuple: trace id,
    records, layers, ids) each scan gives."""
    scanner = conn._scanner
    if scanner is None:
        return

    class Counted:
        def __getattr__(self, name: str) -> Any:
            return getattr(scanner, name)

        def scan(self, raw: bytes) -> Any:
            found = scanner.scan(raw)
            for item in found[1]:
                if len(item) == 4:
                    count(item)
            return found

    conn._scanner = Counted()


async def consume_all(conn: AgentMetricsConnector, sequence: list[bytes]) -> dict[str, Any]:
    """The connector fed ``sequence`` and shut down: its outcome, workflows and the requests
    refused (a value not UTF-8 the Python path had to decode in full)."""
    from google.protobuf.message import DecodeError

    from pipeline import Traces

    refused = 0
    for raw in sequence:
        try:
            await conn.consume(Traces(raw))
        except DecodeError:
            refused += 1
    await conn.shutdown()
    return {**outcome(conn), **workflows(conn), "refused": refused}


def workflows(conn: AgentMetricsConnector) -> dict[str, Any]:
    """The executions and their durations counted (the failed roots' outcomes)."""
    out: dict[str, Any] = {}
    for metric in (conn.executions, conn.workflow_duration):
        for (_resource, attrs), s in metric.series.items():
            out[f"{metric.name}{attrs}"] = (s.count, round(getattr(s, "sum", 0.0), 6))
    return out


async def run_with_workflows(
    requests: list[list[Span]],
    join: dict[str, Any],
    counts: collections.Counter[str] | None = None,
) -> dict[str, Any]:
    conn = connector(join, counts)
    for spans in requests:
        await conn.consume(request(spans))
    await conn.shutdown()
    if counts is not None:  # failed tool-call layers remembered by shape (read again as such)
        counts["failed readings"] += sum(
            isinstance(key, tuple) and key[-1] is not None  # (not FAILURE_ONLY)
            for memo in conn._shapes.values()
            for key in memo
        )
    return {**outcome(conn), **workflows(conn)}


@JOIN_SETTINGS
def test_the_c_join_counts_failed_traces_as_the_python_join(
    join: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traces with failures (the spans the C scanner leaves to Python, read from their own
    encoding there, the Python path re-encoding its view): the same calls, errors, workflow
    outcomes as the pure-Python join."""
    rng = random.Random(1215)
    counts: collections.Counter[str] = collections.Counter()
    errors = 0
    for _sequence in range(100):
        ids: dict[int, list[int]] = {}
        traces = list(range(1, rng.randint(2, 6)))
        requests = [failing_spans(rng, traces, ids) for _ in range(rng.randint(1, 6))]
        warm = [span(999, 2 + i, 1, name, kind=Span.SPAN_KIND_CLIENT, attrs=attrs, start=T0)
                for i, (name, attrs) in enumerate(TOOLS)]  # fmt: skip
        sequence = [warm, *requests]
        results = []
        for native in ("1", "0"):
            monkeypatch.setenv("PIPELINE_NATIVE", native)
            results.append(asyncio.run(run_with_workflows(sequence, join, counts)))
        assert results[0] == results[1], sequence
        errors += sum(v[0] for k, v in results[0].items() if k.startswith("errors"))
    assert errors > 100  # failures were counted, not only calls
    # the traces with failures were settled by settle_layers, not only the Python settle
    assert counts["with failures"] > 20 and counts["with failed layers"] > 20, counts
    assert counts["failed readings"] > 50, counts  # (the memo's path taken: see connector.py)


def exception(s: Span, type_: str, message: str = "") -> None:
    event = s.events.add(name="exception", time_unix_nano=s.start_time_unix_nano)
    event.attributes.add(key="exception.type").value.string_value = type_
    if message:
        event.attributes.add(key="exception.message").value.string_value = message


def failed_trace(rng: random.Random, trace: int) -> list[Span]:
    """One trace as an agent framework records it, where something failed (the benchmark's
    one in five, varied): a workflow root, agent runs below it, tool-call layers below them
    (failed by a status message, ``error.type``, an exception; a model-requested retry, a
    retry of a timed-out tool), failed spans no dialect joins (a database call inside a
    failed tool call saying the same, two of the same error where one's time holds the
    other's), an A2A client the remote peer answered with an error, failures handled or
    carried up with an exception type of their own or not."""
    t0 = T0 + rng.randint(0, 100)
    out = []
    root_failed = rng.random() < 0.8
    root = span(trace, 1, None, "workflow.checkout", attrs={"workflow.type": "checkout"},
                error=rng.choice(["", "boom", "tool chain failed"]) if root_failed else None,
                start=t0, duration=10.0)  # fmt: skip
    if root_failed and rng.random() < 0.4:
        exception(root, rng.choice(EXCEPTIONS[:3]), "timed out")
    out.append(root)
    next_id = 2
    agents = []
    for _ in range(rng.randint(1, 3)):
        parent = rng.choice([1, *agents])
        failed = rng.random() < 0.3
        s = span(trace, next_id, parent, "invoke_agent", attrs={"gen_ai.operation.name":
                 "invoke_agent", "gen_ai.agent.name": "planner"},
                 error=rng.choice(["", "agent failed"]) if failed else None,
                 start=t0 + 0.1, duration=9.0)  # fmt: skip
        if failed and rng.random() < 0.5:
            exception(s, rng.choice(EXCEPTIONS))
        out.append(s)
        agents.append(next_id)
        next_id += 1
    for _ in range(rng.randint(1, 4)):
        parent = rng.choice(agents)
        name, attrs = rng.choice(TOOLS)
        attrs = dict(attrs)
        start = t0 + rng.randint(1, 50) / 10
        duration = rng.choice([0.02, 0.3, 2.5])
        how = rng.random()
        error = None
        if how < 0.5:
            error = rng.choice(["connection refused", "timed out", "", "rate limited"])
            if rng.random() < 0.3:
                attrs["error.type"] = rng.choice(["ModelRetry", "tool_error", "rate_limited"])
        s = span(trace, next_id, parent, name, kind=Span.SPAN_KIND_CLIENT, attrs=attrs,
                 error=error, start=start, duration=duration)  # fmt: skip
        if error is not None and rng.random() < 0.4:
            exception(s, rng.choice([*EXCEPTIONS, "ModelRetry"]), rng.choice(["", "timed out"]))
        out.append(s)
        tool = next_id
        next_id += 1
        if error and rng.random() < 0.4:  # a span of the call no dialect joins, saying the same
            inner = span(trace, next_id, rng.choice([tool, parent]), "SELECT orders",
                         kind=Span.SPAN_KIND_CLIENT, attrs={"db.system.name": "pg"},
                         error=rng.choice([error, "deadlock"]),
                         start=start + rng.choice([0.0, 0.001, -1.0]), duration=0.01)  # fmt: skip
            out.append(inner)
            next_id += 1
    if rng.random() < 0.4:  # the same error twice, one span's time holding the other's
        parent = rng.choice(agents)
        outer_start = t0 + 1
        for start, duration in ((outer_start, 2.0), (outer_start + rng.choice([0, 0.5]), 1.0)):
            out.append(span(trace, next_id, parent, "SELECT orders", kind=Span.SPAN_KIND_CLIENT,
                            attrs={"db.system.name": "pg"}, error="deadlock", start=start,
                            duration=duration))  # fmt: skip
            next_id += 1
    if rng.random() < 0.3:  # the remote agent answered with an error (counted at the peer)
        s = span(trace, next_id, rng.choice(agents),
                 "a2a.client.transports.jsonrpc.JsonRpcTransport.send_message",
                 kind=Span.SPAN_KIND_CLIENT, error="internal error", start=t0 + 2,
                 duration=0.5)  # fmt: skip
        exception(
            s, rng.choice(["a2a.utils.errors.InternalError", "a2a.client.errors.A2AClientError"])
        )
        out.append(s)
        next_id += 1
    rng.shuffle(out)
    return out


def split_and_repeated(rng: random.Random, traces: Iterable[list[Span]]) -> list[list[Span]]:
    """The requests that carry ``traces`` (taken one at a time: drawn from ``rng`` in turn):
    a trace in one request, or three times in ten split over two (the later half in the next
    request); then, one time in five, one of the requests sent again (its layers late)."""
    requests: list[list[Span]] = []
    for spans in traces:
        if rng.random() < 0.3:
            cut = rng.randint(1, len(spans))
            requests += [spans[:cut], spans[cut:]]
        else:
            requests.append(spans)
    if rng.random() < 0.2:
        requests.append(rng.choice(requests))
    return requests


@JOIN_SETTINGS
def test_failed_traces_settled_in_c_count_as_the_python_join(
    join: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole traces with failures (as the workflow processor hands them over), sometimes
    split over two requests (a parent after its failed child was settled), the same traces
    again (their layers late): settled by ``settle_layers``, the same calls, errors_total
    label sets, late and early counts as the pure-Python join."""
    rng = random.Random(1218)
    counts: collections.Counter[str] = collections.Counter()
    errors = 0
    for _sequence in range(60):
        requests = split_and_repeated(
            rng, (failed_trace(rng, trace) for trace in range(1, rng.randint(2, 6)))
        )
        results = []
        for native in ("1", "0"):
            monkeypatch.setenv("PIPELINE_NATIVE", native)
            results.append(asyncio.run(run_with_workflows(requests, join, counts)))
        assert results[0] == results[1], requests
        errors += sum(v[0] for k, v in results[0].items() if k.startswith("errors"))
    assert errors > 100
    assert counts["with failures"] > 100 and counts["with failed layers"] > 50, counts
    assert counts["failed readings"] > 50, counts


# -- the joiner alone: settle_layers against _settle, memories and all ---------------------------
def random_entries(
    rng: random.Random,
) -> tuple[list[Layer], list[Failure], list[tuple[bytes, bytes, bytes]]]:
    """Random layers, failures and parent links of a few traces, in every combination the
    joiner's settle reads: failed or not, retries, error types, exceptions and messages that
    classify (or not) as timeouts, call and JSON-RPC ids (settled by settle_layers when each
    layer is still a call of its own), sessions now and then (refused by settle_layers), parents
    among the spans or not, peer failures, times holding each other or not, and now and then
    ids the C side does not take (a trace id that is not 16 bytes, a span id of 9)."""
    traces = [bytes([t]) * 16 for t in range(1, rng.randint(2, 4))]
    if rng.random() < 0.05:
        traces.append(b"\x07" * 15)
    spans = [i.to_bytes(8, "big") for i in range(1, rng.randint(3, 14))]
    if rng.random() < 0.05:
        spans.append(b"\x09" * 9)
    texts = ["", "", "timed out", "connection refused", "boom", "_OTHER"]
    types = ["", "", "timeout", "rate_limited", "ValueError", "TimeoutError", "ModelRetry"]

    def time_pair() -> tuple[int, int]:
        start = rng.randint(0, 20) * 1_000_000
        return start, start + rng.choice([-5, 0, 1, 3, 10, 30]) * 1_000_000

    def parent() -> bytes:
        return rng.choice([b"", *spans, b"\x00" * 7 + b"\x63"])

    layers = []
    for _ in range(rng.randint(0, 6)):
        failed = rng.random() < 0.5
        start, end = time_pair()
        layers.append(
            Layer(
                rng.choice(traces),
                rng.choice(spans),
                parent(),
                rng.choice([0, 0, 1, 2]),
                tool=rng.choice(["", "search", "fetch"]),
                tool_type=rng.choice(["", "function", "extension"]),
                mcp=rng.random() < 0.3,
                call_id=rng.choice(["c1", "c2"]) if rng.random() < 0.25 else "",
                rpc_id=rng.choice(["7", "8"]) if rng.random() < 0.25 else "",
                session="s" if rng.random() < 0.05 else "",
                server=rng.choice(["", "mcp.local"]),
                start=start,
                end=end,
                failed=failed,
                retry=failed and rng.random() < 0.3,
                error_type=rng.choice(types) if failed else "",
                exception=rng.choice(types) if failed else "",
                message=rng.choice(texts) if failed else "",
                agent="planner",
            )
        )
    failures = []
    for _ in range(rng.randint(0, 5)):
        start, end = time_pair()
        labels = (("error_type", rng.choice(["timeout", "boom", "_OTHER", "deadlock"])),
                  ("component", rng.choice(["workflow", "agent", "database"])),
                  ("severity", "error"), ("recoverable", "false"))  # fmt: skip
        failures.append(Failure(rng.choice(traces), rng.choice(spans), parent(), labels,
                                rng.choice(types), start, end, rng.choice(texts),
                                rng.random() < 0.1))  # fmt: skip
    links = [(rng.choice(traces), rng.choice(spans), parent()) for _ in range(rng.randint(0, 6))]
    return layers, failures, links


def calls_per_series(calls: list[Call]) -> dict[tuple[int, tuple[str, ...]], tuple[int, float]]:
    """Python's calls as the C side's series: (metric index, labels) -> (count, sum)."""
    out: dict[tuple[int, tuple[str, ...]], tuple[int, float]] = {}
    for call in calls:
        if call.mcp:
            counted = (0, (call.server, call.tool, call.status, call.error_type))
            timed = (1, (call.server, call.tool))
        else:
            counted = (9, (call.tool, call.tool_type, call.status, call.error_type))
            timed = (10, (call.tool, call.tool_type))
        n, _ = out.get(counted, (0, 0.0))
        out[counted] = (n + 1, 0.0)
        n, total = out.get(timed, (0, 0.0))
        out[timed] = (n + 1, round(total + call.duration, 9))
    return out


def native_series(series: list[Any]) -> dict[tuple[int, tuple[str, ...]], tuple[int, float]]:
    return {
        (index, tuple(values)): (count, round(total, 9) if buckets is not None else 0.0)
        for index, values, count, total, buckets, *_ in series
    }


class _Where:
    """A shape as the connector's ``_learn`` reads it (the C scanner's key of a reading)."""

    def __init__(self, n: int) -> None:
        self.where = (b"r", b"s", b"%d" % n)


def packed_as_scanned(
    conn: AgentMetricsConnector, layers: list[Layer]
) -> tuple[list[Any], list[Layer], int]:
    """``layers`` as the C scanner hands them over when it packs those it can (failed ones
    with their message): the items for the joiner of ``conn`` (each trace's packed layers one
    Packed item at the place of its first, the others as they are), the layers in the order
    the joiner unpacks them (for a pure-Python joiner; the late ones last), and the count of
    late layers the scanner drops (as the joiner's ``add`` would)."""
    from plugins.agentmetricsconnector.calls import CALL_ID, FAILED, RECORD, RPC_ID

    joiner = conn.joiner
    items: list[Any] = []
    order: list[Layer] = []
    groups: dict[bytes, tuple[int, list[Layer]]] = {}
    dropped: list[Layer] = []
    late = 0
    for x in layers:
        packable = (
            len(x.trace_id) == 16
            and 1 <= len(x.span_id) <= 8
            and len(x.parent_id) <= 8
            and not x.session
            and len(x.message) < 1 << 16
            and 0 <= x.start < 1 << 64
            and 0 <= x.end < 1 << 64
        )
        if not packable:
            items.append(x)
            continue
        if (x.trace_id, x.parent_id) in joiner._settled_layers or (
            (x.call_id or x.rpc_id) and joiner._is_late(x)
        ):
            late += 1  # (dropped by the scanner, counted by take_late; by add in Python)
            dropped.append(x)
            continue
        found = groups.get(x.trace_id)
        if found is None:
            found = groups[x.trace_id] = (len(items), [])
            items.append(None)  # (its Packed item, below)
        found[1].append(x)
    for trace, (at, group) in groups.items():
        records, ids = b"", b""
        for x in group:
            reading: tuple[Any, ...] = (x.side, x.tool, x.tool_type, x.mcp, x.server, x.retry,
                                        x.agent, -1, -1)  # fmt: skip
            flags = (CALL_ID if x.call_id else 0) | (RPC_ID if x.rpc_id else 0)
            texts = [t for t in (x.call_id, x.rpc_id) if t]
            if x.failed:
                reading += (x.failed, x.error_type, x.exception)
                flags |= FAILED
                texts.append(x.message)
            series = conn._join_ids.get(reading)
            if series is None:
                conn._learn(_Where(len(conn._join_series)), reading)  # type: ignore[arg-type]
                series = conn._join_ids[reading]
            records += RECORD.pack(1, len(x.span_id), x.span_id, len(x.parent_id), x.parent_id,
                                   flags, x.start, x.end, series)  # fmt: skip
            for text in texts:
                raw = text.encode()
                ids += len(raw).to_bytes(2, "little") + raw
        items[at] = (trace, records, len(group), ids)
    for item in items:
        if item.__class__ is tuple:
            order += groups[item[0]][1]
        else:
            order.append(item)
    return items, order + dropped, late


def assert_joiners_agree(
    rng: random.Random,
    rounds: int,
    conn: AgentMetricsConnector,
    count: bool = True,
    pack: bool = False,
) -> collections.Counter[str]:
    """``rounds`` random requests through the joiner of ``conn`` (a new connector with the C
    scanner) and a pure-Python one like it, each settled: the same calls per series, the same
    errors_total label sets in the same order, the same late and early counts, the same
    memories of settled layers and keys and failed parents (order too). ``count``: the C side
    wrapped in :class:`Counting` (the loop over the entries due in Python: ``settle_front``'s
    twin), else the scanner's own ``settle_front``. ``pack``: the C side's layers packed now and
    then as the scanner packs them (:func:`packed_as_scanned`), the pure-Python joiner given
    them in the order they are unpacked."""
    native, scanner = conn.joiner, conn._scanner
    assert native.native is not None
    python = CallJoiner(native.window, native.max_traces, native.classify)
    size = rng.choice([3, 8, 1024])  # small memories: the oldest forgotten first
    for joiner in (native, python):
        for memory in (joiner._settled_layers, joiner._settled_keys, joiner._failed_parents):
            memory.size = size
        joiner.configure_native()  # (the C side's bounds given again)
    counts: collections.Counter[str] = collections.Counter()
    if count:
        native.native = Counting(native.native, counts)
    now = T0
    for _ in range(rounds):
        layers, failures, links = random_entries(rng)
        now += rng.choice([0.0, 0.5, 100.0])
        everything = rng.random() < 0.3
        settled = []
        given: dict[int, list[Any]] = {}
        if pack and rng.random() < 0.7:
            items, layers, late = packed_as_scanned(conn, layers)
            native.late_layers += late
            given[id(native)] = items
            counts["packed"] += sum(1 for x in items if x.__class__ is tuple)
        for joiner in (native, python):
            copies = (
                given[id(joiner)]
                if id(joiner) in given
                else [Layer(*(getattr(x, f) for f in Layer.__slots__)) for x in layers]
            )
            joiner.add(copies, list(failures), now, links)
            settled.append(joiner.settle(now, everything))
        (c_calls, c_errors), (p_calls, p_errors) = settled
        native.native_calls = 0
        c_series = calls_per_series(c_calls)
        for key, (n, total) in native_series(scanner.take_calls()).items():
            had, had_total = c_series.get(key, (0, 0.0))
            c_series[key] = (had + n, round(had_total + total, 9))
        assert c_series == calls_per_series(p_calls)
        assert c_errors == p_errors
        assert (native.late_layers, native.early_settled) == (
            python.late_layers,
            python.early_settled,
        )
        for memory in ("_settled_layers", "_settled_keys", "_failed_parents"):
            assert list(getattr(native, memory).items.items()) == list(
                getattr(python, memory).items.items()
            ), memory
        assert list(native.pending) == list(python.pending)
    return counts


def test_settle_layers_leaves_the_joiner_as_the_python_settle() -> None:
    rng = random.Random(1812)
    counts: collections.Counter[str] = collections.Counter()
    for _sequence in range(300):
        conn = connector({"window": rng.choice(["0s", "10s"]), "max_traces": 4}, None)
        counts += assert_joiners_agree(rng, rng.randint(1, 6), conn)
    assert counts["with failures"] > 300 and counts["with failed layers"] > 150, counts
    assert counts["refused"] > 30 and counts["with ids"] > 100, counts


def test_settle_packed_leaves_the_joiner_as_the_python_settle() -> None:
    """Packed layers (failed ones with their message) held with failures (their parent links
    among the records) and settled by ``settle_packed`` (through ``settle_due`` and its twin),
    or unpacked when anything else arrives for their trace or ``settle_packed`` refuses it:
    the joiner as the pure-Python one given the layers in the order they are unpacked (calls,
    errors_total label sets in order, late and early counts, the three memories in order)."""
    rng = random.Random(1913)
    counts: collections.Counter[str] = collections.Counter()
    for _sequence in range(300):
        conn = connector({"window": rng.choice(["0s", "10s"]), "max_traces": 4}, None)
        counts += assert_joiners_agree(rng, rng.randint(1, 6), conn, count=True, pack=True)
        conn = connector({"window": rng.choice(["0s", "10s"]), "max_traces": 4}, None)
        assert_joiners_agree(rng, rng.randint(1, 6), conn, count=False, pack=True)
    assert counts["packed"] > 300 and counts["packed with failures"] > 100, counts
    assert counts["packed refused"] > 10, counts


def test_settle_due_settles_as_the_python_join() -> None:
    """The scanner's loop over the entries due (``settle_due``: packed entries, held layers and
    failures, entries neither common case handed back in the middle of the loop) leaves the
    joiner as the pure-Python settle; and as its twin (calls.py ``settle_due``) on the same
    random entries."""
    total: collections.Counter[str] = collections.Counter()
    for _sequence in range(300):
        seed = random.Random(2718).randrange(1 << 30) + _sequence
        rng = random.Random(seed)
        conn = connector({"window": rng.choice(["0s", "10s"]), "max_traces": 4}, None)
        assert_joiners_agree(rng, rng.randint(1, 6), conn, count=False)
        rng = random.Random(seed)
        twin = connector({"window": rng.choice(["0s", "10s"]), "max_traces": 4}, None)
        total += assert_joiners_agree(rng, rng.randint(1, 6), twin)
        assert list(conn.joiner._settled_layers.items) == list(twin.joiner._settled_layers.items)
        assert list(conn.joiner._settled_keys.items) == list(twin.joiner._settled_keys.items)
        assert list(conn.joiner._failed_parents.items.items()) == list(
            twin.joiner._failed_parents.items.items()
        )
    # entries settled in C with failures, and entries handed back in the middle of the loop
    assert total["with failures"] > 300 and total["refused"] > 30, total


def test_settle_front_takes_the_entries_due_from_the_front_as_its_twin() -> None:
    """The scanner's settle loop (``settle_front``) and its twin on the same held entries: the
    front entry taken while more than ``max_traces`` are held (counted early when its deadline
    is after ``now``) or while its deadline is not after ``now`` (equal: due), stopping at the
    first not due (the entries behind it stay, even when due); every entry with
    ``everything`` (none early); an entry neither common case handed back out of ``pending``
    with the entries behind it left; the same calls and memories."""

    def held(conn: Any) -> collections.OrderedDict[bytes, Any]:
        pending: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
        # deadlines 5, 5, 7, 3 (behind one not due), 9, 9; the fourth with a shared call id
        for k, deadline in enumerate([5.0, 5.0, 7.0, 3.0, 9.0, 9.0]):
            trace = (k + 1).to_bytes(16, "big")
            layers = [Layer(trace, b"s%d" % k, b"p", 0, "search", call_id="c" if k == 3 else "")]
            if k == 3:  # (a call id twice: not a call of its own, left to the joiner)
                layers.append(Layer(trace, b"t%d" % k, b"p", 0, "search", call_id="c"))
            pending[trace] = _Entry(deadline, layers, [], {x.span_id: x.parent_id for x in layers})
        return pending

    def run(max_traces: int, now: float, everything: bool, twin: bool) -> Any:
        conn = connector({"window": "10s", "max_traces": 100}, None)
        pending = held(conn)
        native = conn.joiner.native
        join = Counting(native, collections.Counter()) if twin else native
        errors: list[Any] = []
        got = join.settle_front(pending, max_traces, now, everything, errors)
        calls = native_series(native.take_calls())
        left = None if got[0] is None else [x.span_id for x in got[0].layers]
        return (
            (left, got[1], got[2]),
            [t[-1] for t in pending],
            calls,
            errors,
            (conn.joiner._settled_layers.items.items()),
        )

    cases = {
        # (max_traces, now, everything): (entry handed back, calls, early, traces left)
        (100, 4.0, False): (None, 0, 0, [1, 2, 3, 4, 5, 6]),  # nothing due
        (100, 5.0, False): (None, 2, 0, [3, 4, 5, 6]),  # deadline == now: due
        (100, 8.0, False): ([b"s3", b"t3"], 3, 0, [5, 6]),  # up to the one left to the joiner
        (4, 4.0, False): (None, 2, 2, [3, 4, 5, 6]),  # the bound: the two oldest, early
        # two expired, one over the bound (early), then one expired left to the joiner
        (3, 6.0, False): ([b"s3", b"t3"], 3, 1, [5, 6]),
        (2, 0.0, False): ([b"s3", b"t3"], 3, 4, [5, 6]),  # (the one left counted early too)
        (0, 100.0, True): ([b"s3", b"t3"], 3, 0, [5, 6]),  # everything: none early
    }
    for (max_traces, now, everything), (left, calls, early, traces) in cases.items():
        c = run(max_traces, now, everything, twin=False)
        assert c == run(max_traces, now, everything, twin=True), (max_traces, now)
        assert c[0] == (left, calls, early), (max_traces, now, c[0])
        assert c[1] == traces, (max_traces, now)
        # (each call counted in two series: its count and its duration)
        assert sum(n for n, _total in c[2].values()) == 2 * calls
    conn = connector({"window": "10s", "max_traces": 100}, None)
    scanner = conn.joiner.native
    pending = held(conn)
    for bad in (
        (pending, 1, 10.0, False, None),  # errors not a list
        ([], 1, 10.0, False, []),  # pending not a dict
        (pending, "1", 10.0, False, []),
        ({b"x": object()}, 0, 10.0, False, []),  # an entry without a deadline
        ({b"x": _Entry("late", [], [], {})}, 1, 10.0, False, []),  # a deadline of no order
    ):
        with pytest.raises((TypeError, AttributeError)):
            scanner.settle_front(*bad)
    with pytest.raises(TypeError):  # (the entry taken out: the joiner's error, as settle_due's)
        scanner.settle_front({b"x": _Entry(1.0, None, [], {})}, 1, 10.0, False, [])


def test_failed_parents_marked_in_c_share_their_marks_and_stay_the_python_ones() -> None:
    """The C settle paths put equal marks of the memory of failed parents as one shared tuple
    (and the values of one expiry as one tuple): a few objects for thousands of marked spans,
    the memory equal to the pure-Python joiner's, in order, past the sharing's bound (1,024
    distinct marks: the caches are emptied, only sharing is lost)."""
    conn = connector({"window": "0s", "max_traces": 10_000}, None)
    native = conn.joiner
    python = CallJoiner(native.window, native.max_traces, native.classify)
    for round_ in range(3):
        now = T0 + round_
        for joiner in (native, python):
            failures = []
            for k in range(1_500):
                trace = (round_ * 10_000 + k).to_bytes(16, "big")
                # a failed span under two spans: its parent and grandparent marked; the error
                # types distinct per trace in the last round (more than the sharing keeps)
                kind = f"Err{k}" if round_ == 2 else f"Err{k % 3}"
                labels = (("error_type", kind), ("component", "tool"), ("severity", "error"),
                          ("recoverable", "false"))  # fmt: skip
                failures.append(Failure(trace, b"c" * 8, b"b" * 8, labels, "", 1, 2))
            links = [(f.trace_id, b"b" * 8, b"a" * 8) for f in failures]
            joiner.add([], failures, now)
            joiner.add([], [], now, links)
            settled = joiner.settle(now, True)
        assert settled[1] and native.native_calls == 0
    c_items = native._failed_parents.items.items()
    assert c_items == list(python._failed_parents.items.items())
    assert len(c_items) == 9_000
    shared = c_items[:3_000]  # (the first two rounds: 3 error types, direct or not)
    assert len({id(value) for _key, value in shared}) <= 12
    assert len({id(value[1]) for _key, value in shared}) <= 6
    assert len({id(value[1][0]) for _key, value in shared}) <= 3


def test_recorded_sources_replayed_count_as_the_python_join(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every recorded real-library scenario, sent as five runs with their own trace and run
    ids through one connector: the C path (shapes with run ids by presence) counts as the
    pure-Python path. (Its ids as the corpus loader reads them: 24-byte trace ids, 12-byte
    span ids, never packed; the ids as the libraries sent them: the test below.)"""
    from pipeline import Traces
    from tests.plugins.test_agentmetrics_corpus import load, recorded

    async def main(requests: list[Any]) -> dict[str, Any]:
        conn = connector({"window": "0s"}, None)
        for req in requests:
            await conn.consume(Traces(req.SerializeToString()))
        await conn.shutdown()
        return outcome(conn)

    scenarios = sorted(recorded())
    assert len(scenarios) >= 40
    series = 0
    for source, scenario in scenarios:
        base = load(source, scenario)
        requests = [replayed(base, run) for run in range(1, 6)]
        monkeypatch.delenv("PIPELINE_NATIVE", raising=False)
        native = asyncio.run(main(requests))
        monkeypatch.setenv("PIPELINE_NATIVE", "0")
        python = asyncio.run(main(requests))
        assert native == python, (source, scenario)
        series += len(native) - 2  # (the tool-call and error series; not the late/early counts)
    assert series >= len(scenarios)  # every scenario counts something, most several series


def test_recorded_failed_roots_replayed_count_as_the_python_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The recorded real-library scenarios replayed as five runs (as above): their failed
    workflow roots are read from the C scanner's take_roots after the first run of a shape
    (not decoded), and the executions, workflow durations and errors counted are the
    pure-Python path's."""
    from pipeline import Traces
    from tests.plugins._native.test_agentscan import counted
    from tests.plugins.test_agentmetrics_corpus import load, recorded

    read: list[tuple[str, str]] = []
    failed_root = AgentMetricsConnector._failed_root

    async def main(requests: list[Any], key: tuple[str, str]) -> dict[str, Any]:
        conn = connector({"window": "0s"}, None)

        def spy(*args: Any) -> None:
            read.append(key)
            failed_root(conn, *args)

        monkeypatch.setattr(conn, "_failed_root", spy)
        for req in requests:
            await conn.consume(Traces(req.SerializeToString()))
        await conn.shutdown()
        return counted(conn)

    for source, scenario in sorted(recorded()):
        requests = [replayed(load(source, scenario), run) for run in range(1, 6)]
        monkeypatch.delenv("PIPELINE_NATIVE", raising=False)
        native = asyncio.run(main(requests, (source, scenario)))
        monkeypatch.setenv("PIPELINE_NATIVE", "0")
        assert asyncio.run(main(requests, ("python", ""))) == native, (source, scenario)
    assert ("python", "") not in read
    scenarios = collections.Counter(read)
    # a2a_sdk, langgraph_*, pydantic_ai*, mcp_openllmetry: their failed runs and tool errors
    assert len(scenarios) >= 12 and set(scenarios.values()) == {4}, scenarios
    assert {"failed_run", "tool_error", "tool_timeout"} <= {s for _, s in scenarios}


# -- the id-keyed join in C (settle_simple's general case) -----------------------------------

ID_SHAPES = [
    ("execute_tool add", Span.SPAN_KIND_INTERNAL,
     {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add"}, "gen_ai.tool.call.id"),
    ("MCP send tools/call fetch", Span.SPAN_KIND_CLIENT,
     {"mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch",
      "server.address": "mcp.local"}, "jsonrpc.request.id"),
    ("tools/call fetch", Span.SPAN_KIND_SERVER,
     {"mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch"}, "jsonrpc.request.id"),
    ("tools/call fetch", Span.SPAN_KIND_SERVER,
     {"mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch"}, "mcp.request.id"),
    ("execute_tool add", Span.SPAN_KIND_INTERNAL,
     {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add"}, "tool_call.id"),
]  # fmt: skip
CHAT = ("chat m", Span.SPAN_KIND_CLIENT, {"gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m", "gen_ai.provider.name": "p"})  # fmt: skip


def odd_id(rng: random.Random) -> Any:
    """A join id as real traffic has it, mostly, or as hostile input does."""
    roll = rng.random()
    if roll < 0.8:
        return rng.choice(["1", "2", "3", "call_a", "call_b"])
    return rng.choice(
        [
            7,
            2**62,
            -1,
            0.5,
            True,
            "",
            "x" * 70_000,
            "x" * 65_535,
            "呼び出し-1",
            "\u0000",
            "a\ud7ffb",
        ]
    )


def next_span(
    rng: random.Random, traces: list[int], ids: dict[int, list[int]]
) -> tuple[int, list[int], int]:
    """A trace drawn from ``traces``, the span ids it has so far (``ids``, kept) and the next
    span's id: a new one, now and then one given before (a span id given twice)."""
    trace = rng.choice(traces)
    known = ids.setdefault(trace, [1])
    if rng.random() < 0.04 and len(known) > 1:
        span_id = rng.choice(known)
    else:
        span_id = max(known) + 1
        known.append(span_id)
    return trace, known, span_id


def id_spans(rng: random.Random, traces: list[int], ids: dict[int, list[int]]) -> list[Span]:
    """One request's spans: layers with call ids and JSON-RPC ids (drawn from a few per trace,
    so that layers join by id; now and then of a wrong type, empty, huge, given twice, beside a
    session id), below one another or not, inference spans (read in Python, a link only) and
    root agent runs; now and then a failure."""
    out = []
    for _ in range(rng.randint(1, 10)):
        trace, known, span_id = next_span(rng, traces, ids)
        parent: int | None = rng.choice(known[:-1] or [1]) if rng.random() < 0.9 else 1
        start = T0 + rng.randint(0, 1000) / 1000
        duration = rng.choice([0.001, 0.02, 0.3])
        what = rng.random()
        if what < 0.65:
            name, kind, attrs, key = rng.choice(ID_SHAPES)
            attrs = dict(attrs)
            attrs[key] = odd_id(rng)
            if rng.random() < 0.03:
                attrs["mcp.session.id"] = "s-1"
            sp = span(trace, span_id, parent, name, kind=kind, attrs=attrs, start=start,
                      duration=duration, error="boom" if rng.random() < 0.03 else None)  # fmt: skip
            if rng.random() < 0.03:  # the id given twice
                sp.attributes.append(kv(key, odd_id(rng)))
        elif what < 0.85:
            name, kind, attrs = CHAT
            sp = span(trace, span_id, parent, name, kind=kind, attrs=attrs, start=start)
        else:
            sp = span(trace, span_id, None if rng.random() < 0.5 else parent, "invoke_agent a",
                      attrs={"gen_ai.operation.name": "invoke_agent",
                             "gen_ai.agent.name": "a"}, start=start)  # fmt: skip
        out.append(sp)
    return out


@JOIN_SETTINGS
def test_the_id_keyed_join_in_c_counts_as_the_python_join(
    join: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layers with call ids and JSON-RPC ids, packed by the scanner (their ids read from the
    span) and joined in C (settle_simple's general case), beside inference spans read in
    Python (a link only: their traces are packed all the same), count as the pure-Python join
    on random sequences with hostile ids (wrong types, empty, huge, non-ASCII, given twice,
    beside a session): such a span is read in Python, and so is its trace."""
    rng = random.Random(4711)
    items: collections.Counter[str] = collections.Counter()

    async def main(sequence: list[list[Span]]) -> dict[str, Any]:
        conn = connector(join, None)
        if conn._scanner is not None:
            conn._scanner = CountingScans(conn._scanner, items)
            scan = conn._scanner.scan

            def counted(raw: bytes) -> Any:
                found = scan(raw)
                for item in found[1]:
                    if len(item) == 4 and item[3]:
                        items["packed with ids"] += 1
                return found

            conn._scanner.scan = counted
        for spans in sequence:
            await conn.consume(request(spans))
        await conn.shutdown()
        return outcome(conn)

    for _sequence in range(120):
        ids: dict[int, list[int]] = {}
        traces = list(range(1, rng.randint(2, 6)))
        warm = [span(999, 2 + i, 1, name, kind=kind, attrs={**attrs, key: "w"}, start=T0)
                for i, (name, kind, attrs, key) in enumerate(ID_SHAPES)]  # fmt: skip
        warm.append(span(999, 20, 1, CHAT[0], kind=CHAT[1], attrs=CHAT[2], start=T0))
        sequence = [warm] + [id_spans(rng, traces, ids) for _ in range(rng.randint(1, 6))]
        monkeypatch.delenv("PIPELINE_NATIVE", raising=False)
        native = asyncio.run(main(sequence))
        monkeypatch.setenv("PIPELINE_NATIVE", "0")
        python = asyncio.run(main(sequence))
        assert native == python, sequence
    assert items["packed with ids"] > 100, items


@pytest.mark.parametrize("stamp", [True, False], ids=["workflow-id-stamped", "as-sent"])
def test_recorded_sources_replayed_pack_their_tool_calls_and_count_as_the_python_join(
    stamp: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every recorded real-library scenario, its ids as the library sent them (16 and 8 bytes),
    sent as five runs through one connector, settled with each request and held: the C path
    packs the tool-call layers of the runs after the first (their call ids and JSON-RPC ids
    read by the scanner, the inference spans and root agent runs of their traces read in
    Python beside them) and counts as the pure-Python path. With ``workflow.id`` on every span
    (``stamp``) every parentless span is a workflow root; as the libraries sent them (no
    workflow processor; it stamps none of the recorded traces), the MCP SDK's client spans
    without a parent are root tool-call layers, packed too."""
    from tests.plugins._join_probe import Share, replay
    from tests.plugins.test_agentmetrics_corpus import recorded

    scenarios = sorted(recorded())
    for join in ({"window": "0s"}, {"window": "1h"}):
        share = Share()
        monkeypatch.delenv("PIPELINE_NATIVE", raising=False)
        native = asyncio.run(replay(scenarios, share, join, stamp=stamp))
        monkeypatch.setenv("PIPELINE_NATIVE", "0")
        python = asyncio.run(replay(scenarios, None, join, stamp=stamp))
        for scenario, n, p in zip(scenarios, native, python, strict=True):
            assert n == p, (join, scenario)
        # failed layers packed (learned by shape and exception type), and the traces of a
        # failed span that gives the join no layer packed beside it (measured: 100 failed
        # layers packed, none before; 56 failed spans read in Python beside a packed trace)
        assert share.packed_failed >= 95 and share.packed_failed_traces >= 50, share
        if stamp:
            # (measured: 220 of 275 layers packed, 164 of them with ids; 88 before failed
            # layers were packed, none before the id join; the 55 read in Python are the first
            # of their shape)
            assert share.packed_layers >= 210 and share.packed_with_ids >= 150, share
            assert share.packed_roots == 0, share  # (every root a workflow's)
            assert share.packed_layers + share.python_layers == 275, share
            # (measured: 163 of 185 calls settled in C, 40 before)
            assert share.c_calls >= 150 and share.c_calls + share.python_calls == 185, share
        else:
            # (measured: 288 of 375 layers packed, 68 of them roots, 224 with ids; 120, 32
            # and 88 before failed layers were packed, 64 and none before root layers were)
            assert share.packed_roots >= 60 and share.packed_with_ids >= 200, share
            assert share.packed_layers >= 280, share
            assert share.packed_layers + share.python_layers == 375, share
            # (measured: 137 of 210 calls settled in C, 113 before)
            assert share.c_calls >= 130 and share.c_calls + share.python_calls == 210, share


def id_layer(trace: int, value: Any, key: str = "gen_ai.tool.call.id", twice: bool = False) -> Span:
    sp = span(trace, 3, 2, "execute_tool add", attrs={"gen_ai.operation.name": "execute_tool",
              "gen_ai.tool.name": "add", key: value}, start=T0, duration=0.02)  # fmt: skip
    if twice:
        sp.attributes.append(kv(key, value))
    return sp


@pytest.mark.parametrize(
    ("value", "twice", "packed"),
    [
        ("call_1", False, True),
        ("呼び出し", False, True),
        ("x" * 200, False, True),  # (its lengths of two bytes)
        ("x" * 16_380, False, True),  # (the longest whose entry's length takes two bytes)
        ("x" * 16_381, False, True),  # (three bytes)
        ("x" * 65_535, False, True),
        ("x" * 65_536, False, False),  # (longer than the ids string's 2-byte length)
        ("", False, False),
        (7, False, False),  # an int id: the Python reading's "7", not packed
        (True, False, False),
        ("call_1", True, False),  # the attribute given twice
    ],
)
def test_the_scanner_packs_plain_string_ids_only(value: Any, twice: bool, packed: bool) -> None:
    """A layer whose shape was learned with a call id is packed with the id the scanner reads
    when the id is a plain non-empty UTF-8 string of at most 65,535 bytes, given once; any
    other value goes to Python (which reads it as it always did), and counts the same."""
    conn = connector({"window": "1h"}, None)
    asyncio.run(conn.consume(request([id_layer(1, "learned")])))
    assert conn.joiner.learned and conn.joiner.learned[0][7] == 0  # the call id key
    _series, fallback, _c, _w = conn._scanner.scan(
        request([id_layer(2, value, twice=twice)]).to_bytes()
    )
    assert [len(item) for item in fallback] == ([4] if packed else [12])
    if packed:
        (item,) = fallback
        assert item[3] == len(str(value).encode()).to_bytes(2, "little") + str(value).encode()


@pytest.mark.parametrize(
    "extra",
    [
        {"k" * 200: "v"},  # a key of a two-byte length
        {"other": "y" * 300},
        {"other": None},  # an entry of a key only
        {"gen_ai.tool.call.id": None},  # the id's key without a value: not packed
        # more attributes than the scanner keeps of a span (64): the span walked again
        {f"pad.{i}": "v" for i in range(70)},
        {**{f"pad.{i}": "v" for i in range(70)}, "gen_ai.tool.call.id": None},
    ],
)
def test_the_scanner_reads_ids_past_other_attributes(extra: dict[str, Any]) -> None:
    """The call id is read past attributes of any encoding (the usual one read at once, the
    others walked) and past many; an id attribute of a key only is no id (read in Python)."""
    conn = connector({"window": "1h"}, None)
    asyncio.run(conn.consume(request([id_layer(1, "learned")])))
    sp = id_layer(2, "call_2")
    for key, value in extra.items():
        if value is None:
            sp.attributes.add(key=key)
        else:
            sp.attributes.append(kv(key, value))
    _series, fallback, _c, _w = conn._scanner.scan(request([sp]).to_bytes())
    if "gen_ai.tool.call.id" in extra:
        assert [len(item) for item in fallback] == [12]
    else:
        assert [len(item) for item in fallback] == [4]
        assert fallback[0][3] == b"\x06\x00call_2"


def two_layer_calls_on_both_joins(
    monkeypatch: pytest.MonkeyPatch,
    spans: Callable[[int], list[Span]],
    after_settle: Callable[[Any], Awaitable[None]],
) -> dict[str, Any]:
    """The C join and the pure-Python one, each fed the two layers of one call (``spans``)
    of trace 1 (learning both shapes), then of traces 2 and 3 one layer a request, settled,
    then ``after_settle(connector)``: their outcomes, equal; the C join packed all four
    layers of traces 2 and 3."""
    results = []
    for native in (True, False):
        counts: collections.Counter[str] = collections.Counter()
        monkeypatch.setenv("PIPELINE_NATIVE", "1" if native else "0")

        async def main(
            counts: collections.Counter[str] = counts, native: bool = native
        ) -> dict[str, Any]:
            conn = connector({"window": "1h"}, None)
            if native:
                assert conn._scanner is not None
                conn._scanner = CountingScans(conn._scanner, counts)
            await conn.consume(request(spans(1)))  # learns both shapes
            for trace in (2, 3):
                first, second = spans(trace)
                await conn.consume(request([first]))
                await conn.consume(request([second]))
            conn._settle(time.time_ns(), time.time(), everything=True)
            await after_settle(conn)
            await conn.shutdown()
            return outcome(conn)

        results.append(asyncio.run(main()))
        if native:
            assert counts["packed"] == 4, counts
    native, python = results
    assert native == python
    return native


def test_packed_ids_join_the_calls_and_late_layers_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two layers of one call (a framework span and a layer below it with the same call id,
    not its child) in two requests of one trace are one call, settled in C; a layer of that
    call arriving after it was settled is late (dropped by the scanner), as in Python."""

    def spans(trace: int, parent: int) -> list[Span]:
        return two_layers(trace, parent)

    async def late(conn: Any) -> None:
        await conn.consume(request([spans(3, 9)[1]]))  # its call was settled

    native = two_layer_calls_on_both_joins(monkeypatch, lambda trace: spans(trace, 9), late)
    calls = [v for k, v in native.items() if "tool_calls" in k]
    assert [c[0] for c in calls] == [3], native  # one call per trace
    assert native["late"] == 1


def test_a_late_layer_of_a_trace_held_again_is_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trace settled, then seen again (a new layer: its trace is held again), then a layer of
    the call already counted: late, though its trace is held (the late check is not skipped for
    a held trace), in C as in Python; the new layer is a call of its own."""

    def spans(trace: int) -> list[Span]:
        return two_layers(trace)

    async def again(conn: Any) -> None:
        for trace in (2, 3):
            fresh = span(trace, 6, 1, "execute_tool add", attrs={"gen_ai.operation.name":
                         "execute_tool", "gen_ai.tool.name": "add",
                         "gen_ai.tool.call.id": "c2"}, start=T0 + 0.002)  # fmt: skip
            await conn.consume(request([fresh]))
            assert len(conn.joiner) == 1  # (held again)
            # a layer of the settled call (its call id), then a child of a settled layer
            await conn.consume(request([spans(trace)[1]]))
            child = span(trace, 8, 2, "execute_tool add", attrs={"gen_ai.operation.name":
                         "execute_tool", "gen_ai.tool.name": "add"}, start=T0 + 0.003)  # fmt: skip
            await conn.consume(request([child]))
            conn._settle(time.time_ns(), time.time(), everything=True)

    results = []
    for native in (True, False):
        monkeypatch.setenv("PIPELINE_NATIVE", "1" if native else "0")

        async def main(native: bool = native) -> dict[str, Any]:
            conn = connector({"window": "1h"}, None)
            assert (conn._scanner is not None) == native
            await conn.consume(request(spans(1)))  # learns both shapes
            for trace in (2, 3):
                await conn.consume(request(spans(trace)))
            conn._settle(time.time_ns(), time.time(), everything=True)
            await again(conn)
            await conn.shutdown()
            return outcome(conn)

        results.append(asyncio.run(main()))
    native, python = results
    assert native == python
    calls = [v for k, v in native.items() if "tool_calls" in k]
    assert [c[0] for c in calls] == [5], native  # one call per trace, and the two fresh ones
    assert native["late"] == 4


class OddHash(bytes):
    """A trace id whose hash is not that of its data."""

    def __hash__(self) -> int:
        return 7


def test_settle_simple_keys_a_trace_id_by_its_data_whatever_its_hash() -> None:
    """The C join hashes a trace id once (an exact bytes object's cached hash) for the keys it
    puts by their data; a trace id of a bytes subclass that hashes otherwise is hashed from its
    data: the (trace, span) and ("call", trace, call id) keys it put are found by the same keys
    made of plain bytes in Python, as for a plain trace id."""
    from plugins.agentmetricsconnector.calls import RECORD

    conn = connector({"window": "1h"}, None)
    asyncio.run(conn.consume(request([id_layer(1, "learned")])))
    scanner = conn._scanner
    record = RECORD.pack(1, 8, b"\x02" * 8, 8, b"\x01" * 8, 1, 1, 2, 0)
    for trace in (OddHash(b"\x03" * 16), b"\x04" * 16):
        assert scanner.settle_simple([(trace, record, 1, b"\x02\x00c9")], 0.0) == 1
        plain = bytes(trace)
        assert (plain, b"\x02" * 8) in conn.joiner.settled_memory()
        assert ("call", plain, "c9") in conn.joiner.settled_keys_memory()


@pytest.mark.parametrize(
    "call_id",
    [
        "c1",
        "x" * 127,  # (the longest key leaf looked up and put by its data in C)
        "x" * 128,  # (longer: the key made, as any other memory key)
        "é",  # (Latin-1: not ASCII, the key made)
        "呼び出し",
        "x" * 65_535,
    ],
)
@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "inner-first"])
def test_settled_call_keys_are_the_python_keys_and_late_layers_are_dropped(
    call_id: str, reverse: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The C join looks up and puts its memory keys ((trace, span), ("call", trace, call id))
    by their data, without making them (mem_leaf in _agentscan.c): every key it put is found
    by the same key made in Python, and a layer arriving after its call was settled is late,
    whatever the call id (ASCII, at the length bound and past it, not ASCII, huge) and in
    whichever order the two layers of one call (one call id, the second not the child of the
    first) arrive: the counts are the pure-Python join's."""

    def spans(trace: int) -> list[Span]:
        out = two_layers(trace, call_id=call_id)
        return out[::-1] if reverse else out

    async def late(conn: Any) -> None:
        for memory in (conn.joiner.settled_memory(), conn.joiner.settled_keys_memory()):
            keys = list(memory)
            assert keys
            for key in keys:  # (found by a key made apart: its hash not cached)
                copy = tuple(x[:1] + x[1:] if isinstance(x, bytes | str) else x for x in key)
                assert copy in memory
        for trace in (2, 3):  # late: their call was settled
            await conn.consume(request(spans(trace)[1:]))

    native = two_layer_calls_on_both_joins(monkeypatch, spans, late)
    calls = [v for k, v in native.items() if "tool_calls" in k]
    assert [c[0] for c in calls] == [3], native  # one call per trace
    assert native["late"] == 2


def test_settle_simple_refuses_malformed_ids() -> None:
    """settle_simple reads the ids string it is given (a method anyone can call): lengths past
    its end, zero lengths, unknown flags and bytes left over are refused with ValueError,
    never read out of bounds; nothing is counted."""
    from plugins.agentmetricsconnector.calls import RECORD

    conn = connector({"window": "1h"}, None)
    asyncio.run(conn.consume(request([id_layer(1, "learned")])))
    scanner = conn._scanner
    trace = b"\x01" * 16

    def record(flags: int) -> bytes:
        return RECORD.pack(1, 8, b"\x02" * 8, 8, b"\x01" * 8, flags, 1, 2, 0)

    for flags, ids in [(1, b""), (1, b"\x05\x00ab"), (1, b"\x00\x00"), (4, b""), (0, b"x"),
                       (1, b"\x01\x00ab"), (3, b"\x01\x00a")]:  # fmt: skip
        with pytest.raises(ValueError):
            scanner.settle_simple([(trace, record(flags), 1, ids)], 0.0)
    with pytest.raises(ValueError):
        scanner.settle_simple([(trace, record(1), 1)], 0.0)
    assert scanner.take_calls() == []
    assert scanner.settle_simple([(trace, record(1), 1, b"\x01\x00a")], 0.0) == 1


# -- root tool-call layers (no parent in their trace) packed ------------------------------------

# the MCP SDK's client and server spans, a framework's tool span with and without a call id
ROOT_SHAPES = [ID_SHAPES[1], ID_SHAPES[2], ID_SHAPES[0], (*ID_SHAPES[0][:3], "")]
# what makes a parentless span a workflow root (or says it is not one): such a root layer is
# read in Python (its execution counted beside the layer, or no layer at all)
WORKFLOW_MARKS: list[dict[str, Any]] = [
    {"workflow.type": "triage"},
    {"workflow.name": "triage"},
    {"workflow.id": "run-1"},
    {"workflow.id": "run-1", "workflow.secondary_root": True},
    {"workflow.secondary_root": True},
]
NON_UTF8 = "\x01NONUTF8\x01"  # replaced in the encoded request by BAD_UTF8 (as long)
BAD_UTF8 = b"\xffNON\xc3TF8\xfe"


def root_id(rng: random.Random) -> Any:
    """A join id of a root layer: mostly a few repeated ones, else hostile."""
    return NON_UTF8 if rng.random() < 0.04 else odd_id(rng)


def root_spans(rng: random.Random, traces: list[int], ids: dict[int, list[int]]) -> list[Span]:
    """One request's spans: root tool-call layers of each side (MCP client, MCP server at its
    process's root, framework), with ids drawn from a few (repeated within and across traces)
    or hostile (wrong types, empty, huge, not UTF-8, given twice, beside a session id), now
    and then with a workflow marker, a span id given twice or an empty span id; layers below
    them (joined by parent and id), inference spans and root agent runs; now and then a
    failure."""
    out = []
    for _ in range(rng.randint(1, 10)):
        trace, known, span_id = next_span(rng, traces, ids)
        parent = None if rng.random() < 0.55 else rng.choice(known[:-1] or [1])
        start = T0 + rng.randint(0, 1000) / 1000
        duration = rng.choice([0.001, 0.02, 0.3])
        what = rng.random()
        if what < 0.75:
            name, kind, attrs, key = rng.choice(ROOT_SHAPES)
            attrs = dict(attrs)
            if key:
                attrs[key] = root_id(rng)
            if rng.random() < 0.1:
                attrs.update(rng.choice(WORKFLOW_MARKS))
            if rng.random() < 0.02:
                name = "workflow." + name
            if rng.random() < 0.03:
                attrs["mcp.session.id"] = "s-1"
            sp = span(trace, span_id, parent, name, kind=kind, attrs=attrs, start=start,
                      duration=duration, error="boom" if rng.random() < 0.03 else None)  # fmt: skip
            if key and rng.random() < 0.03:  # the id given twice
                sp.attributes.append(kv(key, root_id(rng)))
            if rng.random() < 0.01:
                sp.span_id = b""
        elif what < 0.88:
            name, kind, attrs = CHAT
            sp = span(trace, span_id, parent, name, kind=kind, attrs=attrs, start=start)
        else:
            sp = span(trace, span_id, parent, "invoke_agent a",
                      attrs={"gen_ai.operation.name": "invoke_agent",
                             "gen_ai.agent.name": "a"}, start=start)  # fmt: skip
        out.append(sp)
    return out


def encoded(spans: list[Span]) -> bytes:
    return request(spans).to_bytes().replace(NON_UTF8.encode(), BAD_UTF8)


@JOIN_SETTINGS
def test_root_layers_packed_count_as_the_python_join(
    join: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root tool-call layers (an MCP SDK client span with no parent in its trace, an MCP
    server span at its process's root, a framework span) are learned and packed like the
    others, and count as the pure-Python join (and, with ids that are not UTF-8, which the
    pure-Python path refuses with the whole request, as the same connector that packs
    nothing) on random sequences with hostile ids and workflow markers: the tool calls,
    failures, late layers and the workflow executions."""

    rng = random.Random(2718)
    items: collections.Counter[str] = collections.Counter()

    from plugins.agentmetricsconnector.calls import RECORD

    def count(item: tuple[Any, ...]) -> None:
        items["packed roots"] += sum(1 for r in RECORD.iter_unpack(item[1]) if r[0] and not r[3])
        items["packed with ids"] += bool(item[3])

    async def main(sequence: list[bytes], counted: bool) -> dict[str, Any]:
        conn = connector(join, None)
        if counted:
            count_packed(conn, count)
        return await consume_all(conn, sequence)

    learn = AgentMetricsConnector._learn
    for _sequence in range(150):
        ids: dict[int, list[int]] = {}
        traces = list(range(1, rng.randint(2, 6)))
        warm = [span(999, 2 + i, None, name, kind=kind,
                     attrs={**attrs, **({key: "w"} if key else {})}, start=T0)
                for i, (name, kind, attrs, key) in enumerate(ROOT_SHAPES)]  # fmt: skip
        warm.append(span(999, 20, 2, CHAT[0], kind=CHAT[1], attrs=CHAT[2], start=T0))
        marked = [(shape, marks) for shape in ROOT_SHAPES for marks in WORKFLOW_MARKS]
        warm += [span(998, 2 + i, None, name, kind=kind, start=T0,
                      attrs={**attrs, **({key: "w"} if key else {}), **marks})
                 for i, ((name, kind, attrs, key), marks) in enumerate(marked)]  # fmt: skip
        spans = [warm] + [root_spans(rng, traces, ids) for _ in range(rng.randint(1, 6))]
        sequence = [encoded(s) for s in spans]
        monkeypatch.delenv("PIPELINE_NATIVE", raising=False)
        monkeypatch.setattr(AgentMetricsConnector, "_learn", learn)
        native = asyncio.run(main(sequence, True))
        items["not UTF-8"] += any(BAD_UTF8 in raw for raw in sequence)
        items["refused"] += native["refused"]
        if not any(BAD_UTF8 in raw for raw in sequence):
            monkeypatch.setenv("PIPELINE_NATIVE", "0")
            assert native == asyncio.run(main(sequence, False)), spans
            monkeypatch.delenv("PIPELINE_NATIVE")
        monkeypatch.setattr(AgentMetricsConnector, "_learn", lambda *args: None)  # no packing
        assert native == asyncio.run(main(sequence, False)), spans
    assert items["packed roots"] > 200 and items["packed with ids"] > 100, items
    assert items["not UTF-8"] > 20, items


@pytest.mark.parametrize("marks", [{}, *WORKFLOW_MARKS, {"name": "workflow.fetch"}])
@pytest.mark.parametrize("shape", range(len(ROOT_SHAPES)))
def test_a_root_layer_is_packed_unless_it_may_be_a_workflow_root(
    shape: int, marks: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root tool-call layer's shape is learned, and the next root layers of that shape are
    packed and settled in C, when no workflow marker makes it (or a span of its shape) a
    workflow root: with one, every such span is read in Python, which counts its execution
    (workflow.type) or reads no layer (the gateway dialect's workflow roots), as the
    pure-Python path does."""
    name, kind, attrs, key = ROOT_SHAPES[shape]
    plain = not marks or marks == {"workflow.secondary_root": True}
    attrs = {**attrs, **{k: v for k, v in marks.items() if k != "name"}}
    name = marks.get("name", name)

    def root(trace: int, call: str) -> Span:
        extra = {key: call} if key else {}
        return span(trace, 5, None, name, kind=kind, attrs={**attrs, **extra}, start=T0,
                    duration=0.25)  # fmt: skip

    results = []
    for native in (True, False):
        counts: collections.Counter[str] = collections.Counter()
        monkeypatch.setenv("PIPELINE_NATIVE", "1" if native else "0")

        async def main(counts: collections.Counter[str] = counts) -> dict[str, Any]:
            conn = connector({"window": "1h"}, None)
            if conn._scanner is not None:
                conn._scanner = CountingScans(conn._scanner, counts)
            settle = conn.joiner.settle

            def counted(now: float, everything: bool = False) -> Any:
                before = conn.joiner.native_calls
                found = settle(now, everything)
                counts["settled in C"] += conn.joiner.native_calls - before
                return found

            conn.joiner.settle = counted
            for trace in range(1, 5):
                await conn.consume(request([root(trace, f"c{trace % 2}")]))
            await conn.shutdown()
            return {**outcome(conn), **workflows(conn)}

        results.append(asyncio.run(main()))
        if native:
            plain = not marks or marks == {"workflow.secondary_root": True}
            assert counts["packed"] == (3 if plain else 0), counts
            assert counts["settled in C"] == 4 or not plain, counts
    assert results[0] == results[1]
    if plain:
        assert sum(v[0] for k, v in results[0].items() if "_calls(" in k) == 4, results[0]


# -- failed layers packed: learned by shape and exception type ----------------------------------
HOSTILE_ERROR_TYPES: list[Any] = ["", "e" * 70_000, 7, True, 2.5]


def hostile_failure(rng: random.Random, s: Span) -> None:
    """Makes a failed span's failure hostile now and then: ``error.type`` empty, huge, not
    UTF-8 or not a string; exception events without attributes, with a type that is not a
    string or not ASCII, a huge message, a first event without a type; a huge or non-ASCII
    status message; the message only an exception event without a type gives; a value that is
    not UTF-8 (rarely: the whole request is refused); or a call id beside the failure."""
    roll = rng.random()
    if roll < 0.015:
        s.attributes.append(kv("error.type", NON_UTF8))
    elif roll < 0.15:
        kept = [a for a in s.attributes if a.key != "error.type"]
        del s.attributes[:]
        s.attributes.extend([*kept, kv("error.type", rng.choice(HOSTILE_ERROR_TYPES))])
    elif roll < 0.22:
        s.events.add(name="exception", time_unix_nano=s.start_time_unix_nano)
    elif roll < 0.28:
        event = s.events.add(name="exception", time_unix_nano=s.start_time_unix_nano)
        event.attributes.add(key="exception.type").value.int_value = 3
    elif roll < 0.34:
        exception(s, "Ошибка", "timed out")
    elif roll < 0.40:
        exception(s, "ValueError", "m" * 70_000)
    elif roll < 0.46:
        s.status.message = rng.choice(["s" * 70_000, "échec"])
    elif roll < 0.52:
        event = s.events.add(name="exception", time_unix_nano=s.start_time_unix_nano)
        event.attributes.add(key="exception.message").value.string_value = "first"
        exception(s, "TimeoutError", "second")
    elif roll < 0.62:  # the message only an exception event gives (classified)
        s.status.message = ""
        event = s.events.add(name="exception", time_unix_nano=s.start_time_unix_nano)
        event.attributes.add(key="exception.message").value.string_value = rng.choice(
            ["timed out", "rate limited", "boom"]
        )
    elif roll < 0.70:
        s.attributes.append(kv("gen_ai.tool.call.id", f"call-{s.span_id.hex()}"))


def rerun(spans: list[Span], run: int) -> list[Span]:
    """The spans as another run of their traces (trace ids of their own)."""
    out = []
    for s in spans:
        c = Span()
        c.CopyFrom(s)
        c.trace_id = bytes([run]) + c.trace_id[1:]
        out.append(c)
    return out


@JOIN_SETTINGS
def test_failed_layers_packed_count_as_the_python_join(
    join: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traces with failures sent as several runs (the same shapes again: the first read in
    Python, the next packed): failed tool-call layers are packed (learned by shape and
    exception type, their message carried with their ids) and the layers of a trace whose
    failed spans give the join no layer are packed beside them; on random sequences with
    hostile failures (see :func:`hostile_failure`), split over requests and sent again (late
    layers): the tool calls, errors_total label sets, late and early counts and workflow
    executions are those of the pure-Python path (of the same connector without failed
    readings learned where a value is not UTF-8, which the pure-Python path refuses with the
    whole request), and of the same connector that packs no failed span."""

    from plugins.agentmetricsconnector.calls import FAILED, RECORD
    from plugins.agentmetricsconnector.connector import FAILURE_ONLY

    rng = random.Random(3141)
    items: collections.Counter[str] = collections.Counter()

    def count(item: tuple[Any, ...]) -> None:
        items["packed failed"] += sum(
            1 for r in RECORD.iter_unpack(item[1]) if r[0] and r[5] & FAILED
        )
        items["packed"] += item[2]

    async def main(sequence: list[bytes], counted: bool) -> dict[str, Any]:
        conn = connector(join, items if counted else None)
        if counted:
            count_packed(conn, count)
        return await consume_all(conn, sequence)

    learn = AgentMetricsConnector._learn

    def no_failed_learning(self: Any, shape: Any, reading: Any) -> None:
        if reading is FAILURE_ONLY or (isinstance(reading, tuple) and len(reading) > 9):
            return
        learn(self, shape, reading)

    for _sequence in range(60):
        base: list[Span] = []
        for trace in range(1, rng.randint(2, 4)):
            spans = failed_trace(rng, trace)
            for s in spans:
                if s.status.code == s.status.STATUS_CODE_ERROR:
                    hostile_failure(rng, s)
            base += spans
        requests = split_and_repeated(
            rng, (rerun(base, run) for run in range(1, rng.randint(3, 5)))
        )
        sequence = [encoded(s) for s in requests]
        bad = any(BAD_UTF8 in raw for raw in sequence)
        items["not UTF-8"] += bad
        monkeypatch.delenv("PIPELINE_NATIVE", raising=False)
        monkeypatch.setattr(AgentMetricsConnector, "_learn", learn)
        native = asyncio.run(main(sequence, True))
        items["refused"] += native["refused"]
        if not bad:
            monkeypatch.setenv("PIPELINE_NATIVE", "0")
            assert native == asyncio.run(main(sequence, False)), requests
            monkeypatch.delenv("PIPELINE_NATIVE")
        monkeypatch.setattr(AgentMetricsConnector, "_learn", no_failed_learning)
        assert native == asyncio.run(main(sequence, False)), requests
    assert items["packed failed"] > 140 and items["packed"] > 300, items
    # (packed traces with failures settled by settle_packed, without their Layer objects)
    assert items["packed with failures"] > 100, items
    assert items["with failures"] > 100 and items["with failed layers"] > 50, items
    assert items["not UTF-8"] >= 3 and items["refused"] >= 3, items


# -- holding a request's Packed items (calls.py hold_packed and its C twin) ---------------------
def hostile_item(rng: random.Random, traces: list[bytes]) -> Any:
    """An item of a request's layers: mostly Packed items of a few traces (links only, a
    few layers, around MAX_ENTRY_ITEMS, huge counts), and now and then what the C side must
    leave to the twin or refuse as it does (Layer objects, tuples of another length or
    subclass, traces and counts of other types)."""
    from plugins.agentmetricsconnector.calls import MAX_ENTRY_ITEMS

    trace = rng.choice(traces)
    count = rng.choice([0, 0, 1, 1, 2, 3, 7, MAX_ENTRY_ITEMS - 1, MAX_ENTRY_ITEMS,
                        MAX_ENTRY_ITEMS + 1, 1 << 61, 1 << 70, -1, -(1 << 70)])  # fmt: skip
    roll = rng.random()
    if roll < 0.8:
        return (trace, rng.randbytes(rng.choice([0, 32, 64])), count, b"")
    return rng.choice([
        Layer(trace, b"\x01", b"", 0, "t"),
        (trace, b"", count),
        (trace, b"", count, b"", 0),
        (trace.hex(), b"", count, b""),  # (a str trace: the twin's)
        (1, b"", count, b""),
        (trace, b"", float(count), b""),
        (trace, b"", bool(count), b""),
        (trace, b"", str(count), b""),
        (trace, b"", None, b""),
        ([trace], b"", count, b""),  # (unhashable)
        Packedlike((trace, b"", count, b"")),
    ])  # fmt: skip


class Packedlike(tuple[Any, ...]):
    """A tuple subclass: not a Packed item (a Layer to the joiner)."""


class OtherEntry:
    """Another slots class of the entry's attributes, in another order (offsets of its own)."""

    __slots__ = ("deadline", "extra", "failures", "layers", "packed", "parents")

    def __init__(self, *args: Any) -> None:
        for name, value in zip(ENTRY_SLOTS, args, strict=True):
            setattr(self, name, value)


ENTRY_SLOTS = ("deadline", "layers", "failures", "parents", "packed", "extra")


def entry_state(entry: Any) -> Any:
    if not hasattr(entry, "__slots__"):
        return entry
    return (type(entry).__name__, *(getattr(entry, name, "<unset>") for name in ENTRY_SLOTS))


def random_pending(rng: random.Random, traces: list[bytes], entry: type) -> Any:
    """A joiner's pending traces: packed entries and unpacked ones, and hostile ones (another
    class, ``packed`` or ``extra`` of another type, unset slots, None)."""
    pending: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
    for trace in rng.sample(traces, rng.randint(0, len(traces))):
        roll = rng.random()
        packed: Any = rng.random() < 0.7
        extra: Any = rng.choice([0, 3, -2, 1 << 62])
        if roll < 0.1:
            packed = rng.choice([1, "yes", None, 0])
        elif roll < 0.2:
            extra = rng.choice([1.5, "x", None])
        if roll > 0.95:
            pending[trace] = rng.choice([None, 7, OtherEntry(0.0, [], [], {}, True, 0)])
            continue
        held = entry(0.5, [(trace, b"", 1, b"")], [], {}, packed, extra)
        if rng.random() < 0.03:
            del held.extra  # (an unset slot: the twin's AttributeError)
        pending[trace] = held
    return pending


def hold_all(
    hold: Any,
    items: list[Any],
    pending: Any,
    grown: list[bytes],
    links: list[Any] | None,
    entry: type,
    max_items: int,
) -> Any:
    """``items`` held as CallJoiner.add holds them with ``hold`` (the Python twin going on
    where the C one stops): the index of every item left to the joiner (the others skipped),
    and the error the twin raised (the state it left compared by the caller)."""
    from plugins.agentmetricsconnector.calls import hold_packed

    left, at = [], 0
    try:
        while at < len(items):
            at = hold(items, at, pending, 1.5, grown, links, entry, max_items)
            if hold is not hold_packed and at < len(items):
                at = hold_packed(items, at, pending, 1.5, grown, links, entry, max_items)
            if at < len(items):
                left.append(at)
                at += 1
    except Exception as exc:  # (the twin's errors, compared)
        return left, type(exc).__name__
    return left, None


def assert_holds_agree(rng: random.Random, rounds: int) -> collections.Counter[str]:
    """Random requests' items held by the C ``hold_packed`` (then the twin where it stops) and
    by the twin alone, on equal pending traces: the same entries (class, deadline, items,
    extra) in the same order of ``pending``, the same ``grown`` and ``links_only`` lists, the
    same items left to the joiner, the same error."""
    from plugins.agentmetricsconnector.calls import _Entry, hold_packed

    native = load("_agentscan")
    assert native is not None
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(rounds):
        traces = [rng.randbytes(16) for _ in range(rng.randint(1, 6))]
        entry = rng.choice([_Entry, _Entry, OtherEntry])
        seed = rng.random()
        items = [hostile_item(rng, traces) for _ in range(rng.randint(0, 40))]
        if rng.random() < 0.1:  # many items of one trace
            items += [(traces[0], b"", rng.choice([0, 1, 5000]), b"")] * rng.randint(1, 3000)
        max_items = rng.choice([0, 5, 10_000])
        links_given = rng.random() < 0.5
        results = []
        for hold in (native.hold_packed, hold_packed):
            pending = random_pending(random.Random(seed), traces, entry)
            grown: list[bytes] = []
            links: list[Any] | None = [] if links_given else None
            if rng.random() < 0.1 and hold is native.hold_packed:
                pending = dict(pending)  # (a plain dict: held as the OrderedDict)
            left = hold_all(hold, items, pending, grown, links, entry, max_items)
            results.append((left, [(t, entry_state(e)) for t, e in pending.items()], grown, links))
        assert results[0] == results[1]
        counts["error" if results[0][0][1] else "held"] += 1
        counts["left"] += len(results[0][0][0])
        counts["entries"] += len(results[0][1])
    return counts


def test_hold_packed_holds_as_its_python_twin() -> None:
    """``_agentscan.hold_packed`` (then the twin where it stops, as ``CallJoiner.add`` goes on)
    against the twin alone on random requests of Packed items, hostile ones among them: the
    same pending entries in the same order, the same lists, the same items left to the
    joiner, the same errors."""
    rng = random.Random(4242)
    counts = assert_holds_agree(rng, 1500)
    assert counts["held"] > 300 and counts["error"] > 300 and counts["left"] > 1000, counts


def test_packed_entries_share_one_empty_failures_and_parents_until_they_have_some() -> None:
    """A packed entry (held in C, or by the twin) keeps no empty list and dict of its own: its
    failures and parents are the shared empty tuple (``NONE_YET``) until a failure arrives (a
    list of its own) or it is unpacked (a list and a dict of its own); nothing is written into
    the shared one, and the joiner counts as the pure-Python one."""
    from plugins.agentmetricsconnector.calls import NONE_YET, hold_packed

    for hold in ("c", "twin"):
        conn = connector({"window": "10s", "max_traces": 100}, None)
        joiner = conn.joiner
        if hold == "twin":
            joiner.hold = hold_packed
        python = CallJoiner(joiner.window, joiner.max_traces, joiner.classify)
        traces = [bytes([k]) * 16 for k in range(1, 4)]
        layers = [Layer(t, b"s" * 8, b"p" * 8, 0, "tool") for t in traces]
        items, order, _late = packed_as_scanned(conn, layers)
        assert all(x.__class__ is tuple for x in items)
        joiner.add(items, [], T0)
        python.add(order, [], T0)
        entries = [joiner.pending[t] for t in traces]
        assert all(e.packed and e.failures is NONE_YET and e.parents is NONE_YET for e in entries)
        labels = (("error_type", "E"), ("component", "tool"), ("severity", "error"),
                  ("recoverable", "false"))  # fmt: skip
        failure = Failure(traces[0], b"p" * 8, b"r" * 8, labels, "", 0, 5)
        joiner.add([], [failure], T0)  # (kept packed: a list of its own)
        python.add([], [failure], T0)
        assert entries[0].packed and entries[0].failures == [failure]
        joiner.add([Layer(traces[1], b"t" * 8, b"s" * 8, 0, "tool")], [], T0)  # (unpacked)
        python.add([Layer(traces[1], b"t" * 8, b"s" * 8, 0, "tool")], [], T0)
        assert not entries[1].packed and entries[1].failures == []
        assert entries[1].parents == {b"s" * 8: b"p" * 8, b"t" * 8: b"s" * 8}
        assert NONE_YET == () and entries[2].failures is NONE_YET
        (c_calls, c_errors), (p_calls, p_errors) = (
            joiner.settle(T0 + 20, True),
            python.settle(T0 + 20, True),
        )
        c_series = calls_per_series(c_calls)
        for key, (n, total) in native_series(conn._scanner.take_calls()).items():
            had, had_total = c_series.get(key, (0, 0.0))
            c_series[key] = (had + n, round(had_total + total, 9))
        assert c_series == calls_per_series(p_calls) and c_errors == p_errors
        assert list(joiner._failed_parents.items.items()) == list(
            python._failed_parents.items.items()
        )


def test_hold_packed_refuses_what_is_not_the_joiners() -> None:
    """Wrong arguments and an entry class it cannot make (no such slots, a class with a
    ``__dict__``, not a class) are refused with TypeError, nothing held."""
    from plugins.agentmetricsconnector.calls import _Entry

    native = load("_agentscan")
    assert native is not None

    class Plain:
        pass

    class Missing:
        __slots__ = ("deadline", "failures", "layers", "packed", "parents")

    item = (b"t" * 16, b"", 1, b"")
    pending: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
    for entry in (Plain, Missing, object, int, _Entry(0.0), None):
        with pytest.raises(TypeError):
            native.hold_packed([item], 0, pending, 1.0, [], None, entry, 10)
    args: tuple[Any, ...]
    for args in (
        ((item,), 0, pending, 1.0, [], None, _Entry, 10),
        ([item], 0, pending, 1.0, (), None, _Entry, 10),
        ([item], 0, pending, 1.0, [], (), _Entry, 10),
        ([item], "0", pending, 1.0, [], None, _Entry, 10),
        ([item], 0, pending, 1.0, [], None, _Entry, "10"),
        ([item], 0, pending, 1.0, [], None, _Entry),
    ):
        with pytest.raises(TypeError):
            native.hold_packed(*args)
    assert not pending
    # past the end (as the twin: the items' length), before the start, another mapping (left
    # to the twin): nothing held
    assert native.hold_packed([item], 5, pending, 1.0, [], None, _Entry, 10) == 1
    assert native.hold_packed([item], -3, pending, 1.0, [], None, _Entry, 10) == 1
    assert list(pending) == [item[0]]
    assert native.hold_packed([item], 0, collections.Counter(), 1.0, [], None, _Entry, 10) == 0


def test_hold_packed_holds_items_that_are_its_own_lists_as_the_twin() -> None:
    """The request's items list given as ``grown``, ``links_only`` or a packed entry's layers
    (it grows while held): the same entries, lists and index as the twin's."""
    from plugins.agentmetricsconnector.calls import _Entry, hold_packed

    native = load("_agentscan")
    assert native is not None
    a, b = b"a" * 16, b"b" * 16
    for alias in ("grown", "links", "layers"):
        results = []
        for hold in (native.hold_packed, hold_packed):
            items: list[Any] = [(a, b"", 3, b""), (b, b"", 0, b""), (a, b"", 20, b""),
                                (b, b"", 0, b"")]  # fmt: skip
            pending: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
            if alias == "layers":
                pending[a] = _Entry(0.5, items, [], {}, True, 0)
            grown = items if alias == "grown" else []
            links = items if alias == "links" else []
            at = hold(items, 0, pending, 1.0, grown, links, _Entry, 10)
            results.append((at, len(items), [entry_state(e) for e in pending.values()]))
        assert results[0] == results[1], alias


def test_packed_entries_of_huge_traces_settle_with_their_request() -> None:
    """A Packed item of more than MAX_ENTRY_ITEMS layers, or one that grows a packed entry past
    it, is due at once (settled with its request) through the joiner with the C scanner's
    hold_packed, as through the twin."""
    from plugins.agentmetricsconnector.calls import MAX_ENTRY_ITEMS

    native = load("_agentscan")
    assert native is not None
    for hold in (native.hold_packed, None):
        joiner = CallJoiner(10.0, 100)
        if hold is not None:
            joiner.hold = hold
        small, huge, grows = b"s" * 16, b"h" * 16, b"g" * 16
        items: list[Any] = [(small, b"", 2, b""), (huge, b"", MAX_ENTRY_ITEMS + 1, b""),
                 (grows, b"", MAX_ENTRY_ITEMS, b"")]  # fmt: skip
        joiner.add(items, [], T0)
        assert list(joiner.pending) == [huge, small, grows]
        assert joiner.pending[huge].deadline == T0
        assert joiner.pending[small].deadline == joiner.pending[grows].deadline == T0 + 10
        items = [(grows, b"", 1, b""), (small, b"", 1, b"")]
        joiner.add(items, [], T0 + 1)
        assert list(joiner.pending) == [grows, huge, small]
        assert joiner.pending[grows].deadline == T0 + 1
        assert (joiner.pending[grows].extra, len(joiner.pending[grows].layers)) == (
            MAX_ENTRY_ITEMS - 1,
            2,
        )


def test_the_late_check_finds_every_key_of_its_memorys_trace_filter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scanner's late check asks a memory's trace filter first (``MemoryObject.tf`` in
    _agentscan.c: made at the first lookup, a bit per trace of the keys put since, made again
    from the keys held once the memory turned over): a key put from Python after the filter
    was made, and one held across its rebuilds (put again, so kept), make a layer of its
    trace late, as the full lookup does."""
    monkeypatch.setenv("PIPELINE_NATIVE", "1")
    if load("_agentscan") is None:
        pytest.skip("the C scanner is not built")

    def big(k: int) -> int:  # (a trace id whose two halves differ from other traces')
        return (k << 64) | (k * 7919)

    def layers(trace: int) -> list[Span]:
        return two_layers(trace)

    async def main() -> None:
        conn = connector({"window": "1h", "max_traces": 10}, None)
        await conn.consume(request(layers(big(1))))  # learns both shapes
        await conn.consume(request(layers(big(2))))  # packed: looked up (the filters made)
        settled = conn.joiner.settled_memory()
        assert settled.__class__ is not collections.OrderedDict
        expiry = (time.time() + 3600, None)
        kept = (big(3).to_bytes(16, "big"), (9).to_bytes(8, "big"))
        settled[kept] = expiry  # (after the filter was made)
        for k in range(3 * settled.size + 4200):  # (turned over: the filter made again)
            settled[(big(1000 + k).to_bytes(16, "big"), (9).to_bytes(8, "big"))] = expiry
            if k % 8 == 0:
                settled[kept] = expiry  # (kept among the newest: moved to the end, not put anew)
        assert kept in settled
        late = conn.joiner.late_layers
        await conn.consume(request(layers(big(3))[1:]))  # its (trace, parent) settled: late
        assert conn.joiner.late_layers == late + 1
        fresh = conn.joiner.late_layers
        await conn.consume(request(layers(big(4))[1:]))  # (no key of its trace: not late)
        assert conn.joiner.late_layers == fresh
        await conn.shutdown()

    asyncio.run(main())
