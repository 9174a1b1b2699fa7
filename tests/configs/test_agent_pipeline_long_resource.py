"""The agent pipeline of ``configs/agent-gateway.yaml`` with a ``prometheus`` exporter
(``resource_to_telemetry_conversion`` on) on its derived metrics and a ``spanmetrics``
dimension read from the resource, fed agent workflows whose resource attributes are huge:
a 1 MiB ``service.name``, ``service.namespace``, ``service.instance.id`` (``job``,
``instance``) and ``deployment.environment`` (a spanmetrics dimension, a ``target_info``
label). Each hostile request is followed by a good workflow. Every label the connectors flush
and the exporter serves keeps at most ``MAX_LABEL_VALUE_CHARS`` characters, each cut is
counted in ``otelcol_label_values_truncated_total``, and the good workflows' metrics are
exact."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from pipeline.service import Service
from plugins._labelbound import MAX_LABEL_VALUE_CHARS
from tests.configs.test_agent_pipeline_hostile import agent_gateway, good_series, good_trace_id
from tests.hostile import agent_workflow, any_string, attribute, raw_span, raw_traces
from tests.otlp_support import RecordingBackend
from tests.support import free_port, logged, wait_until

OVERRIDE = """
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  workflow: {{wait_duration: 300ms}}
  batch: {{timeout: 20ms}}
connectors:
  agentmetrics: {{metrics_flush_interval: 200ms}}
  spanmetrics:
    metrics_flush_interval: 200ms
    dimensions: [{{name: deployment.environment}}]
exporters:
  otlp:
    endpoint: "127.0.0.1:{backend}"
    tls: {{insecure: true}}
  prometheus:
    endpoint: "127.0.0.1:{scrape}"
    resource_to_telemetry_conversion: {{enabled: true}}
service:
  telemetry: {{metrics: {{level: none}}, logs: {{level: warn}}}}
  pipelines:
    traces: {{exporters: [otlp, agentmetrics, spanmetrics]}}
    metrics/agent: {{exporters: [otlp, prometheus]}}
"""

HUGE = 1 << 20
# (the values here hold no quote or backslash: a plain class keeps a 1 MiB value's match fast)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def hostile_resources() -> list[tuple[str, bytes, list[bytes]]]:
    """(what, service.name, other resource attributes) of each hostile request."""
    env = attribute(b"deployment.environment", any_string(b"e" * HUGE))
    return [
        ("service.name", b"s" * HUGE, []),
        (
            "service.namespace",
            b"svc-ns",
            [attribute(b"service.namespace", any_string(b"n" * HUGE))],
        ),
        (
            "service.instance.id",
            b"svc-id",
            [attribute(b"service.instance.id", any_string(b"i" * HUGE))],
        ),
        ("deployment.environment", b"svc-env", [env]),
        ("all", b"t" * HUGE, [env, attribute(b"host.name", any_string(b"h" * HUGE))]),
    ]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Service, RecordingBackend, int, int]]:
    http_port, scrape_port = free_port(), free_port()
    async with agent_gateway(tmp_path, OVERRIDE, http=http_port, scrape=scrape_port) as (
        service,
        backend,
    ):
        yield service, backend, http_port, scrape_port


def cuts(service: Service) -> dict[tuple[str, str], float]:
    return {
        (s.labels["kind"], s.labels["component"]): s.value
        for family in service.telemetry.registry.collect()
        if family.name == "otelcol_label_values_truncated"
        for s in family.samples
        if s.name.endswith("_total")
    }


async def test_huge_resource_attributes_become_no_huge_label(
    gateway: tuple[Service, RecordingBackend, int, int],
) -> None:
    service, backend, http_port, scrape_port = gateway
    now = time.time_ns()
    url = f"http://127.0.0.1:{http_port}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    good_sent = 0
    with logged() as records:
        async with aiohttp.ClientSession() as session:
            for n, (what, name, attrs) in enumerate(hostile_resources()):
                spans = agent_workflow(
                    b"\xba\xad" + n.to_bytes(14, "big"),
                    1,
                    now,
                    workflow=b"workflow.bad",
                    agent=b"agent-bad",
                    tool=b"bad",
                )
                # an MCP server's call alone: its server label is the service.name
                spans.append(
                    raw_span(
                        b"\xba\xae" + n.to_bytes(14, "big"),
                        (9).to_bytes(8, "big"),
                        b"tools/call bad",
                        kind=2,
                        start=now + 20_000_000,
                        end=now + 40_000_000,
                        attributes=[
                            attribute(b"mcp.method.name", any_string(b"tools/call")),
                            attribute(b"gen_ai.tool.name", any_string(b"bad")),
                        ],
                    )
                )
                body = raw_traces(spans, service=name, resource_attributes=attrs)
                async with session.post(url, data=body, headers=headers) as r:
                    assert r.status == 200, (what, await r.text())
                good_sent += 1
                spans = agent_workflow(
                    good_trace_id(good_sent), 1, now, agent=b"agent-good", tool=b"good-search"
                )
                async with session.post(
                    url, data=raw_traces(spans, service=b"good-svc"), headers=headers
                ) as r:
                    assert r.status == 200, what
            want = {
                "executions": {"success": good_sent},
                "agents": ["agent-good"],
                "duration_count": good_sent,
                "duration_sum": pytest.approx(good_sent * 0.1),
                "tool_calls": good_sent,
                "tool_duration_count": good_sent,
                "tool_duration_sum": pytest.approx(good_sent * 0.04),
            }
            try:
                await wait_until(lambda: good_series(backend) == want, within=30)
            except AssertionError:
                raise AssertionError((good_series(backend), want)) from None

            async def scrape() -> str:
                async with session.get(f"http://127.0.0.1:{scrape_port}/metrics") as r:
                    assert r.status == 200
                    return await r.text()

            # the huge service.name reached the exporter (as job) before the scrape is read
            async def served() -> bool:
                return 'job="ssss' in await scrape()

            deadline = time.monotonic() + 30
            while not await served():
                assert time.monotonic() < deadline, "no series of the hostile service served"
                await asyncio.sleep(0.05)
            text = await scrape()
    labels = LABEL.findall(text)
    longest = {name: len(value) for name, value in labels if len(value) > 100}
    assert longest, "no long label served at all"
    assert max(longest.values()) == MAX_LABEL_VALUE_CHARS, longest
    # the spanmetrics calls of the good service: exactly one per good workflow span
    calls = [
        line
        for line in text.splitlines()
        if line.startswith("traces_span_metrics_calls_total{") and 'job="good-svc"' in line
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in calls) == good_sent * 2, calls
    # and no resource the connectors flushed carries a value longer than the bound
    longest_resource = max(
        len(kv.value.string_value)
        for req in backend.metrics
        for rm in req.resource_metrics
        for kv in rm.resource.attributes
    )
    assert longest_resource == MAX_LABEL_VALUE_CHARS
    counted = cuts(service)
    assert counted.get(("connector", "spanmetrics"), 0) > 0, counted
    assert counted.get(("connector", "agentmetrics"), 0) > 0, counted
    assert counted.get(("exporter", "prometheus"), 0) > 0, counted
    assert any("cut to that length" in r.getMessage() for r in records)
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records][:5]
