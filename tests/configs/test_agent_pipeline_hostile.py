"""The agent pipeline of ``configs/agent-gateway.yaml`` (the workflow processor, the
``agentmetrics`` and ``spanmetrics`` connectors, the batch processor and the exporters), run
as shipped with only its endpoints, delays and an observing backend overridden, against
hostile agent traces (``tests.hostile.hostile_agent_traces``: invalid UTF-8 in agent and tool
attributes, huge values, AnyValues nested thousands deep, 100,000 spans in a request, missing
and odd ids, duplicate span ids, parent cycles, absurd tool timestamps) over OTLP/HTTP and
OTLP/gRPC, each followed by a good agent workflow. The gateway stays up, every request it
refuses is counted, every good workflow is delivered, and the metrics derived from the good
ones are exactly those of the good workflows sent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from pipeline.config import load_config
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from pipeline.telemetry import SelfTelemetry
from plugins._labelbound import MAX_LABEL_VALUE_CHARS
from tests.hostile import agent_workflow, hostile_agent_traces, raw_traces, refused_requests
from tests.otlp_support import TRACE_METHOD, RecordingBackend, recording_backend
from tests.support import ROOT, free_port, logged, wait_until, write_config

OVERRIDE = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  workflow: {{wait_duration: 300ms}}
  batch: {{timeout: 20ms}}
connectors:
  agentmetrics: {{metrics_flush_interval: 200ms}}
  spanmetrics: {{metrics_flush_interval: 200ms}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{backend}"
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}, logs: {{level: warn}}}}
  pipelines:
    traces: {{exporters: [debug, otlp, agentmetrics, spanmetrics]}}
    metrics/agent: {{exporters: [debug/metrics, otlp]}}
"""

TOOL_SECONDS = 0.04  # agent_workflow's tool call: 10 ms to 50 ms after the root's start
WORKFLOW_SECONDS = 0.1


def good_trace_id(n: int) -> bytes:
    return b"\x90\x0d" + n.to_bytes(14, "big")


def latest_points(backend: RecordingBackend, name: str) -> dict[tuple[tuple[str, str], ...], Any]:
    """The last data point of each series of ``name`` (cumulative: the running total)."""
    out: dict[tuple[tuple[str, str], ...], Any] = {}
    for req in backend.metrics:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != name:
                        continue
                    for dp in getattr(m, m.WhichOneof("data")).data_points:
                        labels = tuple(sorted((a.key, a.value.string_value) for a in dp.attributes))
                        out[labels] = dp
    return out


def good_series(backend: RecordingBackend) -> dict[str, Any]:
    """What the good workflows gave: executions, their durations, MCP tool calls and their
    durations, summed over the series labelled as the good workflows are."""
    executions = latest_points(backend, "agent_workflow_executions")
    durations = latest_points(backend, "agent_workflow_duration")
    calls = latest_points(backend, "mcp_tool_calls")
    call_durations = latest_points(backend, "mcp_tool_call_duration")

    def good(points: dict[Any, Any], key: str, value: str) -> list[tuple[dict[str, str], Any]]:
        return [(dict(k), dp) for k, dp in points.items() if dict(k).get(key) == value]

    def count(points: list[tuple[dict[str, str], Any]]) -> int:
        return sum(int(dp.as_int or dp.as_double) for _, dp in points)

    runs = good(executions, "workflow_type", "good")
    tools = good(calls, "tool", "good-search")
    return {
        "executions": {d.get("outcome"): count([(d, dp)]) for d, dp in runs},
        "agents": sorted({d.get("agent_id") for d, _ in runs}),
        "duration_count": sum(dp.count for _, dp in good(durations, "workflow_type", "good")),
        "duration_sum": sum(dp.sum for _, dp in good(durations, "workflow_type", "good")),
        "tool_calls": count(tools),
        "tool_duration_count": sum(
            dp.count for _, dp in good(call_durations, "tool", "good-search")
        ),
        "tool_duration_sum": sum(dp.sum for _, dp in good(call_durations, "tool", "good-search")),
    }


@contextlib.asynccontextmanager
async def agent_gateway(
    tmp_path: Path, override: str, **ports: int
) -> AsyncIterator[tuple[Service, RecordingBackend]]:
    """``configs/agent-gateway.yaml`` with ``override`` (formatted with ``ports`` and
    ``backend``, the port of a recording OTLP backend) merged over it, started."""
    async with recording_backend() as backend:
        path = write_config(
            tmp_path, override.format(backend=backend.grpc_port, **ports), "override.yaml"
        )
        config = load_config(
            [str(ROOT / "configs" / "agent-gateway.yaml"), str(path)], default_registry()
        )
        service = Service(config, SelfTelemetry())
        await service.start()
        try:
            yield service, backend
        finally:
            await service.shutdown()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Service, RecordingBackend, int, int]]:
    grpc_port, http_port = free_port(), free_port()
    async with agent_gateway(tmp_path, OVERRIDE, grpc=grpc_port, http=http_port) as (
        service,
        backend,
    ):
        yield service, backend, grpc_port, http_port


async def test_hostile_agent_traces_over_http_and_grpc_leave_the_good_metrics_exact(
    gateway: tuple[Service, RecordingBackend, int, int],
) -> None:
    service, backend, grpc_port, http_port = gateway
    now = time.time_ns()
    bad = hostile_agent_traces(now)
    outcomes: dict[str, list[str]] = {}
    not_ok = 0
    good_sent = 0

    def good_request() -> bytes:
        nonlocal good_sent
        good_sent += 1
        spans = agent_workflow(
            good_trace_id(good_sent), 1, now, agent=b"agent-good", tool=b"good-search"
        )
        return raw_traces(spans, service=b"good-svc")

    with logged() as records:
        async with (
            aiohttp.ClientSession() as session,
            grpc.aio.insecure_channel(
                f"127.0.0.1:{grpc_port}",
                options=[("grpc.max_send_message_length", 64 << 20)],
            ) as channel,
        ):
            export = channel.unary_unary(TRACE_METHOD)
            url = f"http://127.0.0.1:{http_port}/v1/traces"
            headers = {"Content-Type": "application/x-protobuf"}
            for what, body in bad:
                async with session.post(url, data=body, headers=headers) as r:
                    assert r.status in (200, 400, 413), (what, r.status, await r.text())
                    outcomes.setdefault(what, []).append(str(r.status))
                    not_ok += r.status != 200
                async with session.post(url, data=good_request(), headers=headers) as r:
                    assert r.status == 200, (what, await r.text())
                try:
                    await export(body, timeout=30)
                    outcomes[what].append("OK")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() in (
                        grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                    ), (what, exc.code(), exc.details())
                    outcomes[what].append(exc.code().name)
                    not_ok += 1
                assert await export(good_request(), timeout=30) == b"", what
        # every good workflow delivered, and its derived metrics exactly the good ones'
        want = {
            "executions": {"success": good_sent},
            "agents": ["agent-good"],
            "duration_count": good_sent,
            "duration_sum": pytest.approx(good_sent * WORKFLOW_SECONDS),
            "tool_calls": good_sent,
            "tool_duration_count": good_sent,
            "tool_duration_sum": pytest.approx(good_sent * TOOL_SECONDS),
        }

        def delivered() -> bool:
            names = {s.trace_id for s in backend.spans if s.trace_id[:2] == b"\x90\x0d"}
            return len(names) == good_sent and good_series(backend) == want

        try:
            await wait_until(delivered, within=30)
        except AssertionError:
            raise AssertionError((good_series(backend), want, outcomes)) from None
        await asyncio.sleep(0.5)  # two more flushes: nothing counted twice meanwhile
        assert good_series(backend) == want, outcomes
        # a huge agent or tool name became no huge label: the series keep its first characters
        longest = max(
            len(a.value.string_value)
            for req in backend.metrics
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            for dp in getattr(m, m.WhichOneof("data")).data_points
            for a in dp.attributes
        )
        assert longest == MAX_LABEL_VALUE_CHARS
        # every refusal counted, the gateway still serves and is not failed
        assert refused_requests(service) == not_ok, outcomes
        assert not any(
            e.status in ("permanent_error", "fatal_error") for e in service.statuses.values()
        ), service.statuses
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records if r.exc_info][
        :5
    ]
