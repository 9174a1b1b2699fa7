"""The agent metrics as Prometheus serves them: through the gateway's ``prometheus`` exporter
(the standard OpenTelemetry -> Prometheus translation), the names, labels and buckets are
exactly those of the reference monitoring document."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from pipeline.service import Service
from tests.support import ROOT, config_from_text, free_port

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  workflow:
    wait_duration: 200ms
connectors:
  agentmetrics:
    metrics_flush_interval: 200ms
    sla:
      default: 2s
  spanmetrics:
    metrics_flush_interval: 200ms
exporters:
  prometheus:
    endpoint: 127.0.0.1:{prom}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [workflow]
      exporters: [agentmetrics, spanmetrics]
    metrics:
      receivers: [agentmetrics, spanmetrics]
      exporters: [prometheus]
  telemetry:
    metrics:
      level: none
"""

REFERENCE = {
    # name: (type, label names, buckets)
    "agent_workflow_executions": (
        "counter",
        {"workflow_type", "agent_id", "outcome", "complexity_tier"},
        None,
    ),
    "agent_workflow_duration_seconds": (
        "histogram",
        {"workflow_type", "complexity_tier"},
        [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0],
    ),
    "mcp_tool_calls": ("counter", {"server", "tool", "status", "error_type"}, None),
    "mcp_tool_call_duration_seconds": (
        "histogram",
        {"server", "tool"},
        [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0],
    ),
    "a2a_messages_sent": ("counter", {"message_type", "recipient_type", "priority"}, None),
    "a2a_messages_received": (
        "counter",
        {"message_type", "sender_type", "processing_status"},
        None,
    ),
    "a2a_message_latency_seconds": (
        "histogram",
        {"message_type"},
        [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
    ),
    "http_request_duration_seconds": (
        "histogram",
        {"method", "endpoint", "status_class"},
        [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0],
    ),
    "errors": ("counter", {"error_type", "component", "severity", "recoverable"}, None),
    "agent_workflow_failure_ratio": ("gauge", {"workflow_type"}, None),
    "agent_workflow_sla_compliance_ratio": ("gauge", {"workflow_type"}, None),
    "agent_workflow_error_budget_remaining_ratio": ("gauge", {"workflow_type"}, None),
    "agent_workflow_error_budget_burn_rate": ("gauge", {"workflow_type", "window"}, None),
    "traces_span_metrics_calls": (
        "counter",
        {"service_name", "span_name", "span_kind", "status_code"},
        None,
    ),
    "traces_span_metrics_duration_milliseconds": (
        "histogram",
        {"service_name", "span_name", "span_kind", "status_code"},
        [2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000],
    ),
}


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


async def test_prometheus_names_labels_and_buckets(tmp_path: Any) -> None:
    otlp, prom = free_port(), free_port()
    service = Service(config_from_text(CONFIG.format(otlp=otlp, prom=prom), tmp_path))
    await service.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "examples" / "agent_workload.py"),
            "--endpoint",
            f"127.0.0.1:{otlp}",
            "--workflows",
            "10",
            "--no-db",
            "--timeout-rate",
            "0.1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        families: dict[str, Any] = {}

        async def poll() -> None:
            families.clear()
            for fam in text_string_to_metric_families(await scrape(prom)):
                families[fam.name] = fam

        deadline = asyncio.get_running_loop().time() + 15
        while True:
            await poll()
            executions = families.get("agent_workflow_executions")
            done = executions is not None and sum(s.value for s in executions.samples) == 10
            if (done and set(REFERENCE) <= set(families)) or (
                asyncio.get_running_loop().time() > deadline
            ):
                break
            await asyncio.sleep(0.2)
        missing = set(REFERENCE) - set(families)
        assert not missing, f"missing families {missing}; got {sorted(families)}"
        for name, (kind, label_names, buckets) in REFERENCE.items():
            fam = families[name]
            assert fam.type == kind, name
            for sample in fam.samples:
                got = set(sample.labels) - {"le"}
                if name.startswith("traces_span_metrics"):
                    got -= {"otel_scope_name", "otel_scope_version", "job", "instance"}
                assert got == label_names, (name, sample)
                if kind == "counter":
                    assert sample.name in (f"{name}_total", f"{name}_created"), sample.name
            if buckets is not None:
                les = sorted(
                    {float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket")}
                )
                assert les == [*buckets, float("inf")], name
        windows = {
            s.labels["window"] for s in families["agent_workflow_error_budget_burn_rate"].samples
        }
        assert windows == {"5m", "30m", "1h", "6h"}
    finally:
        await service.shutdown()
