"""The ``agentmetrics`` connector on the recorded spans of real libraries
(``tests/data/agentmetrics/``, recorded by ``python -m tests.agent_real.record``): one tool call
traced by several layers counts once, with its caller's duration and the status, error type and
server the layers say; one failure counts once in ``errors_total``; function tools are not MCP;
a model-requested retry is not a failure; tokens as the inference spans record them. The same
metrics whatever the requests the spans arrive in."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, Traces
from pipeline.telemetry import SelfTelemetry
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from tests.agent_real.expected import EXPECTED_FUNCTION, EXPECTED_MCP
from tests.plugins._agent_support import Capture, settings
from tests.plugins._native_support import both_paths
from tests.plugins.test__metricsagg import labels, points
from tests.support import ROOT

scanner = both_paths("_agentscan")

PYDANTIC_MCP = ROOT / "tests" / "data" / "agentmetrics" / "pydantic_ai_mcp_tool_layers.json"


def load(path: Any) -> ExportTraceServiceRequest:
    return Parse(path.read_text(), ExportTraceServiceRequest())


def split(req: ExportTraceServiceRequest, rng: random.Random) -> list[bytes]:
    """Every span in a request of its own (with its resource and scope), in random order."""
    out = []
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                one = ExportTraceServiceRequest()
                r = one.resource_spans.add()
                r.resource.CopyFrom(rs.resource)
                s = r.scope_spans.add()
                s.scope.CopyFrom(ss.scope)
                s.spans.append(sp)
                out.append(one.SerializeToString())
    rng.shuffle(out)
    return out


def by_process(req: ExportTraceServiceRequest) -> list[bytes]:
    """One request per process (resource), the MCP server's first."""
    out = []
    for rs in reversed(req.resource_spans):
        one = ExportTraceServiceRequest()
        one.resource_spans.append(rs)
        out.append(one.SerializeToString())
    return out


async def metrics(requests: list[bytes], **options: Any) -> tuple[Any, AgentMetricsConnector]:
    cfg = AgentMetricsConfig.model_validate({"metrics_flush_interval": "0s", **options})
    out = Capture()
    conn = AgentMetricsConnector(
        settings(Kind.CONNECTOR, "agentmetrics", SelfTelemetry()), cfg, out
    )
    for raw in requests:
        await conn.consume(Traces(raw))
    await conn.shutdown()  # settles every held call
    assert len(out.payloads) == 1
    return out.payloads[0].message(), conn


def counts(req: Any, name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    return {tuple(labels(dp)[k] for k in keys): dp.as_int for dp in points(req, name)}


def caller_durations(req: ExportTraceServiceRequest) -> dict[str, float]:
    """The duration of pydantic-ai's execute_tool span of each tool (the caller's)."""
    out = {}
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                if sp.name.startswith("execute_tool "):
                    name = sp.name.split(" ", 1)[1]
                    out[name] = (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e9
    return out


def check_pydantic_mcp(metrics_req: Any, corpus: ExportTraceServiceRequest) -> None:
    mcp = counts(metrics_req, "mcp_tool_calls", ("tool", "status", "error_type"))
    assert mcp == EXPECTED_MCP
    servers = {labels(dp)["server"] for dp in points(metrics_req, "mcp_tool_calls")}
    assert servers == {"docs-mcp"}  # stdio: no server.address; the server's service.name
    functions = counts(metrics_req, "agent_tool_calls", ("tool", "status", "error_type"))
    assert functions == EXPECTED_FUNCTION
    assert {labels(dp)["tool_type"] for dp in points(metrics_req, "agent_tool_calls")} == {
        "function"
    }
    expected = caller_durations(corpus)
    for name in ("mcp_tool_call_duration", "agent_tool_call_duration"):
        for dp in points(metrics_req, name):
            assert dp.count == 1
            assert dp.sum == pytest.approx(expected[labels(dp)["tool"]], rel=0.05)
    errors = counts(metrics_req, "errors", ("error_type", "component"))
    # broken: the MCP server, FastMCP and pydantic-ai spans all failed: once; wait: pydantic-ai
    # turned its timeout into a retry prompt; explode: the tool and the agent run failed: once
    assert errors == {
        ("tool_error", "mcp"): 1,
        ("timeout", "tool"): 1,
        ("RuntimeError", "tool"): 1,
    }
    # tokens: each inference span's, as the agent run's aggregate says
    runs = [
        sp
        for rs in corpus.resource_spans
        for ss in rs.scope_spans
        for sp in ss.spans
        if sp.name.startswith("invoke_agent")
    ]
    want: Counter[str] = Counter()
    for sp in runs:
        for kv in sp.attributes:
            if kv.key.startswith("gen_ai.aggregated_usage."):
                kind = kv.key.rsplit(".", 1)[1].split("_")[0]  # input / output
                want[kind] += int(kv.value.int_value or kv.value.string_value)
    got: Counter[str] = Counter()
    for dp in points(metrics_req, "gen_ai.client.token.usage"):
        lab = labels(dp)
        assert lab["gen_ai.operation.name"] == "chat"
        assert lab["gen_ai.provider.name"] == "function"
        assert lab["gen_ai.agent.name"] == "helper"
        got[lab["gen_ai.token.type"]] += int(dp.sum)
    assert got == want and want["input"] > 0
    # no per-run ids in any label
    for rm in metrics_req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for dp in points(metrics_req, m.name):
                    for value in labels(dp).values():
                        assert "01a2" not in str(value) and len(str(value)) < 40


async def test_pydantic_ai_mcp_one_request() -> None:
    corpus = load(PYDANTIC_MCP)
    req, conn = await metrics([corpus.SerializeToString()])
    check_pydantic_mcp(req, corpus)
    assert conn.joiner.late_layers == 0


async def test_pydantic_ai_mcp_server_spans_in_another_request_first() -> None:
    corpus = load(PYDANTIC_MCP)
    req, _ = await metrics(by_process(corpus))
    check_pydantic_mcp(req, corpus)


@pytest.mark.parametrize("seed", range(3))
async def test_pydantic_ai_mcp_every_span_in_its_own_request(seed: int) -> None:
    corpus = load(PYDANTIC_MCP)
    req, _ = await metrics(split(corpus, random.Random(seed)))
    check_pydantic_mcp(req, corpus)


async def test_late_layer_of_a_counted_call_is_not_counted_again() -> None:
    """With no join window, a call is counted with the layers of its request; the server's
    spans arriving afterwards are recognised as layers of calls already counted."""
    corpus = load(PYDANTIC_MCP)
    agent_first = list(reversed(by_process(corpus)))
    req, conn = await metrics(agent_first, tool_call_join={"window": "0s"})
    mcp = counts(req, "mcp_tool_calls", ("tool", "status", "error_type"))
    assert sum(mcp.values()) == 3  # not 6
    assert conn.joiner.late_layers == 3
    # without the server's spans, the server is unknown (stdio has no address)
    assert {labels(dp)["server"] for dp in points(req, "mcp_tool_calls")} == {"unknown"}


async def test_join_window_is_bounded_and_settles_the_oldest_first() -> None:
    corpus = load(PYDANTIC_MCP)
    # two traces in the corpus (the two agent runs) and more for the MCP handshake: with room
    # for one, the others are settled early, counted, and nothing is lost
    req, conn = await metrics([corpus.SerializeToString()], tool_call_join={"max_traces": 1})
    assert conn.joiner.early_settled >= 1
    assert len(conn.joiner) == 0
    functions = counts(req, "agent_tool_calls", ("tool", "status", "error_type"))
    assert functions == EXPECTED_FUNCTION


def test_corpus_is_what_the_scenario_says() -> None:
    """The recording holds the four layers of each MCP call (a guard against re-recording
    with libraries that trace differently)."""
    corpus = json.loads(PYDANTIC_MCP.read_text())
    names = Counter(
        sp["name"]
        for rs in corpus["resourceSpans"]
        for ss in rs["scopeSpans"]
        for sp in ss["spans"]
    )
    for tool in ("search", "broken", "slow"):
        assert names[f"execute_tool {tool}"] == 1
        assert names[f"tools/call {tool}"] == 2  # FastMCP's client span, the server's span
        assert names[f"MCP send tools/call {tool}"] == 1
