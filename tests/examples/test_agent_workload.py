"""The example agent workload (real OpenTelemetry SDK, asyncpg against PostgreSQL, requests
against a local endpoint) through an in-process gateway running workflow -> agentmetrics and
spanmetrics; the OTLP output is captured by an in-test exporter and checked exactly."""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import socket
import sys
from typing import Any, ClassVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pipeline
from pipeline import (
    Component,
    ComponentConfig,
    CreateSettings,
    ExporterFactory,
    Payload,
    Signal,
    Stability,
)
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from plugins.agentmetricsconnector.connector import (
    A2A_BUCKETS,
    MCP_BUCKETS,
    WORKFLOW_BUCKETS,
)
from tests.plugins.test__metricsagg import labels
from tests.support import ROOT, STRICT, config_from_text, free_port, wait_until

pytestmark = pytest.mark.slow

CAPTURED: dict[str, list[Payload]] = collections.defaultdict(list)
SCRAPES: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}


def scraped(run: str, name: str, **labels: str) -> float:
    """A sample of the gateway's /metrics, scraped during the run."""
    return SCRAPES[run].get((name, tuple(sorted(labels.items()))), 0.0)


class CaptureConfig(ComponentConfig):
    """``exporters.agenttestcapture``."""

    key: str = "default"


class CaptureExporter(Component):
    """Keeps every payload, by config key, for the test to read."""

    mutates_data = False

    def __init__(self, config: CaptureConfig) -> None:
        self.key = config.key

    async def consume(self, data: Payload) -> None:
        CAPTURED[self.key].append(data)


class CaptureExporterFactory(ExporterFactory):
    type = "agenttestcapture"
    config_class = CaptureConfig
    stability: ClassVar = {
        Signal.TRACES: Stability.DEVELOPMENT,
        Signal.METRICS: Stability.DEVELOPMENT,
    }

    def create_traces(self, settings: CreateSettings, config: CaptureConfig) -> CaptureExporter:
        return CaptureExporter(config)

    def create_metrics(self, settings: CreateSettings, config: CaptureConfig) -> CaptureExporter:
        return CaptureExporter(config)


@pytest.fixture(autouse=True, scope="module")
def _register_capture() -> None:
    registry = default_registry()
    if registry.get(pipeline.Kind.EXPORTER, "agenttestcapture") is None:
        registry.register(CaptureExporterFactory())


def require_postgres() -> None:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        message = "this test needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth)"
        if STRICT:
            pytest.fail(message)
        pytest.skip(message)


GATEWAY = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  workflow:
    wait_duration: {wait}
    max_traces: {max_traces}
    max_bytes: {max_bytes}
connectors:
  agentmetrics:
    metrics_flush_interval: 1h
    aggregation_cardinality_limit: {limit}
    sla:
      default: 2s
    slo:
      target: 0.99
  spanmetrics:
    metrics_flush_interval: 1h
exporters:
  agenttestcapture/traces:
    key: traces-{run}
  agenttestcapture/metrics:
    key: metrics-{run}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [workflow]
      exporters: [agenttestcapture/traces, agentmetrics, spanmetrics]
    metrics:
      receivers: [agentmetrics, spanmetrics]
      exporters: [agenttestcapture/metrics]
  telemetry:
    metrics:
      address: 127.0.0.1:{telemetry}
"""


async def run_workload(port: int, *args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "agent_workload.py"),
        "--endpoint",
        f"127.0.0.1:{port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return summary


async def gateway_run(
    tmp_path: Any,
    run: str,
    workload_args: list[str],
    *,
    wait: str = "500ms",
    max_traces: int = 10000,
    max_bytes: int = 64 * 1024 * 1024,
    limit: int = 2000,
) -> tuple[dict[str, Any], Service]:
    port = free_port()
    telemetry = free_port()
    text = GATEWAY.format(
        port=port,
        wait=wait,
        max_traces=max_traces,
        max_bytes=max_bytes,
        limit=limit,
        run=run,
        telemetry=telemetry,
    )
    service = Service(config_from_text(text, tmp_path))
    await service.start()
    try:
        summary = await run_workload(port, *workload_args)
        # the SDK flushed before exiting; let the gateway take the last request in and
        # release what it holds
        await asyncio.sleep(0.3)
        await wait_until(
            lambda: (
                service.telemetry.value(
                    "otelcol_processor_workflow_spans_held", processor="workflow"
                )
                == 0
            ),
            within=15,
        )
        # the gateway's own metrics, as served to Prometheus
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{telemetry}/metrics") as response,
        ):
            SCRAPES[run] = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(await response.text())
                for s in fam.samples
            }
    finally:
        await service.shutdown()
    return summary, service


def spans_out(run: str) -> list[Any]:
    return [
        s
        for p in CAPTURED[f"traces-{run}"]
        for rs in p.message().resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def final_metrics(run: str) -> dict[str, Any]:
    """The connectors' flushes (one each: the flush interval is longer than the run, so only
    the shutdown flush happens), metric name -> Metric."""
    out: dict[str, Any] = {}
    payloads = CAPTURED[f"metrics-{run}"]
    assert len(payloads) == 2
    for rm in (rm for p in payloads for rm in p.message().resource_metrics):
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name in out:
                    getattr(out[m.name], m.WhichOneof("data")).data_points.extend(
                        getattr(m, m.WhichOneof("data")).data_points
                    )
                else:
                    out[m.name] = m
    return out


def dps(metrics: dict[str, Any], name: str) -> list[Any]:
    m = metrics[name]
    return list(getattr(m, m.WhichOneof("data")).data_points)


def expected_buckets(values: list[float], bounds: tuple[float, ...]) -> list[int]:
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1
    return counts


def str_attrs(span: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in span.attributes}


async def test_known_mix_gives_exact_metrics(tmp_path: Any) -> None:
    require_postgres()
    run = "mix"
    summary, service = await gateway_run(
        tmp_path,
        run,
        [
            "--workflows", "50",
            "--failure-rate", "0.2",
            "--timeout-rate", "0.1",
            "--tool-latencies", "0.02,0.07,0.2,0.6,3",
            "--workflow-durations", "0.3,1.2,2.5,7",
            "--a2a-latencies", "0.004,0.03",
            "--http-error-every", "5",
            "--max-export-batch-size", "3",  # children and roots in different requests
            "--late-a2a-delay", "2.0",  # A2A receive spans arrive after their trace's release
        ],
    )  # fmt: skip
    assert sum(summary["workflows"].values()) == 50

    # every span came out once, and every span of a workflow is stamped
    spans = spans_out(run)
    assert len(spans) == summary["spans"] == 50 * 11
    by_trace: dict[bytes, list[Any]] = collections.defaultdict(list)
    for s in spans:
        by_trace[s.trace_id].append(s)
    assert len(by_trace) == 50
    outcomes = collections.Counter()
    for trace_spans in by_trace.values():
        root = next(s for s in trace_spans if not s.parent_span_id)
        root_attrs = str_attrs(root)
        for s in trace_spans:
            a = str_attrs(s)
            assert a["workflow.id"] == root_attrs["workflow.id"], s.name
            assert a["workflow.type"] == root.name.removeprefix("workflow.")
            assert a["workflow.agent.id"] == root_attrs["gen_ai.agent.name"]
            assert a["workflow.outcome"] == root_attrs["workflow.outcome"]
            assert a["workflow.complexity_tier"] == "moderate"
        outcomes[root_attrs["workflow.outcome"]] += 1
    assert outcomes == {"success": 35, "failed": 10, "timeout": 5}
    tel = service.telemetry
    assert (
        tel.value(
            "otelcol_processor_workflow_late_spans_total", processor="workflow", result="enriched"
        )
        == 50
    )
    failed_tools = [s for s in spans if s.name == "execute_tool tool_0" and s.status.code == 2]
    assert len(failed_tools) == 10
    assert {str_attrs(s)["error.type"] for s in failed_tools} == {"connection"}

    metrics = final_metrics(run)
    # agent_workflow_executions{workflow_type, agent_id, outcome, complexity_tier}
    got = {
        "|".join(labels(dp)[k] for k in ("workflow_type", "agent_id", "outcome")): dp.as_int
        for dp in dps(metrics, "agent_workflow_executions")
    }
    assert got == summary["workflows"]
    assert {tuple(sorted(labels(dp))) for dp in dps(metrics, "agent_workflow_executions")} == {
        ("agent_id", "complexity_tier", "outcome", "workflow_type")
    }

    # agent_workflow_duration_seconds{workflow_type, complexity_tier}
    durations_by_type: dict[str, list[float]] = summary["workflow_durations"]
    for dp in dps(metrics, "agent_workflow_duration"):
        assert set(labels(dp)) == {"workflow_type", "complexity_tier"}
        values = durations_by_type[labels(dp)["workflow_type"]]
        assert list(dp.bucket_counts) == expected_buckets(values, WORKFLOW_BUCKETS)
        assert list(dp.explicit_bounds) == list(WORKFLOW_BUCKETS)
        assert dp.exemplars, "exemplars carry trace and span ids"
        assert len(dp.exemplars[0].trace_id) == 16 and len(dp.exemplars[0].span_id) == 8

    # mcp_tool_calls_total{server, tool, status, error_type}
    got = {
        "|".join(labels(dp)[k] for k in ("server", "tool", "status", "error_type")): dp.as_int
        for dp in dps(metrics, "mcp_tool_calls")
    }
    assert got == summary["tool_calls"]
    # mcp_tool_call_duration_seconds{server, tool}: the known latency spread
    total = [0] * (len(MCP_BUCKETS) + 1)
    for dp in dps(metrics, "mcp_tool_call_duration"):
        assert set(labels(dp)) == {"server", "tool"}
        total = [a + b for a, b in zip(total, dp.bucket_counts, strict=True)]
    assert total == expected_buckets(summary["tool_latencies"], MCP_BUCKETS)

    # a2a: sent / received / latency (producer and consumer in different requests)
    assert sum(dp.as_int for dp in dps(metrics, "a2a_messages_sent")) == 50
    assert {tuple(sorted(labels(dp))) for dp in dps(metrics, "a2a_messages_sent")} == {
        ("message_type", "priority", "recipient_type")
    }
    (received,) = dps(metrics, "a2a_messages_received")
    assert labels(received) == {
        "message_type": "task_delegation",
        "sender_type": "planner_agent",
        "processing_status": "processed",
    }
    assert received.as_int == 50
    (latency,) = dps(metrics, "a2a_message_latency")
    assert list(latency.bucket_counts) == expected_buckets(summary["a2a_latencies"], A2A_BUCKETS)

    # http_request_duration_seconds{method, endpoint, status_class}
    got = {
        "|".join(labels(dp)[k] for k in ("method", "endpoint", "status_class")): dp.count
        for dp in dps(metrics, "http_request_duration")
    }
    assert (
        got
        == summary["http_server"]
        == {
            "GET|/api/items/{id}|2xx": 40,
            "GET|/api/items/{id}|5xx": 10,
        }
    )

    # errors_total{error_type, component, severity, recoverable}
    errors = {
        "|".join(labels(dp)[k] for k in ("error_type", "component", "severity", "recoverable")):
        dp.as_int
        for dp in dps(metrics, "errors")
    }  # fmt: skip
    # one failure counts once, where it arose (issue 12): a failed workflow's root failed
    # because its tool call did (not counted again); a 503 fails the endpoint's SERVER span and
    # the requests CLIENT span above it (counted once, at the server); a timed-out root
    # recorded a TimeoutError of its own: a failure of its own, even above a failed HTTP call
    assert errors == {
        "connection|mcp|error|true": 10,
        "TimeoutError|workflow|critical|true": 5,
        "_OTHER|http|error|true": 10,
    }

    # derived gauges, per workflow type
    for wf_type in ("research", "support"):
        n = sum(v for k, v in summary["workflows"].items() if k.startswith(wf_type + "|"))
        bad = sum(
            v
            for k, v in summary["workflows"].items()
            if k.startswith(wf_type + "|") and k.rsplit("|", 1)[1] in ("failed", "timeout")
        )
        within = sum(1 for d in durations_by_type[wf_type] if d <= 2.0)

        def gauge(name: str, wf: str = wf_type, **extra: str) -> float:
            (dp,) = [
                dp for dp in dps(metrics, name) if labels(dp) == {"workflow_type": wf, **extra}
            ]
            return float(dp.as_double)

        assert gauge("agent_workflow_failure_ratio") == pytest.approx(bad / n)
        assert gauge("agent_workflow_sla_compliance_ratio") == pytest.approx(within / n)
        burn = (bad / n) / 0.01
        assert gauge("agent_workflow_error_budget_burn_rate", window="5m") == pytest.approx(burn)
        assert gauge("agent_workflow_error_budget_burn_rate", window="1h") == pytest.approx(burn)
        assert gauge("agent_workflow_error_budget_remaining_ratio") == pytest.approx(1 - burn)

    # spanmetrics: one call per span, Collector names and labels
    calls = dps(metrics, "traces.span.metrics.calls")
    assert sum(dp.as_int for dp in calls) == len(spans)
    assert {tuple(sorted(labels(dp))) for dp in calls} == {
        ("service.name", "span.kind", "span.name", "status.code")
    }
    assert metrics["traces.span.metrics.duration"].unit == "ms"


async def test_limits_are_counted_and_lose_no_span(tmp_path: Any) -> None:
    require_postgres()
    common = [
        "--workflows",
        "30",
        "--no-http",
        "--concurrency",
        "6",
        "--max-export-batch-size",
        "4",
    ]
    # traces held
    summary, service = await gateway_run(tmp_path, "traces", common, wait="5s", max_traces=2)
    assert len(spans_out("traces")) == summary["spans"]
    early = service.telemetry.value(
        "otelcol_processor_workflow_traces_released_total",
        processor="workflow",
        reason="max_traces",
    )
    assert early > 0
    visible = scraped(
        "traces",
        "otelcol_processor_workflow_traces_released_total",
        processor="workflow",
        reason="max_traces",
    )
    assert 0 < visible <= early
    # bytes held
    summary, service = await gateway_run(tmp_path, "bytes", common, wait="5s", max_bytes=8192)
    assert len(spans_out("bytes")) == summary["spans"]
    assert (
        service.telemetry.value(
            "otelcol_processor_workflow_traces_released_total",
            processor="workflow",
            reason="max_bytes",
        )
        > 0
    )
    # series per metric
    summary, service = await gateway_run(
        tmp_path, "series", [*common, "--agents", "10", "--types", "a,b,c"], limit=4
    )
    assert len(spans_out("series")) == summary["spans"]
    metrics = final_metrics("series")
    executions = dps(metrics, "agent_workflow_executions")
    assert len(executions) == 5
    overflow = [dp for dp in executions if labels(dp) == {"otel.metric.overflow": True}]
    assert sum(dp.as_int for dp in executions) == 30
    overflowed = service.telemetry.value(
        "otelcol_connector_aggregation_overflow_measurements_total",
        connector="agentmetrics",
        metric="agent_workflow_executions",
    )
    assert overflow[0].as_int == overflowed > 0
    assert (
        scraped(
            "series",
            "otelcol_connector_aggregation_overflow_measurements_total",
            connector="agentmetrics",
            metric="agent_workflow_executions",
        )
        == overflowed
    )
