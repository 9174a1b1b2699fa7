"""End to end on the unmodified default config (``configs/gateway.yaml``): real pydantic-ai,
driven offline by its ``FunctionModel``, traced by its built-in GenAI instrumentation and
exported with the OpenTelemetry SDK's OTLP/HTTP exporter to a gateway process; the
``agent_workflow_*`` series it serves for Prometheus are exactly the runs made (issue 12 item
4: an agent run is an execution without any ``workflow.*`` attribute). Served over HTTP
(Starlette under OpenTelemetry's ASGI instrumentation), the workflow's duration is the agent
run's, not the HTTP server span's above it."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from plugins._agentdialects import looks_like_run_id
from tests.agent_sources import pydantic_ai_http_source
from tests.agent_sources.pydantic_ai_source import build_agent
from tests.support import ROOT, GatewayProcess, free_port

# scenario -> how often it is run; and the outcome each run has
RUNS = {"success": 2, "slow_tool": 1, "model_retry": 1, "tool_error": 1, "tool_timeout": 1,
        "failed_run": 1}  # fmt: skip
OUTCOME = {"success": "success", "slow_tool": "success", "model_retry": "success",
           "tool_error": "failed", "tool_timeout": "timeout", "failed_run": "failed"}  # fmt: skip


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()  # type: ignore[no-any-return]


def series(text: str, prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(prefix):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def drive(endpoint: str) -> None:
    tp = TracerProvider(resource=Resource.create({"service.name": "calculator-app"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10)))
    try:
        for scenario, times in RUNS.items():
            for _ in range(times):
                agent = build_agent(tp, scenario)
                try:
                    await agent.run("compute")
                except Exception:
                    pass  # the failing scenarios fail the run
    finally:
        tp.shutdown()


def gateway_env() -> tuple[dict[str, int], dict[str, str]]:
    ports = {name: free_port() for name in ("grpc", "http", "prom", "health", "self")}
    env = {
        "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{ports['prom']}",
        "HEALTH_CHECK_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "PIPELINE_TELEMETRY_ADDRESS": f"127.0.0.1:{ports['self']}",
    }
    return ports, env


@pytest.mark.slow
def test_pydantic_ai_runs_give_exact_workflow_series_on_the_default_config(
    tmp_path: Path,
) -> None:
    ports, env = gateway_env()
    with GatewayProcess(ROOT / "configs" / "gateway.yaml", env=env) as gw:
        gw.wait_ready()
        asyncio.run(drive(f"http://127.0.0.1:{ports['http']}/v1/traces"))
        expected: dict[str, float] = {}
        for scenario, times in RUNS.items():
            expected[OUTCOME[scenario]] = expected.get(OUTCOME[scenario], 0) + times
        total = sum(RUNS.values())

        def executions() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return series(scrape(ports["prom"]), "agent_workflow_executions_total")

        deadline = time.monotonic() + 45  # wait_duration 2 s + the 15 s flush, twice at most
        while sum(executions().values()) < total and time.monotonic() < deadline:
            time.sleep(0.5)
        got = executions()
        labels = {"agent_id": "calculator", "complexity_tier": "simple",
                  "workflow_type": "calculator"}  # fmt: skip
        assert got == {
            ("agent_workflow_executions_total", tuple(sorted({**labels, "outcome": o}.items()))): n
            for o, n in expected.items()
        }
        text = scrape(ports["prom"])
        durations = series(text, "agent_workflow_duration_seconds_count")
        assert durations == {
            (
                "agent_workflow_duration_seconds_count",
                (("complexity_tier", "simple"), ("workflow_type", "calculator")),
            ): float(total)
        }
        failure = series(text, "agent_workflow_failure_ratio")
        assert list(failure.values()) == [
            pytest.approx((expected["failed"] + expected["timeout"]) / total)
        ]
        assert [k for k in failure] == [
            ("agent_workflow_failure_ratio", (("workflow_type", "calculator"),))
        ]
        # no per-run id became a label of any agent_workflow series
        for _, lbl in series(text, "agent_workflow"):
            assert not any(looks_like_run_id(v) for _, v in lbl), lbl
        assert gw.stop() == 0


@pytest.mark.slow
def test_agent_served_over_http_gives_the_agent_runs_duration_on_the_default_config() -> None:
    ports, env = gateway_env()
    # scenario -> runs: each an HTTP request whose server span sits above the agent run
    runs = {"success": 2, "slow_tool": 1, "failed_run": 1}
    memory = InMemorySpanExporter()  # what was sent, to compare with
    with GatewayProcess(ROOT / "configs" / "gateway.yaml", env=env) as gw:
        gw.wait_ready()
        tp = TracerProvider(resource=Resource.create({"service.name": "calculator-http-app"}))
        endpoint = f"http://127.0.0.1:{ports['http']}/v1/traces"
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10)))
        tp.add_span_processor(SimpleSpanProcessor(memory))
        try:
            statuses = [
                pydantic_ai_http_source.drive(tp, scenario)
                for scenario, times in runs.items()
                for _ in range(times)
            ]
        finally:
            tp.shutdown()
        assert statuses == [200, 200, 200, 500]
        spans = memory.get_finished_spans()
        agent_runs = [s for s in spans if s.name == "invoke_agent calculator"]
        http = [s for s in spans if s.name == "POST /compute"]
        assert len(agent_runs) == len(http) == sum(runs.values())
        assert all(r.parent is not None and r.parent.span_id in {h.context.span_id for h in http}
                   for r in agent_runs)  # fmt: skip

        def seconds(s: Any) -> float:
            return float((s.end_time - s.start_time) / 1e9)

        total = sum(runs.values())
        count_key = (
            "agent_workflow_duration_seconds_count",
            (("complexity_tier", "simple"), ("workflow_type", "calculator")),
        )
        deadline = time.monotonic() + 45  # wait_duration 2 s + the 15 s flush, twice at most
        while (
            series(scrape(ports["prom"]), "agent_workflow_duration_seconds_count").get(count_key)
            != total
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        text = scrape(ports["prom"])
        assert series(text, "agent_workflow_duration_seconds_count") == {count_key: float(total)}
        (got,) = series(text, "agent_workflow_duration_seconds_sum").values()
        want = sum(seconds(r) for r in agent_runs)
        assert got == pytest.approx(want, rel=1e-9)
        # the HTTP spans last longer (the endpoint's work after a successful run)
        assert (
            sum(seconds(h) for h in http) - want >= 3 * pydantic_ai_http_source.SERVER_WORK_SECONDS
        )
        executions = series(text, "agent_workflow_executions_total")
        assert {dict(k[1])["outcome"]: v for k, v in executions.items()} == {
            "success": 3.0,
            "failed": 1.0,
        }
        assert gw.stop() == 0
