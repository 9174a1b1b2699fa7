"""The ``agentmetrics`` connector on hand-built spans, behind the ``workflow`` processor."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind
from pipeline.telemetry import SelfTelemetry
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import (
    A2A_BUCKETS,
    HTTP_BUCKETS,
    MCP_BUCKETS,
    WORKFLOW_BUCKETS,
    AgentMetricsConnector,
    window_label,
)
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import WorkflowProcessor
from tests.plugins._agent_support import Capture, request, settings, span
from tests.plugins._native_support import both_paths
from tests.plugins.test__metricsagg import labels, points

T0 = 1_700_000_000.0


# every test runs with the C scanner and with the pure-Python path
scanner = both_paths("_agentscan")


def workflow(trace: int, *, failed: bool, duration: float, tool_latency: float) -> list[Span]:
    root = span(
        trace,
        1,
        None,
        "workflow.research",
        attrs={"workflow.id": f"wf-{trace}", "gen_ai.agent.name": "agent-a"},
        error="tool chain failed" if failed else None,
        start=T0,
        duration=duration,
    )
    tool = span(
        trace,
        2,
        1,
        "execute_tool search",
        kind=Span.SPAN_KIND_CLIENT,
        attrs={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "search",
            "mcp.server.name": "web",
        },
        error="connection refused" if failed else None,
        start=T0 + 0.01,
        duration=tool_latency,
    )
    send = span(
        trace,
        3,
        1,
        "a2a send",
        kind=Span.SPAN_KIND_PRODUCER,
        attrs={
            "a2a.message.type": "task",
            "a2a.recipient.type": "writer",
            "a2a.priority": "high",
        },
        start=T0 + 0.02,
        duration=0.001,
    )
    receive = span(
        trace,
        4,
        3,
        "a2a receive",
        kind=Span.SPAN_KIND_CONSUMER,
        attrs={"a2a.message.type": "task", "a2a.sender.type": "planner"},
        start=T0 + 0.02 + 0.007,
        duration=0.002,
    )
    return [receive, tool, send, root]  # consumer before its producer, root last


async def run(
    traces: list[list[Span]], extra: list[Span] | None = None, **options: Any
) -> tuple[Any, SelfTelemetry]:
    tel = SelfTelemetry()
    out = Capture()
    cfg = AgentMetricsConfig.model_validate({"metrics_flush_interval": "0s", **options})
    conn = AgentMetricsConnector(settings(Kind.CONNECTOR, "agentmetrics", tel), cfg, out)
    proc = WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow", tel),
        WorkflowConfig.model_validate({"wait_duration": "1h"}),
        conn,
    )
    for spans in traces:
        await proc.consume(request(spans))
    if extra:
        await proc.consume(request(extra))
    await proc.shutdown()
    await conn.shutdown()
    assert len(out.payloads) == 1
    return out.payloads[0].message(), tel


def by_labels(req: Any, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(labels(dp).items())): dp for dp in points(req, name)}


def metric(req: Any, name: str) -> Any:
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    return m
    raise AssertionError(f"no metric {name}")


async def test_reference_metrics_names_labels_buckets() -> None:
    traces = [
        workflow(10 + i, failed=i < 2, duration=0.3 + i, tool_latency=0.04 * (i + 1))
        for i in range(10)
    ]
    http_ok = span(
        50,
        1,
        None,
        "GET /orders/{id}",
        kind=Span.SPAN_KIND_SERVER,
        attrs={
            "http.request.method": "GET",
            "http.route": "/orders/{id}",
            "http.response.status_code": 200,
        },
        duration=0.02,
    )
    http_err = span(
        51,
        1,
        None,
        "POST /orders",
        kind=Span.SPAN_KIND_SERVER,
        attrs={
            "http.request.method": "POST",
            "http.route": "/orders",
            "http.response.status_code": 503,
        },
        error="upstream unavailable",
        duration=0.6,
    )
    db_err = span(
        52,
        1,
        None,
        "SELECT",
        kind=Span.SPAN_KIND_CLIENT,
        attrs={"db.system.name": "postgresql", "error.type": "UndefinedTable"},
        error="relation does not exist",
    )
    req, _ = await run(traces, [http_ok, http_err, db_err], sla={"default": "5s"})

    # executions: 8 success + 2 failed, tier from the processor (4 spans, 1 tool, depth 3)
    ex = by_labels(req, "agent_workflow_executions")
    base = (("agent_id", "agent-a"), ("complexity_tier", "simple"))
    assert {k: dp.as_int for k, dp in ex.items()} == {
        (*base[:2], ("outcome", "success"), ("workflow_type", "research")): 8,
        (*base[:2], ("outcome", "failed"), ("workflow_type", "research")): 2,
    }
    m = metric(req, "agent_workflow_executions")
    assert m.unit == "" and m.sum.is_monotonic and m.sum.aggregation_temporality == 2

    (dur,) = points(req, "agent_workflow_duration")
    assert labels(dur) == {"workflow_type": "research", "complexity_tier": "simple"}
    assert list(dur.explicit_bounds) == list(WORKFLOW_BUCKETS)
    # durations 0.3, 1.3, ..., 9.3
    assert list(dur.bucket_counts) == [0, 1, 0, 1, 3, 5, 0, 0, 0, 0]
    assert metric(req, "agent_workflow_duration").unit == "s"
    assert dur.exemplars and len(dur.exemplars[0].trace_id) == 16

    calls = {k: dp.as_int for k, dp in by_labels(req, "mcp_tool_calls").items()}
    assert calls == {
        (("error_type", "none"), ("server", "web"), ("status", "success"), ("tool", "search")): 8,
        (
            ("error_type", "connection"),
            ("server", "web"),
            ("status", "error"),
            ("tool", "search"),
        ): 2,
    }
    (tool_dur,) = points(req, "mcp_tool_call_duration")
    assert labels(tool_dur) == {"server": "web", "tool": "search"}
    assert list(tool_dur.explicit_bounds) == list(MCP_BUCKETS)
    # 0.04, 0.08, ... 0.40
    assert list(tool_dur.bucket_counts) == [0, 1, 1, 4, 4, 0, 0, 0, 0, 0]

    sent = by_labels(req, "a2a_messages_sent")
    assert {k: dp.as_int for k, dp in sent.items()} == {
        (("message_type", "task"), ("priority", "high"), ("recipient_type", "writer")): 10
    }
    received = by_labels(req, "a2a_messages_received")
    assert {k: dp.as_int for k, dp in received.items()} == {
        (
            ("message_type", "task"),
            ("processing_status", "processed"),
            ("sender_type", "planner"),
        ): 10
    }
    (lat,) = points(req, "a2a_message_latency")
    assert list(lat.explicit_bounds) == list(A2A_BUCKETS)
    assert lat.count == 10 and list(lat.bucket_counts) == [0, 0, 10, 0, 0, 0, 0, 0, 0]
    assert abs(lat.sum - 0.07) < 1e-6

    http = by_labels(req, "http_request_duration")
    assert set(http) == {
        (("endpoint", "/orders/{id}"), ("method", "GET"), ("status_class", "2xx")),
        (("endpoint", "/orders"), ("method", "POST"), ("status_class", "5xx")),
    }
    assert list(next(iter(http.values())).explicit_bounds) == list(HTTP_BUCKETS)

    errors = {k: dp.as_int for k, dp in by_labels(req, "errors").items()}
    # a failed workflow's root failed because its tool call did (its direct child): the
    # failure counts once, where it arose (the tool call), not again at the root
    assert errors == {
        (
            ("component", "mcp"),
            ("error_type", "connection"),
            ("recoverable", "true"),
            ("severity", "error"),
        ): 2,
        (
            ("component", "http"),
            ("error_type", "_OTHER"),
            ("recoverable", "true"),
            ("severity", "error"),
        ): 1,
        (
            ("component", "database"),
            ("error_type", "UndefinedTable"),
            ("recoverable", "false"),
            ("severity", "error"),
        ): 1,
    }

    # derived: 2 of 10 failed; durations > 5s: 5.3 .. 9.3 (5 of 10)
    ratio = {k: dp.as_double for k, dp in by_labels(req, "agent_workflow_failure_ratio").items()}
    assert ratio == {(("workflow_type", "research"),): pytest.approx(0.2)}
    assert metric(req, "agent_workflow_failure_ratio").unit == "1"
    sla = by_labels(req, "agent_workflow_sla_compliance_ratio")
    assert sla[(("workflow_type", "research"),)].as_double == pytest.approx(0.5)
    burn = {
        k: dp.as_double for k, dp in by_labels(req, "agent_workflow_error_budget_burn_rate").items()
    }
    assert burn == {
        (("window", w), ("workflow_type", "research")): pytest.approx(20.0)
        for w in ("5m", "30m", "1h", "6h")
    }
    remaining = by_labels(req, "agent_workflow_error_budget_remaining_ratio")
    assert remaining[(("workflow_type", "research"),)].as_double == pytest.approx(-19.0)


async def test_cardinality_limit_overflow_is_counted() -> None:
    traces = []
    for i in range(6):
        root = span(100 + i, 1, None, f"workflow.type{i}", duration=0.2)
        traces.append([root])
    req, tel = await run(traces, aggregation_cardinality_limit=4)
    ex = by_labels(req, "agent_workflow_executions")
    assert len(ex) == 5
    assert ex[(("otel.metric.overflow", True),)].as_int == 2
    assert (
        tel.value(
            "otelcol_connector_aggregation_overflow_measurements_total",
            connector="agentmetrics",
            metric="agent_workflow_executions",
        )
        == 2
    )


async def test_delta_temporality() -> None:
    req, _ = await run(
        [workflow(1, failed=False, duration=1, tool_latency=0.1)],
        aggregation_temporality="AGGREGATION_TEMPORALITY_DELTA",
    )
    assert metric(req, "agent_workflow_executions").sum.aggregation_temporality == 1


def test_window_label() -> None:
    assert [window_label(s) for s in (300, 3600, 90, 21600)] == ["5m", "1h", "90s", "6h"]


async def test_agent_gauges_offered_to_the_console_are_the_exported_values() -> None:
    """The AgentMetricsProvider gives the derived gauges the next flush exports."""
    from pipeline.status import AgentMetricsProvider

    tel = SelfTelemetry()
    out = Capture()
    cfg = AgentMetricsConfig.model_validate({"metrics_flush_interval": "1h"})
    conn = AgentMetricsConnector(settings(Kind.CONNECTOR, "agentmetrics", tel), cfg, out)
    (provider,) = [p for p in conn.settings.providers if isinstance(p, AgentMetricsProvider)]
    assert provider.agent_gauges() == []
    proc = WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow", tel),
        WorkflowConfig.model_validate({"wait_duration": "1h"}),
        conn,
    )
    for i in range(10):
        await proc.consume(
            request(workflow(10 + i, failed=i < 2, duration=0.3 + i, tool_latency=0.05))
        )
    await proc.shutdown()
    gauges = {(g.name, tuple(sorted(g.labels.items()))): g.value for g in provider.agent_gauges()}
    await conn.shutdown()
    req = out.payloads[-1].message()
    exported = {
        (name, k): dp.as_double
        for name in (
            "agent_workflow_failure_ratio",
            "agent_workflow_sla_compliance_ratio",
            "agent_workflow_error_budget_burn_rate",
            "agent_workflow_error_budget_remaining_ratio",
        )
        for k, dp in by_labels(req, name).items()
    }
    assert gauges == pytest.approx(exported)
    assert gauges[("agent_workflow_failure_ratio", (("workflow_type", "research"),))] == (
        pytest.approx(0.2)
    )


def chat(trace: int, n: int, model: str, tokens_in: int, tokens_out: int, **kw: Any) -> Span:
    return span(
        trace,
        n,
        1,
        f"chat {model}",
        kind=Span.SPAN_KIND_CLIENT,
        attrs={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.agent.name": "planner",
            "gen_ai.usage.input_tokens": tokens_in,
            "gen_ai.usage.output_tokens": tokens_out,
        },
        duration=0.3,
        **kw,
    )


async def test_genai_metrics_tokens_and_cost_per_workflow() -> None:
    """gen_ai.client.token.usage / gen_ai.client.operation.duration from inference spans (the
    conventions' attributes and buckets, plus the agent name), and per workflow type and agent
    the tokens and, from the price table, the cost."""
    traces = []
    for t in range(3):
        root = span(
            t + 1,
            1,
            None,
            "workflow.research",
            attrs={"workflow.id": f"wf-{t}", "gen_ai.agent.id": "planner"},
            duration=2.0,
        )
        traces.append(
            [
                root,
                chat(t + 1, 2, "gpt-4o", 1000, 200),
                chat(t + 1, 3, "mini", 50, 10, error="rate limited" if t == 0 else None),
            ]
        )
    req, _ = await run(
        traces, prices={"gpt-4o": {"input": 2.5, "output": 10.0}}, sla={"default": "5s"}
    )
    usage = {
        (labels(dp)["gen_ai.request.model"], labels(dp)["gen_ai.token.type"]): dp
        for dp in points(req, "gen_ai.client.token.usage")
    }
    assert {k: (dp.count, dp.sum) for k, dp in usage.items()} == {
        ("gpt-4o", "input"): (3, 3000.0),
        ("gpt-4o", "output"): (3, 600.0),
        ("mini", "input"): (3, 150.0),
        ("mini", "output"): (3, 30.0),
    }
    dp = usage["gpt-4o", "input"]
    assert labels(dp) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.agent.name": "planner",
        "gen_ai.token.type": "input",
    }
    assert list(dp.explicit_bounds) == [float(4**i) for i in range(14)]
    assert metric(req, "gen_ai.client.token.usage").unit == "{token}"
    durations = {
        tuple(sorted(labels(dp).items())): dp.count
        for dp in points(req, "gen_ai.client.operation.duration")
    }
    assert sum(durations.values()) == 6
    failed = [dict(k) for k in durations if "error.type" in dict(k)]
    assert [f["error.type"] for f in failed] == ["rate_limited"]  # the classification rules
    (op,) = [dp for dp in points(req, "gen_ai.client.operation.duration") if dp.count == 3]
    assert list(op.explicit_bounds) == pytest.approx([0.01 * 2**i for i in range(14)])
    tokens = {
        tuple(labels(dp)[k] for k in ("workflow_type", "agent_id", "token_type")): dp.as_int
        for dp in points(req, "agent_workflow_tokens")
    }
    assert tokens == {
        ("research", "planner", "input"): 3150,
        ("research", "planner", "output"): 630,
    }
    (cost,) = points(req, "agent_workflow_cost_usd")
    assert labels(cost) == {"workflow_type": "research", "agent_id": "planner"}
    # 3 x (1000 x 2.5 + 200 x 10) / 1e6; "mini" has no price
    assert cost.as_double == pytest.approx(3 * (1000 * 2.5 + 200 * 10) / 1e6)
