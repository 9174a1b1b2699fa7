"""The ``workflow`` processor's executions (issue 12 item 4): the outermost agent run or
workflow of a trace, read with the agent dialect tables, on the recorded spans of the real
libraries (``tests/data/agent_sources``) and on hand-built edge cases; on both trace stores."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind
from pipeline.telemetry import SelfTelemetry
from plugins._agentdialects import looks_like_run_id
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import WorkflowProcessor
from tests.plugins._agent_support import Capture, attrs_of, kv, request, settings, span, tid
from tests.plugins._native_support import require_native

CORPUS = Path(__file__).resolve().parent.parent / "data" / "agent_sources"
STORES = ["native", "python"]

S, F, T = "success", "failed", "timeout"
# source -> scenario -> the executions (workflow_type = agent, outcome) its traces hold
PYDANTIC = {"success": S, "tool_error": F, "tool_timeout": T, "model_retry": S,
            "failed_run": F, "slow_tool": S}  # fmt: skip
LANGGRAPH = {"success": S, "tool_error": F, "tool_timeout": T, "failed_run": F, "slow_tool": S}
EXPECTED: dict[str, tuple[str, dict[str, str]]] = {
    # a tool raising fails the run (pydantic-ai re-raises it); its timeout is a TimeoutError
    "pydantic_ai": ("calculator", PYDANTIC),
    # over MCP the server's timeout reaches the agent as fastmcp's ToolError("Error executing
    # tool lookup"): the telemetry says failed, not timeout
    "pydantic_ai_mcp": ("calculator", {**PYDANTIC, "tool_timeout": F}),
    # served over HTTP: the execution is the agent run below the HTTP server span
    "pydantic_ai_http": ("calculator", {"success": S, "failed_run": F, "slow_tool": S}),
    # OpenInference: the graph's AGENT span; OpenLLMetry: the traceloop workflow span below an
    # invoke_agent span without gen_ai attributes (its create_agent trace is no execution)
    "langgraph_openinference": ("calc_agent", LANGGRAPH),
    "langgraph_openllmetry": ("calc_agent", LANGGRAPH),
}
# sources without agent runs: MCP alone, a2a-sdk (its spans say a message was handled, not
# that an agent ran)
NO_EXECUTIONS = ("mcp_stdio", "mcp_http", "mcp_openinference", "mcp_openllmetry", "a2a_sdk")


def corpus_cases() -> list[tuple[str, str]]:
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    return [(source, scenario) for source, m in manifest.items() for scenario in m["scenarios"]]


def load(source: str, scenario: str) -> ExportTraceServiceRequest:
    text = (CORPUS / source / f"{scenario}.json").read_text()
    return json_format.Parse(text, ExportTraceServiceRequest())


def one_span_per_request(req: ExportTraceServiceRequest, seed: int) -> list[bytes]:
    """Every span in a request of its own (with its resource and scope), shuffled: the
    execution is found whatever order its trace arrives in."""
    out = []
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                one = ExportTraceServiceRequest()
                r = one.resource_spans.add()
                r.resource.CopyFrom(rs.resource)
                sc = r.scope_spans.add()
                sc.scope.CopyFrom(ss.scope)
                sc.spans.append(s)
                out.append(one.SerializeToString())
    random.Random(seed).shuffle(out)
    return out


def make(store: str, telemetry: SelfTelemetry | None = None) -> WorkflowProcessor:
    if store == "native":
        require_native("_tracewire")
    return WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow", telemetry or SelfTelemetry()),
        WorkflowConfig.model_validate({"wait_duration": "10s"}),
        Capture(),
        native=store == "native",
    )


def run(proc: WorkflowProcessor, requests: list[bytes]) -> list[Span]:
    for raw in requests:
        proc._ingest(raw, 0.0)
    proc._release_all("shutdown")
    out: list[Span] = []
    while proc._outbox:
        payload, _, _ = proc._outbox.popleft()
        req = ExportTraceServiceRequest.FromString(payload.to_bytes())
        out += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return out


def executions(spans: list[Span]) -> dict[bytes, tuple[str, str, str, str]]:
    """trace id -> (workflow.type, workflow.agent.id, workflow.outcome, workflow.id), from
    the stamps (every span of a trace carries the same)."""
    out: dict[bytes, tuple[str, str, str, str]] = {}
    for s in spans:
        a = attrs_of(s)
        if "workflow.type" in a:
            stamp = (a["workflow.type"], a["workflow.agent.id"], a["workflow.outcome"],
                     a["workflow.id"])  # fmt: skip
            assert out.setdefault(s.trace_id, stamp) == stamp
    return out


def outcomes(telemetry: SelfTelemetry) -> dict[str, float]:
    """The processor's workflows counted by outcome."""
    return {
        sample.labels["outcome"]: sample.value
        for metric in telemetry.registry.collect()
        if metric.name == "otelcol_processor_workflow_workflows"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize(("source", "scenario"), corpus_cases())
def test_every_recorded_source_gives_its_executions(store: str, source: str, scenario: str) -> None:
    req = load(source, scenario)
    telemetry = SelfTelemetry()
    spans = run(make(store, telemetry), [req.SerializeToString()])
    found = executions(spans)
    if source in NO_EXECUTIONS:
        assert found == {}
        assert outcomes(telemetry) == {}
        return
    assert source in EXPECTED, f"a newly recorded source: say what executions {source} gives"
    agent, by_scenario = EXPECTED[source]
    outcome = by_scenario[scenario]
    # one execution per run, whatever the source nests inside it
    assert [v[:3] for v in found.values()] == [(agent, agent, outcome)]
    assert outcomes(telemetry) == {outcome: 1.0}
    (trace_id,) = found
    wf_id = found[trace_id][3]
    for s in spans:
        a = attrs_of(s)
        if s.trace_id == trace_id:
            assert a["workflow.id"] == wf_id
        for key in ("workflow.type", "workflow.agent.id"):
            assert not looks_like_run_id(str(a.get(key, ""))), (key, a.get(key))
    if source.startswith("pydantic_ai"):
        # pydantic-ai's per-run id (gen_ai.conversation.id) is the workflow id
        (run_ids,) = {
            attrs_of(s).get("gen_ai.conversation.id")
            for s in spans
            if s.name.startswith("invoke_agent")
        }
        assert wf_id == run_ids and looks_like_run_id(wf_id)


@pytest.mark.parametrize(("source", "scenario"), corpus_cases())
def test_spans_in_any_order_and_requests_give_the_same_stamps(source: str, scenario: str) -> None:
    req = load(source, scenario)
    whole = executions(run(make("python"), [req.SerializeToString()]))
    for store in STORES:
        for seed in (1, 2):
            got = executions(run(make(store), one_span_per_request(req, seed)))
            assert got == whole, (store, seed)


def test_the_stores_give_identical_bytes_on_the_corpus() -> None:
    require_native("_tracewire")
    for source, scenario in corpus_cases():
        raw = load(source, scenario).SerializeToString()
        native = run(make("native"), [raw])
        python = run(make("python"), [raw])
        assert [s.SerializeToString() for s in native] == [s.SerializeToString() for s in python], (
            source,
            scenario,
        )


# -- edge cases ----------------------------------------------------------------------------------
def agent_run(trace: int, span_id: int, parent: int | None, name: str, **kw: Any) -> Span:
    attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name}
    attrs.update(kw.pop("attrs", {}))
    return span(trace, span_id, parent, f"invoke_agent {name}", attrs=attrs, **kw)


def stamps(store: str, spans: list[Span], telemetry: SelfTelemetry | None = None) -> Any:
    proc = make(store, telemetry)
    raw = request(spans).to_bytes()
    return executions(run(proc, [raw]))


@pytest.mark.parametrize("store", STORES)
def test_an_execution_below_an_http_server_span_with_a_nested_agent(store: str) -> None:
    """HTTP server root -> planner run -> researcher run (a sub-agent) -> tool: one execution,
    the planner's (its duration, not the HTTP span's, is the run's; the sub-agent is part of
    it and not counted apart)."""
    telemetry = SelfTelemetry()
    http = span(
        1,
        1,
        None,
        "POST /ask",
        kind=Span.SPAN_KIND_SERVER,
        attrs={"http.request.method": "POST", "http.route": "/ask"},
    )
    outer = agent_run(1, 2, 1, "planner", start=1_700_000_000.1)
    inner = agent_run(1, 3, 2, "researcher", start=1_700_000_000.2, error="boom")
    tool = span(1, 4, 3, "execute_tool search", attrs={"gen_ai.operation.name": "execute_tool"})
    for spans in ([http, outer, inner, tool], [tool, inner, outer, http]):
        got = stamps(store, spans, telemetry)
        assert got == {tid(1): ("planner", "planner", "success", tid(1).hex())}
    assert outcomes(telemetry) == {"success": 2.0}


@pytest.mark.parametrize("store", STORES)
def test_create_agent_is_no_execution_and_per_run_ids_are_no_labels(store: str) -> None:
    create = span(
        1,
        1,
        None,
        "create_agent helper",
        attrs={"gen_ai.operation.name": "create_agent", "gen_ai.agent.name": "helper"},
    )
    run_id = "3f1c2b9e-6a1d-4c3e-9b8a-0f2d4e6a8c1b"
    # an agent known only by a per-run id: the type and agent fall back, the id is the run's
    anonymous = span(
        2,
        1,
        None,
        "invoke_agent",
        attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": run_id},
    )
    got = stamps(store, [create, anonymous])
    assert got == {tid(2): ("unknown", "unknown", "success", run_id)}


@pytest.mark.parametrize("store", STORES)
def test_outcomes_from_status_error_type_and_exception_events(store: str) -> None:
    def with_exception(s: Span, exc_type: str, message: str = "") -> Span:
        ev = s.events.add(name="exception")
        ev.attributes.extend([kv("exception.type", exc_type), kv("exception.message", message)])
        return s

    cancelled = with_exception(agent_run(1, 1, None, "a", error=""), "asyncio.CancelledError")
    timed_out = agent_run(2, 1, None, "a", attrs={"error.type": "TimeoutError"}, error="")
    failed = with_exception(agent_run(3, 1, None, "a", error="x"), "ValueError", "bad")
    deadline = agent_run(4, 1, None, "a", error="deadline exceeded")
    fine = agent_run(5, 1, None, "a")
    got = stamps(store, [cancelled, timed_out, failed, deadline, fine])
    assert {t[-1]: v[2] for t, v in got.items()} == {
        1: "cancelled",
        2: "timeout",
        3: "failed",
        4: "timeout",
        5: "success",
    }


@pytest.mark.parametrize("store", STORES)
def test_side_by_side_runs_in_one_trace_the_first_is_the_execution(store: str) -> None:
    root = span(1, 1, None, "job")
    first = agent_run(1, 2, 1, "writer", start=1_700_000_001.0)
    second = agent_run(1, 3, 1, "reviewer", start=1_700_000_000.5, error="no")
    got = stamps(store, [root, first, second])
    assert got == {tid(1): ("reviewer", "reviewer", "failed", tid(1).hex())}


@pytest.mark.parametrize("store", STORES)
def test_a_workflow_root_of_the_gateway_dialect_stays_the_execution(store: str) -> None:
    root = span(1, 1, None, "workflow.support", attrs={"workflow.id": "wf-1"})
    agent = agent_run(1, 2, 1, "triage", error="boom")
    assert stamps(store, [agent, root]) == {tid(1): ("support", "triage", "success", "wf-1")}


def test_dialects_option_disables_a_dialect() -> None:
    cfg = WorkflowConfig.model_validate({"dialects": {"disable": ["openinference"]}})
    proc = WorkflowProcessor(settings(Kind.PROCESSOR, "workflow"), cfg, Capture(), native=False)
    req = load("langgraph_openinference", "success")
    assert executions(run(proc, [req.SerializeToString()])) == {}
    with pytest.raises(ValueError, match="unknown dialects"):
        WorkflowProcessor(
            settings(Kind.PROCESSOR, "workflow"),
            WorkflowConfig.model_validate({"dialects": {"disable": ["nope"]}}),
            Capture(),
        )
