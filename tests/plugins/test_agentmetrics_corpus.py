"""The ``agentmetrics`` connector on every recorded source of ``tests/data/agent_sources/`` (the
spans of real libraries, recorded by ``tests/agent_sources/record.py``): exact tool calls (once
each, with status, error type and server), ``errors_total`` once per failure, A2A messages,
tokens as the spans record them, durations the caller's within 5 %."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, Traces
from pipeline.telemetry import SelfTelemetry
from plugins._agentdialects import default_dialects
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from tests.plugins._agent_support import Capture, settings
from tests.plugins._native_support import both_paths
from tests.plugins.test__metricsagg import labels, points
from tests.support import ROOT

scanner = both_paths("_agentscan")

CORPUS = ROOT / "tests" / "data" / "agent_sources"
MCP = "mcp-calc-server"

# (source, scenario) -> tool calls {(family, tool, status, error_type, server)}, errors
# {(error_type, component)}, A2A {(direction, message_type, status)}
Calls = dict[tuple[str, ...], int]
EXPECTED: dict[tuple[str, str], tuple[Calls, Calls, Calls]] = {}


def _mcp_source(source: str, server: str = MCP) -> None:
    for scenario, tool, status, error in (
        ("success", "add", "success", "none"),
        ("slow_tool", "slow", "success", "none"),
        ("tool_error", "divide", "error", "tool_error"),
        ("tool_timeout", "lookup", "error", "tool_error"),
        ("unknown_tool", "nope", "error", "tool_error"),
    ):
        errors = {("tool_error", "mcp"): 1} if status == "error" else {}
        EXPECTED[source, scenario] = ({("mcp", tool, status, error, server): 1}, errors, {})


for _source in ("mcp_stdio", "mcp_http", "mcp_openinference"):
    _mcp_source(_source)
# OpenLLMetry's MCP instrumentation: its client spans name no server, its server spans are
# transport spans no dialect recognises (the server's failed one is the call's: once)
_mcp_source("mcp_openllmetry", "unknown")

for _source in ("pydantic_ai", "langgraph_openinference", "langgraph_openllmetry"):
    EXPECTED[_source, "success"] = ({("function", "add", "success", "none", ""): 1}, {}, {})
    EXPECTED[_source, "slow_tool"] = ({("function", "slow", "success", "none", ""): 1}, {}, {})
    EXPECTED[_source, "tool_error"] = (
        {("function", "divide", "error", "ZeroDivisionError", ""): 1},
        {("ZeroDivisionError", "tool"): 1},
        {},
    )
    EXPECTED[_source, "tool_timeout"] = (
        {("function", "lookup", "error", "TimeoutError", ""): 1},
        {("TimeoutError", "tool"): 1},
        {},
    )
    # the model call fails: once, at the model call (the agent run above it propagated it)
    EXPECTED[_source, "failed_run"] = ({}, {("RuntimeError", "llm"): 1}, {})
EXPECTED["pydantic_ai", "model_retry"] = (
    {
        ("function", "flaky", "retry", "none", ""): 1,  # ModelRetry: not a failure
        ("function", "flaky", "success", "none", ""): 1,
    },
    {},
    {},
)
for _scenario, _tool, _status, _error in (
    ("success", "add", "success", "none"),
    ("slow_tool", "slow", "success", "none"),
    ("tool_error", "divide", "error", "tool_error"),
    ("tool_timeout", "lookup", "error", "tool_error"),
):
    EXPECTED["pydantic_ai_mcp", _scenario] = (
        {("mcp", _tool, _status, _error, MCP): 1},
        {("tool_error", "mcp"): 1} if _status == "error" else {},
        {},
    )
# the MCP tool failed the first time (the server said so; pydantic-ai asked the model to
# retry): a failed call, then a successful one
EXPECTED["pydantic_ai_mcp", "model_retry"] = (
    {("mcp", "flaky", "error", "tool_error", MCP): 1, ("mcp", "flaky", "success", "none", MCP): 1},
    {("tool_error", "mcp"): 1},
    {},
)
EXPECTED["pydantic_ai_mcp", "failed_run"] = ({}, {("RuntimeError", "llm"): 1}, {})
# served over HTTP (Starlette under OpenTelemetry's ASGI instrumentation): the endpoint
# catches the run's failure and answers 500. The ASGI instrumentation sets ERROR on its
# "POST /compute http send" span for the 5xx answer (no exception): the asgi dialect's
# reports_status, not a failure of its own; the server span is above the failed agent run:
# one failure, the model call's
for _scenario, _tool in (("success", "add"), ("slow_tool", "slow")):
    EXPECTED["pydantic_ai_http", _scenario] = (
        {("function", _tool, "success", "none", ""): 1},
        {},
        {},
    )
EXPECTED["pydantic_ai_http", "failed_run"] = ({}, {("RuntimeError", "llm"): 1}, {})
_A2A_OK = {("sent", "message/send", "unknown"): 1, ("received", "message/send", "processed"): 1}
EXPECTED["a2a_sdk", "success"] = ({}, {}, _A2A_OK)
EXPECTED["a2a_sdk", "slow_tool"] = ({}, {}, _A2A_OK)
# the server's handler raised; the client got a JSON-RPC internal error. a2a-sdk propagates
# no trace context and sets no ids: the two sides are two traces nothing links, but the
# client's failure is an a2a.utils.errors type, raised from the server's error answer (the
# dialect's peer_error_types): it arose at the server, and counts once, there
EXPECTED["a2a_sdk", "failed_run"] = (
    {},
    {("RuntimeError", "a2a"): 1},
    {("sent", "message/send", "unknown"): 1, ("received", "message/send", "failed"): 1},
)

TOKEN_KEYS = {
    "input": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
    "output": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ),
}


def recorded() -> set[tuple[str, str]]:
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    return {(source, s) for source, entry in manifest.items() for s in entry["scenarios"]}


def load(source: str, scenario: str) -> ExportTraceServiceRequest:
    return Parse((CORPUS / source / f"{scenario}.json").read_text(), ExportTraceServiceRequest())


async def run(req: ExportTraceServiceRequest) -> Any:
    cfg = AgentMetricsConfig.model_validate({"metrics_flush_interval": "0s"})
    out = Capture()
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics", SelfTelemetry()), cfg, out
    )
    await conn.consume(Traces(req.SerializeToString()))
    await conn.shutdown()
    return out.payloads[0].message() if out.payloads else None


def expected_tokens(req: ExportTraceServiceRequest) -> Counter[str]:
    """The token counts the inference spans record (each span's first known attribute)."""
    dialects = default_dialects()
    out: Counter[str] = Counter()
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                if dialects.classify_span(sp, ss.scope.name).role.value != "inference":
                    continue
                attrs = {kv.key: kv.value for kv in sp.attributes}
                for kind, keys in TOKEN_KEYS.items():
                    for key in keys:
                        if key in attrs:
                            v = attrs[key]
                            out[kind] += int(v.int_value or v.string_value or v.double_value)
                            break
    return out


def layer_durations(req: ExportTraceServiceRequest) -> dict[str, float]:
    """Per tool, the longest duration among the spans tracing its calls (the caller's)."""
    dialects = default_dialects()
    out: dict[str, float] = {}
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                facts = dialects.classify_span(sp, ss.scope.name)
                if facts.is_tool_layer:
                    tool = facts.label("tool_name")
                    d = (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e9
                    out[tool] = max(out.get(tool, 0.0), d)
    return out


def test_every_recorded_scenario_is_expected() -> None:
    assert recorded() == set(EXPECTED)


@pytest.mark.parametrize(("source", "scenario"), sorted(EXPECTED))
async def test_recorded_source_gives_exact_metrics(source: str, scenario: str) -> None:
    req = load(source, scenario)
    want_calls, want_errors, want_a2a = EXPECTED[source, scenario]
    got = await run(req)
    assert got is not None
    calls: Calls = {}
    for family, name in (("mcp", "mcp_tool_calls"), ("function", "agent_tool_calls")):
        for dp in points(got, name):
            lab = labels(dp)
            key = (family, lab["tool"], lab["status"], lab["error_type"], lab.get("server", ""))
            calls[key] = dp.as_int
    assert calls == want_calls
    errors = {
        (labels(dp)["error_type"], labels(dp)["component"]): dp.as_int
        for dp in points(got, "errors")
    }
    assert errors == want_errors
    a2a: Calls = {}
    for dp in points(got, "a2a_messages_sent"):
        a2a["sent", labels(dp)["message_type"], labels(dp)["priority"]] = dp.as_int
    for dp in points(got, "a2a_messages_received"):
        lab = labels(dp)
        a2a["received", lab["message_type"], lab["processing_status"]] = dp.as_int
    assert a2a == want_a2a
    # durations: the caller's, within 5 %
    longest = layer_durations(req)
    for name in ("mcp_tool_call_duration", "agent_tool_call_duration"):
        for dp in points(got, name):
            tool = labels(dp)["tool"]
            assert dp.sum / dp.count == pytest.approx(longest[tool], rel=0.05) or dp.count > 1
    # tokens: as the inference spans record them
    tokens: Counter[str] = Counter()
    for dp in points(got, "gen_ai.client.token.usage"):
        tokens[labels(dp)["gen_ai.token.type"]] += int(dp.sum)
    assert tokens == expected_tokens(req)


def one_trace(req: ExportTraceServiceRequest) -> tuple[ExportTraceServiceRequest, float]:
    """a2a-sdk's client and server spans as they are when the trace context crosses the wire
    (an HTTP client instrumentation propagating it): the server's spans in the client's trace,
    its root below the client's send_message span. Also the latency that gives."""
    out = ExportTraceServiceRequest()
    out.CopyFrom(req)
    spans = [(rs, sp) for rs in out.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    client = next(sp for _, sp in spans if sp.name.endswith("Transport.send_message"))
    server = next(sp for _, sp in spans if sp.name.endswith(".on_message_send"))
    server_trace = server.trace_id
    for _, sp in spans:
        if sp.trace_id == server_trace:
            sp.trace_id = client.trace_id
            if not sp.parent_span_id:
                sp.parent_span_id = client.span_id
    return out, (server.start_time_unix_nano - client.start_time_unix_nano) / 1e9


async def test_a2a_sdk_latency_when_both_sides_are_in_one_trace() -> None:
    req, latency = one_trace(load("a2a_sdk", "success"))
    assert latency > 0
    got = await run(req)
    (dp,) = points(got, "a2a_message_latency")
    assert labels(dp) == {"message_type": "message/send"}
    assert dp.count == 1 and dp.sum == pytest.approx(latency)
    # in two traces (as recorded): messages, no latency
    got = await run(load("a2a_sdk", "success"))
    assert points(got, "a2a_message_latency") == []


async def test_a2a_conventions_client_and_server_spans() -> None:
    """CLIENT / SERVER spans of the A2A semantic conventions (``a2a.method.name``), made by
    the OpenTelemetry SDK: a message sent, one received (its task failed), the latency."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("a2a-app")
    t0 = 1_700_000_000_000_000_000
    client = tracer.start_span(
        "SendMessage",
        kind=SpanKind.CLIENT,
        attributes={"a2a.method.name": "SendMessage", "gen_ai.agent.name": "Math Tutor"},
        start_time=t0,
    )
    from opentelemetry import trace as api

    with api.use_span(client, end_on_exit=False):
        server = tracer.start_span(
            "SendMessage",
            kind=SpanKind.SERVER,
            attributes={"a2a.method.name": "SendMessage", "a2a.task.state": "TASK_STATE_FAILED"},
            start_time=t0 + 12_000_000,
        )
        server.end(end_time=t0 + 40_000_000)
    client.end(end_time=t0 + 50_000_000)
    got = await run(encode_spans(memory.get_finished_spans()))
    sent = {tuple(sorted(labels(dp).items())): dp.as_int for dp in points(got, "a2a_messages_sent")}
    assert sent == {
        (
            ("message_type", "SendMessage"),
            ("priority", "unknown"),
            ("recipient_type", "Math Tutor"),
        ): 1
    }
    received = [labels(dp) for dp in points(got, "a2a_messages_received")]
    assert received == [
        {"message_type": "SendMessage", "sender_type": "unknown", "processing_status": "failed"}
    ]
    (dp,) = points(got, "a2a_message_latency")
    assert dp.sum == pytest.approx(0.012)


def _client_spans(req: ExportTraceServiceRequest) -> list[Any]:
    return [
        sp
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for sp in ss.spans
        if sp.name.startswith("a2a.client.")
    ]


async def errors_of(req: ExportTraceServiceRequest) -> Calls:
    got = await run(req)
    return {
        (labels(dp)["error_type"], labels(dp)["component"]): dp.as_int
        for dp in points(got, "errors")
    }


async def test_a2a_client_failure_of_its_own_counts_on_the_client() -> None:
    """The recorded failure with the client's exceptions made the client's own (a network
    error, a2a.client.errors.A2AClientError): no peer answered it, so it counts on the client
    too (beside the server's, which the recording also holds)."""
    req = load("a2a_sdk", "failed_run")
    for sp in _client_spans(req):
        for ev in sp.events:
            for kv in ev.attributes:
                if kv.key == "exception.type":
                    kv.value.string_value = "a2a.client.errors.A2AClientError"
    assert await errors_of(req) == {
        ("RuntimeError", "a2a"): 1,
        ("a2a.client.errors.A2AClientError", "agent"): 1,
    }


async def test_a2a_peer_error_propagates_to_the_callers_span() -> None:
    """An application span above the client call that failed with the peer's error (the
    planner's agent run re-raising it) is not a new failure either: it carried it up."""
    req = load("a2a_sdk", "failed_run")
    clients = _client_spans(req)
    root = next(sp for sp in clients if sp.name.endswith(".send_message"))
    assert not root.parent_span_id
    above = type(root)()
    above.CopyFrom(root)
    above.name = "invoke_agent planner"
    above.kind = 1  # INTERNAL
    above.span_id = b"\x42" * 8
    above.start_time_unix_nano -= 1000
    above.end_time_unix_nano += 1000
    above.ClearField("attributes")
    kv = above.attributes.add()
    kv.key, kv.value.string_value = "gen_ai.operation.name", "invoke_agent"
    root.parent_span_id = above.span_id
    req.resource_spans[0].scope_spans[-1].spans.append(above)
    assert await errors_of(req) == {("RuntimeError", "a2a"): 1}


async def test_a_5xx_answered_by_the_handler_counts_once_at_the_server_span() -> None:
    """The recorded HTTP trace, the handler answering 500 by its own logic (nothing below
    failed): the server span and the ASGI 'http send' span that reports the answer are ERROR;
    the failure is the server span's, once (component http)."""
    req = load("pydantic_ai_http", "success")
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                kinds = {kv.key: kv.value for kv in sp.attributes}
                if sp.name == "POST /compute" or (
                    "asgi.event.type" in kinds
                    and kinds["asgi.event.type"].string_value == "http.response.start"
                ):
                    sp.status.code = 2
                    for kv in sp.attributes:
                        if kv.key == "http.status_code":
                            kv.value.int_value = 500
    assert await errors_of(req) == {("_OTHER", "http"): 1}


# -- the agent a workflow is counted for, with and without the workflow processor ahead ---------
def as_workflows(req: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """The recorded request with each trace's parentless spans named workflows by the
    application (``workflow.name``, docs/agent-conventions.md): the connector alone counts an
    execution only for a root it recognises as a workflow."""
    out = ExportTraceServiceRequest()
    out.CopyFrom(req)
    for rs in out.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                if not sp.parent_span_id:
                    kv = sp.attributes.add(key="workflow.name")
                    kv.value.string_value = "calc"
    return out


async def execution_agents(payloads: list[bytes]) -> Counter[str]:
    """``agent_workflow_executions`` by ``agent_id`` after the connector consumed
    ``payloads``."""
    cfg = AgentMetricsConfig.model_validate({"metrics_flush_interval": "0s"})
    out = Capture()
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics", SelfTelemetry()), cfg, out
    )
    for p in payloads:
        await conn.consume(Traces(p))
    await conn.shutdown()
    got: Counter[str] = Counter()
    if out.payloads:
        for dp in points(out.payloads[0].message(), "agent_workflow_executions"):
            got[labels(dp)["agent_id"]] += dp.as_int
    return got


# the agent's run below the root (an HTTP server span): the workflow processor reads the
# execution below it, the connector alone only the root (docs/agent-workflow.md)
AGENT_BELOW_ROOT = {"pydantic_ai_http"}


@pytest.mark.parametrize(("source", "scenario"), sorted(EXPECTED))
async def test_connector_alone_labels_the_agent_as_the_workflow_processor(
    source: str, scenario: str
) -> None:
    """A pipeline with the connector alone and one with the workflow processor ahead of it
    count each recorded workflow for the same agent: the root's ``gen_ai.agent.name`` (pydantic-
    ai, LangGraph under OpenLLMetry, whose ``gen_ai.agent.id`` below is the run's UUID), else
    ``unknown`` (the MCP SDK, a2a-sdk, LangGraph under OpenInference name no agent)."""
    from benchmarks.agent_components import run_workflow

    body = as_workflows(load(source, scenario)).SerializeToString()
    alone = await execution_agents([body])
    _, released = await run_workflow([body], 1)
    after_workflow = await execution_agents([p.to_bytes() for p in released])
    assert sum(alone.values()) >= 1
    if source in AGENT_BELOW_ROOT:
        assert alone == {"unknown": 1} and after_workflow == {"calculator": 1}
    else:
        assert alone == after_workflow
    if source in {"pydantic_ai", "pydantic_ai_mcp"}:
        assert alone["calculator"] == 1
    if source == "langgraph_openllmetry":
        assert alone == {"calc_agent": 2}  # (create_agent and invoke_agent: two traces)


# -- tokens and cost: the trace's workflow, with and without the workflow processor ahead -------
# the recorded models: pydantic-ai's FunctionModel, OpenLLMetry's LangChain model name (the
# OpenInference recording names none: its calls cost nothing)
PRICES = {
    "function:model:": {"input": 1.0, "output": 2.0},
    "unknown": {"input": 0.5, "output": 4.0},
}
Totals = dict[tuple[str, str, str, str], float]


async def workflow_totals(
    payloads: list[bytes], window: str = "10s"
) -> tuple[Totals, Counter[tuple[str, str]], dict[str, float]]:
    """After ``payloads``: ``agent_workflow_tokens`` and ``agent_workflow_cost_usd`` by
    (metric, workflow type, agent, token type), the executions by (workflow type, agent) and
    the inference calls by what labelled their totals (the connector's self-telemetry)."""
    cfg = AgentMetricsConfig.model_validate(
        {"metrics_flush_interval": "0s", "prices": PRICES, "tool_call_join": {"window": window}}
    )
    out = Capture()
    tel = SelfTelemetry()
    conn = AgentMetricsConnector(settings(Kind.CONNECTOR, "agentmetrics", tel), cfg, out)
    for p in payloads:
        await conn.consume(Traces(p))
    await conn.shutdown()
    totals: Totals = {}
    executions: Counter[tuple[str, str]] = Counter()
    if out.payloads:
        got = out.payloads[0].message()
        for name in ("agent_workflow_tokens", "agent_workflow_cost_usd"):
            for dp in points(got, name):
                lab = labels(dp)
                key = (name, lab["workflow_type"], lab["agent_id"], lab.get("token_type", ""))
                totals[key] = dp.as_int if name == "agent_workflow_tokens" else dp.as_double
        for dp in points(got, "agent_workflow_executions"):
            lab = labels(dp)
            executions[lab["workflow_type"], lab["agent_id"]] += dp.as_int
    results = {}
    for result in ("stamped", "root", "waited", "no_root"):
        value = tel.value(
            "otelcol_connector_agentmetrics_workflow_token_calls_total",
            connector="agentmetrics",
            result=result,
        )
        if value:
            results[result] = value
    return totals, executions, results


def inference_calls(req: ExportTraceServiceRequest) -> int:
    """The inference spans recording token usage."""
    dialects = default_dialects()
    return sum(
        1
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for sp in ss.spans
        if dialects.classify_span(sp, ss.scope.name).role.value == "inference"
        and any(kv.key in TOKEN_KEYS["input"] + TOKEN_KEYS["output"] for kv in sp.attributes)
    )


@pytest.mark.parametrize(("source", "scenario"), sorted(EXPECTED))
async def test_connector_alone_counts_tokens_and_cost_for_the_workflow_as_with_the_processor(
    source: str, scenario: str
) -> None:
    """The inference calls' tokens and cost (``agent_workflow_tokens_total``,
    ``agent_workflow_cost_usd_total``) carry the workflow type and agent their trace's
    execution is counted with, with the connector alone as with the workflow processor ahead
    (whose stamp they take then): every recorded token in its workflow's totals. Before, the
    connector alone counted no workflow totals at all (they took the processor's stamp only)."""
    from benchmarks.agent_components import run_workflow

    req = as_workflows(load(source, scenario))
    body = req.SerializeToString()
    alone, executions, results = await workflow_totals([body])
    _, released = await run_workflow([body], 1)
    after, after_executions, after_results = await workflow_totals([p.to_bytes() for p in released])
    calls = inference_calls(req)
    assert results == ({"root": calls} if calls else {})
    assert after_results == ({"stamped": calls} if calls else {})
    if source in AGENT_BELOW_ROOT:  # (the connector alone reads the root's agent: unknown)
        assert {(m, t, "calculator", k): v for (m, t, a, k), v in alone.items()} == after
        assert {a for _, _, a, _ in alone} <= {"unknown"}
    else:
        assert alone == after
    # the totals' labels are an execution's of the same pipeline, every token in them
    assert {(t, a) for _, t, a, _ in alone} <= set(executions)
    assert {(t, a) for _, t, a, _ in after} <= set(after_executions)
    tokens: Counter[str] = Counter()
    for (name, _, _, kind), value in alone.items():
        if name == "agent_workflow_tokens":
            tokens[kind] += int(value)
    assert tokens == expected_tokens(req)
    if calls and source != "langgraph_openinference":  # (its calls name no model)
        assert any(name == "agent_workflow_cost_usd" for name, _, _, _ in alone)


def split_roots(req: ExportTraceServiceRequest) -> tuple[bytes, bytes]:
    """The request as (its parentless spans, the others): two requests."""
    roots, rest = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    for part, keep in ((roots, True), (rest, False)):
        part.CopyFrom(req)
        for rs in part.resource_spans:
            for ss in rs.scope_spans:
                spans = [sp for sp in ss.spans if (not sp.parent_span_id) == keep]
                del ss.spans[:]
                ss.spans.extend(spans)
    return roots.SerializeToString(), rest.SerializeToString()


# the recorded sources whose successful run made inference calls with token usage
TOKEN_SOURCES = [
    (source, "success")
    for source in ("langgraph_openinference", "langgraph_openllmetry", "pydantic_ai",
                   "pydantic_ai_mcp")
]  # fmt: skip


@pytest.mark.parametrize(("source", "scenario"), TOKEN_SOURCES)
@pytest.mark.parametrize(
    ("order", "window", "result"),
    [
        ("root first", "0s", "root"),  # remembered: a root counted before its calls
        ("root last", "10s", "waited"),  # in a later request within the join window
        ("root last", "0s", "no_root"),  # after the window: the calls are no workflow's
    ],
)
async def test_a_traces_root_in_another_request_than_its_inference_calls(
    source: str, scenario: str, order: str, window: str, result: str
) -> None:
    """The recorded trace with its root (the workflow) in a request of its own, before or
    after its other spans (a process exporting its root later): the connector alone counts
    the inference calls' tokens for the root's workflow when it was counted before them or
    within ``tool_call_join.window`` after them (held meanwhile); a root arriving after the
    window counts its execution, and the calls' tokens are in no workflow's totals (counted
    ``no_root``; ``gen_ai.client.token.usage`` has them)."""
    req = as_workflows(load(source, scenario))
    whole, executions, _ = await workflow_totals([req.SerializeToString()], window)
    roots, rest = split_roots(req)
    payloads = [roots, rest] if order == "root first" else [rest, roots]
    got, got_executions, results = await workflow_totals(payloads, window)
    calls = inference_calls(req)
    assert calls and whole
    assert got_executions == executions
    assert results == {result: calls}
    assert got == ({} if result == "no_root" else whole)
