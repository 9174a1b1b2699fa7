"""The ``agentmetrics`` connector's whole output on both paths: with the C scanner
(``plugins/_native/_agentscan.c``) and on the pure-Python path (the reference), every metric
family it exports is the same, data point by data point (labels, counts, bucket counts,
exemplars: which, and in which order), over the benchmark's workload after the workflow
processor, the recorded real libraries' spans, and hostile requests near what set the two
apart: a series observed both by the scanner and by the spans it leaves to Python (a failed
workflow root among successful ones), and more measurements per request than a series keeps
exemplars (the ring's position).

Normalised: the order of the series within a metric (the scanner's series are created before
the Python path's), and histogram sums up to float rounding (the scanner adds a request's
measurements up before they reach the series: ``a + (b + c)`` for ``(a + b) + c``, ~1e-14
relative; docs/architecture.md)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind, Traces
from pipeline.telemetry import SelfTelemetry
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from tests.plugins._agent_support import Capture, kv, settings, sid, span, tid
from tests.plugins._native_support import require_native

require_native("_agentscan")

T0 = 1_700_000_000_000_000_000
CORPUS = Path(__file__).resolve().parent.parent / "data" / "agent_sources"
SUM_REL = 1e-12  # float rounding of sums added up in another order


def connector(native: bool, config: dict[str, Any]) -> AgentMetricsConnector:
    old = os.environ.get("PIPELINE_NATIVE")
    os.environ["PIPELINE_NATIVE"] = "1" if native else "0"
    try:
        cfg = AgentMetricsConfig.model_validate({"metrics_flush_interval": "0s", **config})
        conn = AgentMetricsConnector(
            settings(Kind.CONNECTOR, "agentmetrics", SelfTelemetry()), cfg, Capture()
        )
    finally:
        if old is None:
            del os.environ["PIPELINE_NATIVE"]
        else:
            os.environ["PIPELINE_NATIVE"] = old
    assert (conn._scanner is not None) == native
    return conn


async def output(native: bool, requests: list[list[bytes]], config: dict[str, Any]) -> Any:
    """The metrics request the connector flushes at shutdown after ``requests`` (each the
    encoded parts of one payload: several make a merged payload)."""
    conn = connector(native, config)
    for parts in requests:
        await conn.consume(Traces.merge([Traces(p) for p in parts]))
    await conn.shutdown()
    out = conn.next  # (the Capture)
    assert len(out.payloads) == 1
    return ExportMetricsServiceRequest.FromString(out.payloads[0].to_bytes())


def points(req: Any) -> Iterator[tuple[str, str, Any]]:
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                for dp in getattr(m, kind).data_points:
                    yield m.name, kind, dp


def normalised(req: Any, sums: dict[tuple[str, bytes], float]) -> bytes:
    """``req`` with each metric's data points in the order of their attributes, and the sums
    of its histograms taken from ``sums`` (by metric and attributes) when they are within
    float rounding of them."""
    out = ExportMetricsServiceRequest()
    out.CopyFrom(req)
    for rm in out.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                data = getattr(m, m.WhichOneof("data"))
                dps = sorted(data.data_points, key=lambda dp: attrs_key(dp))
                for dp in dps:
                    if m.WhichOneof("data") == "histogram":
                        want = sums.get((m.name, attrs_key(dp)))
                        if want is not None and dp.sum == pytest.approx(want, rel=SUM_REL):
                            dp.sum = want
                copies = [type(dp)() for dp in dps]
                for c, dp in zip(copies, dps, strict=True):
                    c.CopyFrom(dp)
                del data.data_points[:]
                data.data_points.extend(copies)
    return out.SerializeToString(deterministic=True)


def attrs_key(dp: Any) -> bytes:
    return b"\0".join(kv.SerializeToString() for kv in dp.attributes)


async def assert_same_output(
    requests: list[list[bytes]], config: dict[str, Any] | None = None
) -> Any:
    config = config or {}
    python = await output(False, requests, config)
    native = await output(True, requests, config)
    sums = {
        (name, attrs_key(dp)): dp.sum for name, kind, dp in points(python) if kind == "histogram"
    }
    assert normalised(native, sums) == normalised(python, sums)
    return python


# -- realistic workloads ------------------------------------------------------------------------
def workflow_output(root: str, tool_ids: str, traces: int = 60) -> list[bytes]:
    """The benchmark's requests (benchmarks/agent_pipeline.py: 20 traces of 10 spans each,
    every 5th workflow failed) as the workflow processor releases them (stamped)."""
    from benchmarks.agent_components import requests, run_workflow
    from benchmarks.agent_pipeline import Load

    load = Load(traces_per_request=20, root=root, tool_ids=tool_ids)
    reqs = requests(load, traces // load.traces_per_request)
    _, released = asyncio.run(run_workflow(reqs, 2))
    return [p.to_bytes() for p in released]


WORKLOADS = {
    f"{root}-{ids}": workflow_output(root, ids)
    for root in ("workflow", "http")
    for ids in ("real", "none")
}


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # one clock for both paths: the failure/SLO windows bucket workflows by when they count
    monkeypatch.setattr(time, "time_ns", lambda: T0)


@pytest.mark.parametrize("join", ["1s", "0s"])
@pytest.mark.parametrize("merged", [1, 3])
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
async def test_benchmark_workload_gives_the_same_output(
    workload: str, merged: int, join: str
) -> None:
    released = WORKLOADS[workload]
    requests = [released[i : i + merged] for i in range(0, len(released), merged)]
    got = await assert_same_output(requests, {"tool_call_join": {"window": join}})
    names = {name for name, _, _ in points(got)}
    assert {"agent_workflow_duration", "mcp_tool_calls", "errors", "a2a_message_latency"} <= names
    # (the workflow durations have more exemplars than a data point keeps: which are kept and
    # in which order is compared)
    (dp, *_) = (dp for name, _, dp in points(got) if name == "agent_workflow_duration")
    assert dp.count > 3 and len(dp.exemplars) == 3


def corpus() -> list[bytes]:
    from tests.agent_sources._otel import read_corpus

    return [read_corpus(p).SerializeToString() for p in sorted(CORPUS.glob("*/*.json"))]


@pytest.mark.parametrize("merged", [1, 7, 100])
async def test_recorded_real_libraries_give_the_same_output(merged: int) -> None:
    reqs = corpus()
    assert len(reqs) >= 40
    await assert_same_output([reqs[i : i + merged] for i in range(0, len(reqs), merged)])


# -- hostile cases: a series both paths observe in one request, the ring's position -----------
def root(trace: int, wf_type: str, failed: bool, start: float, duration: float) -> Span:
    return span(
        trace,
        1,
        None,
        f"workflow.{wf_type}",
        attrs={"gen_ai.agent.id": "a1", "workflow.id": f"wf-{trace}"},
        error="it broke" if failed else None,
        start=start,
        duration=duration,
    )


def workflows_request(rng: random.Random, first: int, n: int, failed_share: float) -> bytes:
    """``n`` workflow traces of one type (a root, a tool call below it), some failed (left to
    Python by the scanner: the same duration series as the others'), some without a trace id
    (no exemplar)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "svc"))
    ss = rs.scope_spans.add()
    ss.scope.name = "agent.test"
    for t in range(first, first + n):
        duration = rng.choice([0.05, 0.3, 0.7, 1.5, 4.0]) + t * 1e-3
        r = root(t, "plan", rng.random() < failed_share, 1_700_000_000.0 + t, duration)
        tool = span(
            t,
            2,
            1,
            "execute_tool add",
            kind=Span.SPAN_KIND_CLIENT,
            attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add"},
            start=1_700_000_000.0 + t,
            duration=0.01,
        )
        if rng.random() < 0.1:
            r.trace_id = tool.trace_id = b""
        if rng.random() < 0.5:
            ss.spans.extend([r, tool])
        else:
            ss.spans.extend([tool, r])
    return req.SerializeToString()


@pytest.mark.parametrize("exemplars", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
async def test_failed_roots_among_others_keep_the_same_exemplars(seed: int, exemplars: int) -> None:
    rng = random.Random(seed)
    requests = []
    first = 1
    for _ in range(8):
        n = rng.choice([1, 2, exemplars, exemplars + 1, 7, 12])
        parts = [workflows_request(rng, first, n, rng.choice([0.0, 0.3, 0.8, 1.0]))]
        first += n
        if rng.random() < 0.3:  # a merged payload
            parts.append(workflows_request(rng, first, 3, 0.5))
            first += 3
        requests.append(parts)
    got = await assert_same_output(
        requests,
        {"exemplars": {"max_per_data_point": exemplars}, "tool_call_join": {"window": "0s"}},
    )
    durations = [dp for name, _, dp in points(got) if name == "agent_workflow_duration"]
    assert sum(dp.count for dp in durations) == first - 1


async def test_one_failed_root_between_two_series_writes_of_the_scanner() -> None:
    """A failed root (read in Python) between successful ones (read in C) of one series, more
    of them after it than the data point keeps exemplars: its exemplar is pushed out on both
    paths; fewer after it: it is kept, at its place."""
    for after in (1, 4):
        spans = [root(t, "x", t == 3, 1_700_000_000.0, 0.5 + t / 100) for t in range(1, 4 + after)]
        req = ExportTraceServiceRequest()
        ss = req.resource_spans.add().scope_spans.add()
        ss.spans.extend(spans)
        got = await assert_same_output([[req.SerializeToString()]])
        (dp,) = (dp for name, _, dp in points(got) if name == "agent_workflow_duration")
        kept = {ex.trace_id for ex in dp.exemplars}
        assert (tid(3) in kept) == (after < 3)
        assert sid(1) == dp.exemplars[0].span_id


@pytest.mark.parametrize(
    ("agent_id", "label"),
    [
        ("research-agent", "research-agent"),
        ("3f2b8c1e-9a4d-4c7e-8b1a-2d5e6f7a8b9c", "unknown"),  # a per-run id: never a label
        ("pyd_ai_3f2b8c1e9a4d4c7e8b1a2d5e6f7a8b9c", "unknown"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "unknown"),  # a ULID
        ("0123456789abcdef0123", "unknown"),  # long hex
        ("agent-0123456789", "agent-0123456789"),  # not run-id shaped
        ("", "unknown"),
    ],
)
@pytest.mark.parametrize("failed", [False, True])
async def test_an_agent_id_shaped_like_a_run_id_is_no_label(
    agent_id: str, label: str, failed: bool
) -> None:
    """With no workflow processor ahead (no ``workflow.agent.id`` stamp), a root's
    ``gen_ai.agent.id`` names its agent unless it is shaped like a per-run id
    (docs/agent-conventions.md): on both paths, for a successful root (read in C) and a failed
    one (left to Python)."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.spans.append(
        span(
            1,
            1,
            None,
            "workflow.plan",
            attrs={"gen_ai.agent.id": agent_id, "workflow.id": "wf-1"},
            error="it broke" if failed else None,
            start=1_700_000_000.0,
            duration=0.5,
        )
    )
    got = await assert_same_output([[req.SerializeToString()]])
    (dp,) = (dp for name, _, dp in points(got) if name == "agent_workflow_executions")
    labels = {a.key: a.value.string_value for a in dp.attributes}
    assert labels["agent_id"] == label


UUID = "3f2b8c1e-9a4d-4c7e-8b1a-2d5e6f7a8b9c"
# (gen_ai.agent.name, gen_ai.agent.id, workflow.agent.id: None when absent) -> the label
AGENT_CASES = [
    (("calculator", None, None), "calculator"),  # the name alone (pydantic-ai)
    (("calculator", "agent-7", None), "calculator"),  # the name first
    (("calc_agent", UUID, None), "calc_agent"),  # a run's UUID id (LangGraph, OpenLLMetry)
    ((None, "agent-7", None), "agent-7"),  # the id alone
    (("", "agent-7", None), "agent-7"),  # an empty name: the id
    ((UUID, "agent-7", None), "agent-7"),  # a run-id-shaped name: the id
    (("01ARZ3NDEKTSV4RRFFQ69G5FAV", UUID, None), "unknown"),  # both run ids
    ((None, None, None), "unknown"),  # neither
    (("calculator", "agent-7", "planner"), "planner"),  # the workflow processor's stamp wins
    ((UUID, None, "planner"), "planner"),
]


@pytest.mark.parametrize(("attrs", "label"), AGENT_CASES)
@pytest.mark.parametrize("failed", [False, True])
async def test_a_roots_agent_is_read_as_the_workflow_processor_reads_it(
    attrs: tuple[str | None, str | None, str | None], label: str, failed: bool
) -> None:
    """With no workflow processor ahead, a root's agent is its ``gen_ai.agent.name``, else its
    ``gen_ai.agent.id``, neither shaped like a per-run id (``plugins._agentconv.agent_label``,
    the workflow processor's ``agent_of``): on both paths, for a successful root (the scanner)
    and a failed one (``root_facts``)."""
    name, agent_id, stamp = attrs
    given = {"workflow.id": "wf-1"}
    for key, value in (
        ("gen_ai.agent.name", name),
        ("gen_ai.agent.id", agent_id),
        ("workflow.agent.id", stamp),
    ):
        if value is not None:
            given[key] = value
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.spans.append(
        span(
            1,
            1,
            None,
            "workflow.plan",
            attrs=given,
            error="it broke" if failed else None,
            start=1_700_000_000.0,
            duration=0.5,
        )
    )
    got = await assert_same_output([[req.SerializeToString()]])
    (dp,) = (dp for name, _, dp in points(got) if name == "agent_workflow_executions")
    assert {a.key: a.value.string_value for a in dp.attributes}["agent_id"] == label


@pytest.mark.parametrize(("attrs", "label"), [c for c in AGENT_CASES if c[0][2] is None])
def test_agent_label_is_the_workflow_processors_reading(
    attrs: tuple[str | None, str | None, str | None], label: str
) -> None:
    """The shared rule and the workflow processor's own reading of a span's agent agree."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from plugins._agentconv import AttributeNames, agent_label
    from plugins.workflowprocessor.rules import agent_of

    name, agent_id, _ = attrs
    encoded = {
        key: AnyValue(string_value=value).SerializeToString()
        for key, value in (("gen_ai.agent.name", name), ("gen_ai.agent.id", agent_id))
        if value is not None
    }
    assert agent_label(name, agent_id) == agent_of(encoded, AttributeNames())[0]
    assert (agent_label(name, agent_id) or "unknown") == label


# (workflow.type, workflow.name, span name: None when absent) -> the workflow_type label
ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
TYPE_CASES = [
    (("triage", "support", "workflow.plan"), "triage"),  # the type set (control)
    ((UUID, "support", "workflow.plan"), "support"),  # a run-id-shaped type: the name
    (("", "support", "run"), "support"),  # an empty type: the name (control)
    ((UUID, ULID, "workflow.plan"), "plan"),  # both run ids: the span name less the prefix
    ((None, "ab" * 10, "run"), "run"),  # a long-hex name: the span name (no prefix)
    ((UUID, None, "workflow.pyd_ai_" + "ab" * 16), "unknown"),  # all run-id shaped
    ((ULID, UUID, "workflow." + UUID), "unknown"),
    ((None, None, UUID), "unknown"),  # a bare UUID span name, workflow.id alone marks it
    ((None, None, "workflow.é" + UUID), "é" + UUID),  # non-ASCII: no run id (control)
]


def typed_root(trace: int, attrs: tuple[str | None, str | None, str], failed: bool) -> Span:
    wf_type, wf_name, name = attrs
    given = {"workflow.id": "wf-1"}
    for key, value in (("workflow.type", wf_type), ("workflow.name", wf_name)):
        if value is not None:
            given[key] = value
    return span(
        trace,
        1,
        None,
        name,
        attrs=given,
        error="it broke" if failed else None,
        start=1_700_000_000.0 + trace,
        duration=0.5,
    )


def typed_requests(attrs: tuple[str | None, str | None, str], failed: bool) -> list[list[bytes]]:
    """The root alone, request after request (the first teaches a failed root's shape, the
    scanner counts the next ones: ``failed_root`` in _agentscan.c)."""
    out = []
    for t in range(1, 4):
        req = ExportTraceServiceRequest()
        req.resource_spans.add().scope_spans.add().spans.append(typed_root(t, attrs, failed))
        out.append([req.SerializeToString()])
    return out


def execution_types(got: Any) -> dict[str, int]:
    types: dict[str, int] = {}
    for name, _, dp in points(got):
        if name == "agent_workflow_executions":
            label = {a.key: a.value.string_value for a in dp.attributes}["workflow_type"]
            types[label] = types.get(label, 0) + dp.as_int
    return types


@pytest.mark.parametrize(("attrs", "label"), TYPE_CASES)
@pytest.mark.parametrize("failed", [False, True])
async def test_a_roots_workflow_type_skips_run_id_shaped_values(
    attrs: tuple[str | None, str | None, str], label: str, failed: bool
) -> None:
    """With no workflow processor ahead, a root's workflow type is its ``workflow.type``, else
    its ``workflow.name``, else its span name less the prefix, the first not empty nor shaped
    like a per-run id, else ``unknown`` (``plugins._agentconv.workflow_type_of``, the workflow
    processor's reading): on both paths, for a successful root (the scanner) and a failed one
    (``root_facts``, counted by ``failed_root`` once learned)."""
    got = await assert_same_output(typed_requests(attrs, failed))
    assert execution_types(got) == {label: 3}
    durations = {
        {a.key: a.value.string_value for a in dp.attributes}["workflow_type"]
        for name, _, dp in points(got)
        if name == "agent_workflow_duration"
    }
    assert durations == {label}


@pytest.mark.parametrize("native", [True, False])
async def test_connector_alone_types_workflows_as_the_workflow_processor(native: bool) -> None:
    """A connector-only pipeline and a workflow processor + connector pipeline count every
    :data:`TYPE_CASES` root (successful and failed) for the same ``workflow_type``."""
    from benchmarks.agent_components import run_workflow

    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    want: dict[str, int] = {}
    for i, (attrs, label) in enumerate(TYPE_CASES):
        for failed in (False, True):
            ss.spans.append(typed_root(1 + 2 * i + failed, attrs, failed))
            want[label] = want.get(label, 0) + 1
    body = req.SerializeToString()
    _, released = await run_workflow([body], 1)

    async def types(payloads: list[bytes]) -> dict[str, int]:
        conn = connector(native, {})
        for p in payloads:
            await conn.consume(Traces(p))
        await conn.shutdown()
        out = conn.next  # (the Capture)
        return execution_types(ExportMetricsServiceRequest.FromString(out.payloads[0].to_bytes()))

    alone = await types([body])
    after_workflow = await types([p.to_bytes() for p in released])
    assert alone == after_workflow == want


# -- failed workflow roots counted by the scanner (``failed_root`` in _agentscan.c) -------------
RUN_ID = "3f2b8c1e-9a4d-4c7e-8b1a-2d5e6f7a8b9c"
HUGE = "w" * 20_000


def exception_event(s: Span, exc_type: str, message: str = "") -> Span:
    event = s.events.add(name="exception", time_unix_nano=s.start_time_unix_nano)
    event.attributes.append(kv("exception.type", exc_type))
    if message:
        event.attributes.append(kv("exception.message", message))
    return s


# (name, attributes, status message, exception (type, message) or None, kind) of failed roots:
# the outcome given (failed, timeout, cancelled) or found in the evidence (a timeout, a
# cancellation in the status message or the exception), error.type or the exception's type,
# severity and recoverable given or derived (an HTTP status), the workflow duration given, an
# agent id given, shaped like a run id, stamped by the workflow processor; hostile values: a
# huge name, non-ASCII messages (the full decode: Python's), an HTTP server root (more metrics)
FAILED_ROOTS = [
    ("workflow.plan", {"gen_ai.agent.id": "a1", "workflow.id": "w"}, "it broke", None, 0),
    ("workflow.plan", {"workflow.outcome": "timeout", "workflow.id": "w"}, "slow", None, 0),
    ("workflow.plan", {"workflow.outcome": "cancelled"}, "", ("CancelledError", "stop"), 0),
    ("workflow.plan", {"workflow.outcome": "nonsense"}, "Deadline exceeded", None, 0),
    ("workflow.plan", {"workflow.id": "w"}, "the user CANCELLED it", None, 0),
    ("workflow.plan", {"workflow.id": "w"}, "", ("TimeoutError", "after 30s"), 0),
    ("workflow.plan", {"workflow.id": "w"}, "", ("ValueError", ""), 0),
    ("workflow.plan", {"workflow.id": "w", "error.type": "rate_limited"}, "429", None, 0),
    (
        "run",
        {
            "workflow.type": "triage",
            "error.type": "tool_error",
            "error.severity": "warning",
            "error.recoverable": "maybe",
        },
        "x",
        ("KeyError", "k"),
        0,
    ),
    ("run", {"workflow.name": "support", "http.response.status_code": "503"}, "upstream", None, 0),
    ("run", {"workflow.name": "support", "http.status_code": "429"}, "throttled", None, 0),
    ("workflow.", {"workflow.id": "w", "workflow.duration": 12.5}, "late", None, 0),
    ("workflow.plan", {"workflow.id": "w", "workflow.duration": "12.5"}, "late", None, 0),
    ("workflow.plan", {"workflow.id": "w", "gen_ai.agent.id": RUN_ID}, "it broke", None, 0),
    (
        "workflow.plan",
        {"workflow.id": "w", "gen_ai.agent.id": "pyd_ai_" + "ab" * 16},
        "no",
        None,
        0,
    ),
    (
        "workflow.plan",
        {"workflow.id": "w", "workflow.agent.id": "stamped", "workflow.complexity_tier": "complex"},
        "it broke",
        None,
        0,
    ),
    ("workflow." + HUGE, {"workflow.id": "w", "gen_ai.agent.id": HUGE}, "huge " + HUGE, None, 0),
    ("workflow.plan", {"workflow.id": "w"}, "échec: délai dépassé", None, 0),
    ("workflow.plan", {"workflow.id": "w"}, "", ("TimeoutError", "délai"), 0),
    ("workflow.plan", {"workflow.id": "w", "error.type": "ошибка"}, "boom", None, 0),
    ("workflow.plan", {"workflow.id": "w"}, "not a root's", None, Span.SPAN_KIND_SERVER),
    ("chat gpt-4", {"gen_ai.operation.name": "chat", "workflow.id": "w"}, "llm", None, 0),
    ("workflow.plan", {"workflow.id": "w", "workflow.secondary_root": True}, "second", None, 0),
    # a failure the remote peer answered with (a2a-sdk's: counted there), a status report
    # (an ASGI span's 5xx without an exception: no failure of its own): so without the gateway
    # dialect (which the workflow markers select first)
    (
        "a2a.client.Agent.run",
        {"workflow.id": "w"},
        "",
        ("a2a.utils.errors.InternalError", "no"),
        Span.SPAN_KIND_CLIENT,
    ),
    (
        "workflow.plan",
        {"workflow.id": "w", "asgi.event.type": "http.response.start"},
        "500",
        None,
        0,
    ),
]
PEER, STATUS_REPORT = len(FAILED_ROOTS) - 2, len(FAILED_ROOTS) - 1


def failed_roots_request(first: int, nested: bool) -> bytes:
    """One trace per :data:`FAILED_ROOTS` entry from trace ``first`` on: the root, an agent run
    below it (failed every other trace), another agent run below that when ``nested``, and a
    tool call at the bottom (failed in three traces of four: the root's failure then is only
    propagated, not counted)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "svc"))
    ss = rs.scope_spans.add()
    ss.scope.name = "agent.test"
    for i, (name, attrs, message, exc, kind) in enumerate(FAILED_ROOTS):
        t = first + i
        start = 1_700_000_000.0 + t
        r = span(
            t,
            1,
            None,
            name,
            kind=kind or Span.SPAN_KIND_INTERNAL,
            attrs=attrs,
            error=message,
            start=start,
            duration=0.25 + i / 8,
        )
        if exc is not None:
            exception_event(r, *exc)
        spans = [r]
        run_attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
        spans.append(
            span(
                t,
                2,
                1,
                "invoke_agent planner",
                attrs=run_attrs,
                error="it broke" if t % 2 else None,
                start=start,
                duration=0.2,
            )
        )
        below = 2
        if nested:
            spans.append(
                span(
                    t,
                    3,
                    2,
                    "invoke_agent helper",
                    attrs={**run_attrs, "gen_ai.agent.name": "helper"},
                    start=start,
                    duration=0.1,
                )
            )
            below = 3
        tool = span(
            t,
            4,
            below,
            "execute_tool add",
            kind=Span.SPAN_KIND_CLIENT,
            attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add"},
            error="it broke" if t % 4 else None,
            start=start,
            duration=0.01,
        )
        spans.append(exception_event(tool, "ValueError", "bad") if t % 4 else tool)
        ss.spans.extend(spans if t % 3 else spans[::-1])
    return req.SerializeToString()


def failed_roots_requests() -> list[list[bytes]]:
    """The same shapes request after request (the first teaches them, the scanner counts the
    next ones), a merged payload among them."""
    n = len(FAILED_ROOTS)
    out = [[failed_roots_request(1 + k * n, nested=k % 2 == 1)] for k in range(4)]
    out.append([failed_roots_request(1 + 4 * n, True), failed_roots_request(1 + 5 * n, False)])
    return out


NO_GATEWAY = {"dialects": {"disable": ["gateway"]}}


@pytest.mark.parametrize("gateway", [True, False])
@pytest.mark.parametrize("exemplars", [1, 3])
@pytest.mark.parametrize("join", ["1s", "0s"])
async def test_failed_roots_give_the_same_output(join: str, exemplars: int, gateway: bool) -> None:
    got = await assert_same_output(
        failed_roots_requests(),
        {
            "tool_call_join": {"window": join},
            "exemplars": {"max_per_data_point": exemplars},
            **({} if gateway else NO_GATEWAY),
        },
    )
    executions = [
        {a.key: a.value.string_value for a in dp.attributes}
        for name, _, dp in points(got)
        if name == "agent_workflow_executions"
    ]
    assert {"failed", "timeout", "cancelled"} <= {labels["outcome"] for labels in executions}
    assert {"a1", "stamped", "unknown"} <= {labels["agent_id"] for labels in executions}
    errors = [dp for name, _, dp in points(got) if name == "errors"]
    types = {a.value.string_value for dp in errors for a in dp.attributes if a.key == "error_type"}
    assert {"rate_limited", "tool_error", "TimeoutError", "ValueError", "_OTHER"} <= types


@pytest.mark.parametrize("gateway", [True, False])
async def test_failed_roots_of_a_learned_shape_are_counted_by_the_scanner(
    monkeypatch: pytest.MonkeyPatch, gateway: bool
) -> None:
    """Once a failed workflow root's shape and exception type were read in Python, the scanner
    counts the next ones: none of them is left to Python again (only its failure is handed
    over, as the Failure's arguments); only those whose facts the scanner leaves to Python
    are: a duration that is no double, non-ASCII evidence of the outcome (status message,
    exception message, error.type), a server root (counted for more), a secondary root (no
    workflow root), an inference. Without the gateway dialect: a peer's failure (handed over
    as one) and a status report (no failure to hand over)."""
    conn = connector(True, {"tool_call_join": {"window": "1s"}, **({} if gateway else NO_GATEWAY)})
    left: list[int] = []  # (FAILED_ROOTS indexes of the roots left to Python)
    handed: list[int] = []  # (of the failures handed over)
    original = conn._read_fallback

    def index(trace: bytes) -> int:
        return (int.from_bytes(trace, "big") - 1) % len(FAILED_ROOTS)

    def reading(raw: Any, fallback: list[Any], *args: Any, **kwargs: Any) -> None:
        for item in fallback:
            if len(item) == 9:
                handed.append(index(item[0]))
                assert item[8] == (index(item[0]) == PEER and not gateway)
            elif len(item) == 12 and not item[9]:
                left.append(index(item[7]))
        original(raw, fallback, *args, **kwargs)

    monkeypatch.setattr(conn, "_read_fallback", reading)
    # (see the docstring; without the gateway dialect the chat span is an inference: Python's)
    python = {12, 17, 18, 19, 20, 22} | (set() if gateway else {21})
    for k, parts in enumerate(failed_roots_requests()):
        left.clear()
        handed.clear()
        await conn.consume(Traces.merge([Traces(p) for p in parts]))
        assert set(left) == (set(range(len(FAILED_ROOTS))) if k == 0 else python)
        # (the others' failures: those that are no status report, a peer's among them)
        assert set(handed) == (
            set()
            if k == 0
            else set(range(len(FAILED_ROOTS))) - python - (set() if gateway else {STATUS_REPORT})
        )
        assert handed.count(PEER) == (0 if k == 0 else len(parts))


# -- tokens and cost of the workflow of their trace (connector.py _count_tokens) ---------------
PRICES = {
    "function:model:": {"input": 1.0, "output": 2.0},
    "unknown": {"input": 0.5, "output": 4.0},
}


def workflow_corpus(order: str) -> list[bytes]:
    """The recorded real libraries' requests with their parentless spans named workflows
    (``workflow.name``), each whole, or as two requests: its roots first or last."""
    from tests.agent_sources._otel import read_corpus
    from tests.plugins.test_agentmetrics_corpus import as_workflows, split_roots

    out = []
    for p in sorted(CORPUS.glob("*/*.json")):
        req = as_workflows(read_corpus(p))
        if order == "whole":
            out.append(req.SerializeToString())
            continue
        roots, rest = split_roots(req)
        out.extend([roots, rest] if order == "roots first" else [rest, roots])
    return out


@pytest.mark.parametrize(("merged", "max_traces"), [(1, 10_000), (7, 1)])
@pytest.mark.parametrize("window", ["10s", "0s"])
@pytest.mark.parametrize("order", ["whole", "roots first", "roots last"])
async def test_workflow_tokens_and_cost_give_the_same_output(
    order: str, window: str, merged: int, max_traces: int
) -> None:
    """The inference calls' tokens and cost in their trace's workflow totals, the roots
    counted by the scanner (put into the connector's memory by ``put_roots``) or in Python:
    the same output, in one request or the roots before or after the calls; also with the
    memory of roots at its bound (4 x ``max_traces``: fewer than a merged request's roots,
    all of which are kept while its calls are counted)."""
    reqs = workflow_corpus(order)
    join = {"window": window, "max_traces": max_traces}
    got = await assert_same_output(
        [reqs[i : i + merged] for i in range(0, len(reqs), merged)],
        {"prices": PRICES, "tool_call_join": join},
    )
    names = {name for name, _, _ in points(got)}
    if order == "roots last" and window == "0s" and merged == 1:
        assert "agent_workflow_tokens" not in names  # (no root in time: no workflow's)
    else:
        assert {"agent_workflow_tokens", "agent_workflow_cost_usd"} <= names


def test_put_roots_puts_the_last_scans_roots_once() -> None:
    """``Scanner.put_roots``: the roots the last scan counted, trace id -> (type, agent), in
    span order, put once (a scan forgets the previous one's); a memory of another type is
    refused."""
    native = require_native("_agentscan")
    scanner = connector(True, {})._scanner
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for trace, (attrs, _) in enumerate(TYPE_CASES[:2], 1):
        spans.append(typed_root(trace, attrs, False))
    spans[1].attributes.append(kv("gen_ai.agent.name", "triager"))
    body = req.SerializeToString()
    memory = native.RootMemory(8)
    scanner.scan(body)
    scanner.put_roots(memory)
    assert memory.items() == [
        (tid(1), ("triage", "unknown")),
        (tid(2), ("support", "triager")),
    ]
    memory.clear()
    scanner.put_roots(memory)  # (put already)
    assert len(memory) == 0
    scanner.scan(body)
    scanner.scan(b"")  # (a scan forgets the last one's roots)
    scanner.put_roots(memory)
    assert len(memory) == 0
    with pytest.raises(TypeError):
        scanner.put_roots({})
    with pytest.raises(TypeError):
        scanner.put_roots(native.Memory(8))  # (the joiner's memory: not this one)
    # others (the roots read in Python): put in span order with the scan's, by offset
    scanner.scan(body)
    first = body.index(tid(1))  # (inside the first root span: before the second's offset)
    for bad in ([(first, tid(9))], [(first, (tid(9),), ("a", "b"))]):
        with pytest.raises(TypeError):
            scanner.put_roots(memory, bad)  # (nothing put)
    assert len(memory) == 0
    others = [(0, tid(2), ("early", "a")), (first, tid(1), ("late", "b"))]
    scanner.put_roots(memory, others)
    # (tid 2 early, the scan's tid 1, tid 1 late, the scan's tid 2: each put moves its key last)
    assert memory.items() == [(tid(1), ("late", "b")), (tid(2), ("support", "triager"))]


HOSTILE_IDS = [
    bytes(16),  # all zero (OTLP's invalid trace id)
    b"\xff" * 16,
    tid(1),
    tid(2),
    tid(1 << 64),  # (tid(0)'s low half, tid(1)'s high half less one bit)
    b"\x00" * 15 + b"\x01",
    # ids of another length than 16 (the edge refuses them; the connector alone takes them)
    b"",
    bytes(8),
    bytes(15),
    bytes(17),
    tid(1)[:8],
    tid(1) + b"\x00",
    bytes(300),
]


def roots_pair(size: int) -> tuple[Any, Any]:
    """The C table of roots and its twin (connector.py ``RootMemory``), both of ``size``."""
    from plugins.agentmetricsconnector.connector import RootMemory

    return require_native("_agentscan").RootMemory(size), RootMemory(size)


def assert_same_roots(c: Any, twin: Any) -> None:
    assert c.items() == list(twin.items())
    assert c.keys() == list(twin.keys())
    assert len(c) == len(twin)
    assert c.size == twin.size


@pytest.mark.parametrize("seed", range(4))
def test_root_memory_is_its_twin_under_hostile_ids(seed: int) -> None:
    """The C table of roots (keyed by the raw trace id) holds what its twin holds, in the same
    order, through random puts, lookups, clears and bounds, on hostile ids: all-zero ids,
    repeated ids, ids equal but for one byte or one half, ids of another length than 16
    (empty, shorter, longer); bounds of 0 and 1, lowered and raised under the entries."""
    rng = random.Random(seed)
    c, twin = roots_pair(rng.choice([0, 1, 3, 8]))
    ids = HOSTILE_IDS + [rng.randbytes(16) for _ in range(20)]
    values = [(f"t{i}", f"a{i % 3}") for i in range(5)]
    for _ in range(3000):
        op = rng.random()
        trace = rng.choice(ids)
        if op < 0.6:
            value = rng.choice(values)
            c.put(trace, value)
            twin.put(trace, value)
        elif op < 0.9:
            assert c.get(trace) == twin.get(trace)
            assert c.get(trace, "x") == twin.get(trace, "x")
            assert (trace in c) == (trace in twin)
        elif op < 0.97:
            size = rng.choice([0, 1, 2, 5, 16, 1 << 62])
            c.size = twin.size = size
        else:
            c.clear()
            twin.clear()
        assert_same_roots(c, twin)
    c.size = twin.size = -3  # (below 0: 0, nothing kept)
    c.put(tid(5), values[0])
    twin.put(tid(5), values[0])
    assert_same_roots(c, twin)
    assert len(c) == 0
    for bad in ((tid(1),), "trace", 7, None, bytearray(16)):
        with pytest.raises(TypeError):
            c.put(bad, values[0])
        with pytest.raises(TypeError):
            c.get(bad)
        with pytest.raises(TypeError):
            assert bad not in c


def test_root_memory_keeps_the_newest_roots_over_its_bound() -> None:
    """Many distinct roots over the bound: the newest ``size`` kept, the oldest dropped first
    (a root put again is the newest); lifting the bound (a request's roots all kept while its
    calls are counted) then lowering it again drops the oldest beyond it."""
    c, twin = roots_pair(64)
    for i in range(20_000):
        trace = (i * 2654435761 % (1 << 64)).to_bytes(16, "little")
        c.put(trace, ("t", str(i % 7)))
        twin.put(trace, ("t", str(i % 7)))
        if i % 100 == 0:
            old = c.keys()[0]
            c.put(old, ("again", "x"))
            twin.put(old, ("again", "x"))
    assert_same_roots(c, twin)
    assert len(c) == 64
    small = c.__sizeof__()
    c.size = twin.size = 1 << 62
    for i in range(5000):
        c.put(tid(i), ("t", "a"))
        twin.put(tid(i), ("t", "a"))
    assert len(c) == 5064
    c.size = twin.size = 64
    assert_same_roots(c, twin)
    assert c.keys() == [tid(i) for i in range(5000 - 64, 5000)]
    assert c.__sizeof__() > small  # (the table keeps the room it grew to)
    assert c.get(tid(4999)) == ("t", "a")
    assert c.get(tid(0)) is None


def input_tokens(req: Any) -> int:
    return sum(
        dp.as_int
        for name, _, dp in points(req)
        if name == "agent_workflow_tokens" and (b"input" in attrs_key(dp))
    )


@pytest.mark.parametrize("max_traces", [1, 4, 10_000])
async def test_workflow_tokens_of_hostile_trace_ids_give_the_same_output(max_traces: int) -> None:
    """The tokens of inference calls by the roots of their traces, the roots' trace ids all
    zero, repeated (a later root of the trace relabels it and makes it the newest), many more
    than the memory's bound (4 x ``max_traces``: the oldest dropped, their calls in no
    workflow's totals when they come in a later request): the C scanner's table of raw trace
    ids and the Python path give the same output."""
    roots, calls = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    root_spans = roots.resource_spans.add().scope_spans.add().spans
    call_spans = calls.resource_spans.add().scope_spans.add().spans
    for t in [0, *range(1, 40), 0, 3]:  # (trace 0: the all-zero id, twice; 3 again)
        attrs = {"workflow.id": "wf", "workflow.type": f"type{t % 5}"}
        root_spans.append(span(t, 1, None, "workflow.run", attrs=attrs))
    for t in range(40):
        tokens = {"gen_ai.usage.input_tokens": 10 + t, "gen_ai.usage.output_tokens": 1}
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "unknown", **tokens}
        call_spans.append(span(t, 2, 1, "chat m", kind=Span.SPAN_KIND_CLIENT, attrs=attrs))
    both = [roots.SerializeToString(), calls.SerializeToString()]
    join = {"window": "0s", "max_traces": max_traces}
    config = {"prices": PRICES, "tool_call_join": join}
    whole = await assert_same_output([both], config)  # (one request: every root kept meanwhile)
    split = await assert_same_output([[p] for p in both], config)
    assert input_tokens(whole) == sum(10 + t for t in range(40))
    # kept: the newest 4 x max_traces roots (3, 0, 39, 38, ...)
    kept = [3, 0, *(t for t in range(39, 0, -1) if t != 3)][: 4 * max_traces]
    assert input_tokens(split) == sum(10 + t for t in kept)


# -- attribute keys near a configured key (the scanner's key table, keytab_probe) ---------------
# configured keys of each kind of lookup: up to 14 bytes (told by the words of the key's head and
# end), 15 to 22 (and the word between), longer (compared whole); each read by a span of the
# request below, so that taking a near key for it changes the output
NEAR_KEYS = [
    "error.type",
    "http.route",
    "http.request.method",
    "a2a.message.type",
    "gen_ai.operation.name",
    "workflow.complexity_tier",
]


def near_keys(key: str) -> list[str]:
    """Keys that share the length of ``key`` and all its bytes but one (each position: the
    first, the last, the head's and the end's words, the bytes between), and its prefix and
    extension by one byte."""
    out = {key[:-1], key + "e", key + key[-1], key[1:]}
    for i in range(len(key)):
        out.add(key[:i] + ("#" if key[i] != "#" else "$") + key[i + 1 :])
    out.discard(key)
    return sorted(out)


def near_key_spans(with_near: bool) -> bytes:
    """A workflow root (a server span) per near key, the near key (when ``with_near``) valued as
    the key it is near would change the root's reading: an error type (a failed outcome), a
    route, a method, an A2A message type (a producer: counted as sent), a tool call's operation
    (the span would be left to Python), a complexity tier (a label)."""
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    trace = 0
    for key in NEAR_KEYS:
        for near in near_keys(key):
            trace += 1
            attrs = {"http.request.method": "GET", "http.route": "/r"}
            if with_near:
                attrs[near] = "execute_tool" if key == "gen_ai.operation.name" else "near"
            kind = Span.SPAN_KIND_PRODUCER if key == "a2a.message.type" else Span.SPAN_KIND_SERVER
            spans.append(span(trace, 1, None, "workflow.t", kind=kind, attrs=attrs))
    return req.SerializeToString()


async def test_keys_near_a_configured_key_are_not_taken_for_it() -> None:
    """An attribute key one byte away from a configured key (same length, any position), a
    prefix or an extension of it is no such key: the same output on both paths, and as if the
    spans had no such attribute (a wrong dispatch in the scanner's key table, say one that
    compared a key's length and head and end only, fails this)."""
    got = await assert_same_output([[near_key_spans(True)]])
    without = await output(True, [[near_key_spans(False)]], {})
    assert normalised(got, {}) == normalised(without, {})
    names = {name for name, _, _ in points(got)}
    assert "agent_workflow_executions" in names and "a2a_messages_sent" not in names


def _ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field (its length a varint)."""
    n, head = len(payload), bytearray([number << 3 | 2])
    while n >= 0x80:
        head.append(n & 0x7F | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + payload


def two_key_entry(first: str, key: str, value: str) -> bytes:
    """An attribute entry (KeyValue) with two keys, ``first`` then ``key``, and a string value:
    a full parse takes the last key."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    return (_ld(1, first.encode()) + _ld(1, key.encode())
            + _ld(2, AnyValue(string_value=value).SerializeToString()))  # fmt: skip


async def test_an_attribute_entry_with_two_keys_is_read_by_its_last_key() -> None:
    """An attribute entry of two keys is the last key's (as protobuf, the Python path's full
    parse, reads it), whatever the first: a route or a tool call's operation there counts on
    both paths as on the Python path (the scanner once skipped such an entry when its first key
    was of no interest)."""
    body = b""
    firsts = ["app.attr.0", "x", "zz.unknown", "service.version", "http.route"]
    for n, first in enumerate(firsts):
        for k, (key, value) in enumerate((("http.route", "/two"),
                                          ("gen_ai.operation.name", "execute_tool"))):  # fmt: skip
            s = span(2 * n + k + 1, 1, None, "GET /a", kind=Span.SPAN_KIND_SERVER,
                     attrs={"http.request.method": "GET"})  # fmt: skip
            body += _ld(2, s.SerializeToString() + _ld(9, two_key_entry(first, key, value)))
    got = await assert_same_output([[_ld(1, _ld(2, body))]])
    routes = {dict((kv.key, kv.value.string_value) for kv in dp.attributes).get("endpoint")
              for name, _, dp in points(got) if name == "http_request_duration"}  # fmt: skip
    assert "/two" in routes, routes
