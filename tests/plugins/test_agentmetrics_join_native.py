"""The join's common case in C (``_agentscan.c``: packed traces, ``settle_simple``) against the
pure-Python join, on random request sequences: the same tool calls, failures and late layers.

Each sequence sends random spans of a few traces over several requests: tool-call layers of
a few shapes (framework function tools, MCP client spans, model retries), agent runs (links),
failed spans, layers below other layers, span ids given twice, layers arriving after their
trace was settled; with a join window of 0 s (every trace settled with its request), of an
hour (everything held until shutdown) and a small ``max_traces`` (the oldest settled early).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind
from plugins._native import load
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from tests.plugins._agent_support import Capture, request, settings, span

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


async def run(requests: list[list[Span]], join: dict[str, Any]) -> dict[str, Any]:
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"),
        AgentMetricsConfig(tool_call_join=join),
        Capture(),
    )
    for spans in requests:
        await conn.consume(request(spans))
    await conn.shutdown()
    return outcome(conn)


@pytest.mark.parametrize(
    "join",
    [{"window": "0s"}, {"window": "1h"}, {"window": "1h", "max_traces": 3}],
    ids=["settled-each-request", "held", "early"],
)
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
        return [len(item) for item in fallback] == [3]

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


def workflows(conn: AgentMetricsConnector) -> dict[str, Any]:
    """The executions and their durations counted (the failed roots' outcomes)."""
    out: dict[str, Any] = {}
    for metric in (conn.executions, conn.workflow_duration):
        for (_resource, attrs), s in metric.series.items():
            out[f"{metric.name}{attrs}"] = (s.count, round(getattr(s, "sum", 0.0), 6))
    return out


async def run_with_workflows(requests: list[list[Span]], join: dict[str, Any]) -> dict[str, Any]:
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics"),
        AgentMetricsConfig(tool_call_join=join),
        Capture(),
    )
    for spans in requests:
        await conn.consume(request(spans))
    await conn.shutdown()
    return {**outcome(conn), **workflows(conn)}


@pytest.mark.parametrize(
    "join",
    [{"window": "0s"}, {"window": "1h"}, {"window": "1h", "max_traces": 3}],
    ids=["settled-each-request", "held", "early"],
)
def test_the_c_join_counts_failed_traces_as_the_python_join(
    join: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traces with failures (the spans the C scanner leaves to Python, read from their own
    encoding there, the Python path re-encoding its view): the same calls, errors, workflow
    outcomes as the pure-Python join."""
    rng = random.Random(1215)
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
            results.append(asyncio.run(run_with_workflows(sequence, join)))
        assert results[0] == results[1], sequence
        errors += sum(v[0] for k, v in results[0].items() if k.startswith("errors"))
    assert errors > 100  # failures were counted, not only calls
