"""One execution per trace when a trace holds several parentless spans (issue 12 item 4):
two processes that did not propagate the context but share a trace id, a late span of
another process. The ``workflow`` processor keeps one root per trace (the first that is a
workflow, else the one the execution is in) and marks the others ``workflow.secondary_root``
(on both trace stores, byte for byte alike); the ``agentmetrics`` connector (C scanner and
Python path) counts the workflow once, with the execution's duration, in its SLA window too;
``tail_sampling`` judges the workflow on the same root. On the recorded real pydantic-ai
served over HTTP (``tests/data/agent_sources/pydantic_ai_http``) with a peer process's span
added, and on hand-built traces."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind, Traces
from pipeline.telemetry import SelfTelemetry
from plugins._native import load as native_load
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from plugins.tailsamplingprocessor.policies import Decision
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import WorkflowProcessor
from tests.plugins._agent_support import Capture, attrs_of, kv, request, settings, span, tid
from tests.plugins._native_support import require_native
from tests.plugins.test__metricsagg import labels, points
from tests.plugins.test_workflow_duration import named, seconds, tail_decision, with_duration
from tests.plugins.test_workflowprocessor_executions import (
    STORES,
    agent_run,
    executions,
    load,
    make,
    one_span_per_request,
    outcomes,
    run,
)

SOURCE = "pydantic_ai_http"
RUN = "invoke_agent calculator"
HTTP = "POST /compute"
PEER = "POST /notify"
MARK = "workflow.secondary_root"


def with_peer(scenario: str, first: bool) -> ExportTraceServiceRequest:
    """The recorded trace plus a parentless SERVER span of another service sharing its trace
    id (a peer that did not propagate the context), longer than the HTTP request."""
    req = load(SOURCE, scenario)
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    root = named(spans, HTTP)
    peer = Span(
        trace_id=root.trace_id,
        span_id=b"\x77" * 8,
        name=PEER,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=root.start_time_unix_nano - 1_000_000,
        end_time_unix_nano=root.end_time_unix_nano + 50_000_000,
        attributes=[kv("http.request.method", "POST"), kv("http.route", "/notify")],
    )
    other = ExportTraceServiceRequest()
    rs = other.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "peer"))
    rs.scope_spans.add().spans.append(peer)
    out = ExportTraceServiceRequest()
    for part in (other, req) if first else (req, other):
        out.resource_spans.extend(part.resource_spans)
    return out


def marked(spans: list[Span]) -> list[str]:
    return sorted(s.name for s in spans if attrs_of(s).get(MARK) is True)


def roots(spans: list[Span]) -> list[str]:
    return sorted(s.name for s in spans if not s.parent_span_id)


# -- the processor -------------------------------------------------------------------------------
@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("scenario", ["success", "failed_run", "slow_tool"])
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("split", [None, 5, 11])
def test_a_peer_root_is_marked_and_the_http_root_keeps_the_execution(
    store: str, scenario: str, first: bool, split: int | None
) -> None:
    req = with_peer(scenario, first)
    requests = [req.SerializeToString()] if split is None else one_span_per_request(req, split)
    spans = run(make(store), requests)
    assert roots(spans) == [HTTP, PEER]
    # the root the execution is in carries its duration, the peer's span the mark only
    assert with_duration(spans) == {HTTP: seconds(named(spans, RUN))}
    assert marked(spans) == [PEER]
    # every span stamped alike: one workflow
    (stamp,) = executions(spans).values()
    assert stamp[0] == "calculator"
    assert all(attrs_of(s)["workflow.type"] == "calculator" for s in spans)


def test_the_stores_give_identical_bytes_with_several_roots() -> None:
    require_native("_tracewire")
    cases: list[list[bytes]] = []
    for scenario in ("success", "failed_run"):
        for first in (True, False):
            req = with_peer(scenario, first)
            cases += [[req.SerializeToString()], one_span_per_request(req, 3)]
    two = [
        span(1, 1, None, "workflow.billing", attrs={"workflow.id": "a"}),
        span(1, 2, None, "workflow.audit", attrs={"workflow.id": "b"}, error="x"),
        span(1, 3, 1, "step"),
        span(1, 4, None, "GET /health"),
    ]
    cases.append([request(two).to_bytes()])
    cases.append([request([s]).to_bytes() for s in reversed(two)])
    # a failed root with an exception event: C leaves its request's trace to the Python rules
    failed = span(2, 2, None, "workflow.audit", error="x")
    failed.events.add(name="exception").attributes.append(kv("exception.type", "TimeoutError"))
    three = [span(2, 1, None, "workflow.billing"), failed, span(2, 3, None, "GET /health")]
    cases.append([request(three).to_bytes()])
    cases.append([request([s]).to_bytes() for s in reversed(three)])
    for requests in cases:
        native = run(make("native"), requests)
        python = run(make("python"), requests)
        assert [s.SerializeToString() for s in native] == [s.SerializeToString() for s in python]


@pytest.mark.parametrize("store", STORES)
def test_two_workflow_roots_in_one_trace_are_one_workflow(store: str) -> None:
    """Two processes each starting a ``workflow.<type>`` root under one trace id: the first to
    arrive is the trace's root (its stamp for every span), the other is marked; one workflow
    counted."""
    telemetry = SelfTelemetry()
    billing = span(1, 1, None, "workflow.billing", attrs={"workflow.id": "wf-a"})
    audit = span(1, 2, None, "workflow.audit", error="boom")
    child = span(1, 3, 2, "step")
    proc = make(store, telemetry)
    spans = run(proc, [request([billing, child]).to_bytes(), request([audit]).to_bytes()])
    assert executions(spans) == {tid(1): ("billing", "unknown", "success", "wf-a")}
    assert marked(spans) == ["workflow.audit"]
    assert with_duration(spans) == {}
    assert outcomes(telemetry) == {"success": 1.0}
    # in one request, the other order: the first again
    # (the other root keeps the workflow.id it has: a span's own stamp attributes are kept)
    spans = run(make(store), [request([audit, child, billing]).to_bytes()])
    step = attrs_of(named(spans, "step"))
    assert (step["workflow.type"], step["workflow.outcome"]) == ("audit", "failed")
    assert attrs_of(named(spans, "workflow.billing"))["workflow.type"] == "audit"
    assert marked(spans) == ["workflow.billing"]


@pytest.mark.parametrize("store", STORES)
def test_a_later_root_that_is_no_workflow_does_not_undo_the_workflow(store: str) -> None:
    """Before: the last parentless span to arrive replaced the root, and a workflow root
    followed by another process's plain span left the trace unstamped."""
    root = span(1, 1, None, "workflow.support", attrs={"workflow.id": "wf-1"})
    child = agent_run(1, 2, 1, "triage")
    other = span(1, 3, None, "GET /health")
    for requests in (
        [request([root, child]).to_bytes(), request([other]).to_bytes()],
        [request([root, child, other]).to_bytes()],
    ):
        spans = run(make(store), requests)
        assert executions(spans) == {tid(1): ("support", "triage", "success", "wf-1")}
        assert marked(spans) == ["GET /health"]


@pytest.mark.parametrize("store", STORES)
def test_an_orphan_run_is_no_second_execution(store: str) -> None:
    """An agent run whose parent never arrives, in a trace that has its execution: part of
    it (not marked: it has a parent), one workflow."""
    telemetry = SelfTelemetry()
    http = span(1, 1, None, "POST /ask", kind=Span.SPAN_KIND_SERVER)
    planner = agent_run(1, 2, 1, "planner", start=1_700_000_000.1, duration=0.5)
    orphan = agent_run(1, 3, 99, "helper", start=1_700_000_000.05, duration=0.02)
    spans = run(make(store, telemetry), [request([http, planner, orphan]).to_bytes()])
    # the run below the root is the execution, though the orphan started first: its parent
    # may be any span of the run that never arrived
    (stamp,) = executions(spans).values()
    assert stamp[:3] == ("planner", "planner", "success")
    assert with_duration(spans) == {"POST /ask": pytest.approx(0.5)}
    assert marked(spans) == []
    assert outcomes(telemetry) == {"success": 1.0}


@pytest.mark.parametrize("store", STORES)
def test_a_late_root_of_another_process_is_marked(store: str) -> None:
    """A parentless span arriving after its workflow was released (stamped from the late-span
    memory) is marked: the workflow was counted on its root."""
    root = span(1, 1, None, "workflow.support", attrs={"workflow.id": "wf-1"})
    proc = make(store)
    early = run(proc, [request([root, span(1, 2, 1, "step")]).to_bytes()])
    assert marked(early) == []
    late = run(proc, [request([span(1, 3, None, "GET /health")]).to_bytes()])
    assert [s.name for s in late] == ["GET /health"]
    assert attrs_of(late[0])["workflow.type"] == "support"
    assert marked(late) == ["GET /health"]


# -- the connector and tail_sampling -------------------------------------------------------------
def connector(path: str, objective: float | None, tel: SelfTelemetry, out: Capture) -> Any:
    cfg: dict[str, Any] = {"metrics_flush_interval": "0s"}
    if objective is not None:
        cfg["sla"] = {"default": f"{objective * 1000:.3f}ms"}
    return AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics", tel), AgentMetricsConfig.model_validate(cfg), out
    )


def native_or_python(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "python":
        monkeypatch.setenv("PIPELINE_NATIVE", "0")
    elif native_load("_agentscan") is None or native_load("_tracewire") is None:
        pytest.skip("the C accelerators are not built")


@pytest.mark.parametrize("path", ["native", "python"])
@pytest.mark.parametrize("scenario", ["success", "failed_run"])
@pytest.mark.parametrize("first", [True, False])
async def test_connector_counts_one_execution_with_its_duration(
    path: str, scenario: str, first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processor then connector: one ``agent_workflow_executions_total``, the agent run's
    duration, one SLA sample (an objective between the run's and the HTTP span's)."""
    native_or_python(path, monkeypatch)
    req = with_peer(scenario, first)
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    execution = seconds(named(spans, RUN))
    objective = (execution + seconds(named(spans, HTTP))) / 2
    tel, out = SelfTelemetry(), Capture()
    conn = connector(path, objective, tel, out)
    proc = WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow", tel),
        WorkflowConfig.model_validate({"wait_duration": "1h"}),
        conn,
        native=path == "native",
    )
    await proc.consume(Traces(req.SerializeToString()))
    await proc.shutdown()
    await conn.shutdown()
    got = out.payloads[0].message()
    (count,) = points(got, "agent_workflow_executions")
    assert count.as_int == 1
    assert labels(count)["workflow_type"] == "calculator"
    (dp,) = points(got, "agent_workflow_duration")
    assert (dp.count, dp.sum) == (1, execution)
    (sla,) = points(got, "agent_workflow_sla_compliance_ratio")
    assert sla.as_double == 1.0
    # both HTTP server spans are still measured as themselves
    assert sum(p.count for p in points(got, "http_request_duration")) == 2


@pytest.mark.parametrize("path", ["native", "python"])
async def test_connector_skips_a_marked_root(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connector alone: a stamped parentless span carrying the mark is no workflow root,
    in the request of its trace's root or in a later one (a late span of another process)."""
    native_or_python(path, monkeypatch)
    stamp = {"workflow.id": "wf-1", "workflow.type": "support", "workflow.outcome": "success"}
    root = span(1, 1, None, "workflow.support", attrs=stamp, duration=2.0)
    other = span(1, 2, None, "GET /health", attrs={**stamp, MARK: True}, duration=9.0)
    tel, out = SelfTelemetry(), Capture()
    conn = connector(path, None, tel, out)
    await conn.consume(request([other, root]))
    await conn.consume(request([other]))
    await conn.shutdown()
    got = out.payloads[-1].message()
    (count,) = points(got, "agent_workflow_executions")
    assert count.as_int == 1
    (dp,) = points(got, "agent_workflow_duration")
    assert (dp.count, dp.sum) == (1, 2.0)


@pytest.mark.parametrize("store", STORES)
def test_tail_sampling_judges_the_root_not_the_marked_span(store: str) -> None:
    req = with_peer("slow_tool", first=True)
    spans = run(make(store), [req.SerializeToString()])
    execution = seconds(named(spans, RUN))
    http = seconds(named(spans, HTTP))
    peer = seconds(named(spans, PEER))
    assert peer > http > execution
    assert tail_decision(spans, execution * 0.9) is Decision.SAMPLED
    assert tail_decision(spans, (execution + http) / 2) is Decision.NOT_SAMPLED
    # two workflow roots: the marked one (longer) is not judged
    stamp = {"workflow.id": "wf-1", "workflow.type": "support"}
    root = span(1, 1, None, "workflow.support", attrs=stamp, duration=1.0)
    other = span(1, 2, None, "workflow.audit", attrs={**stamp, MARK: True}, duration=9.0)
    assert tail_decision([other, root], 2.0) is Decision.NOT_SAMPLED
    assert tail_decision([other, root], 0.5) is Decision.SAMPLED
