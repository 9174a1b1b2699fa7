"""The example agent workload (real OpenTelemetry SDK spans) through ``configs/anomaly-alerts.yaml``
with one MCP tool made slow mid-run: the anomaly connector opens a critical anomaly, the
``alertmanager`` exporter raises it in a real Alertmanager 0.25, which routes it with the
shipped ``configs/alerts/alertmanager.yml`` to the integrations team's pager (a local webhook),
and the alert resolves when the tool recovers.

Time is driven: the workload's rounds stand for minutes; after each, the test flushes the
agentmetrics connector and makes the anomaly connector judge one interval (``tick``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from examples.agent_workload import Workload, WorkloadConfig
from pipeline import Kind
from pipeline.config import load_config
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from pipeline.telemetry import SelfTelemetry
from tests.plugins.alertmanager_server import alertmanager, wait_until_async
from tests.support import ROOT, free_port

pytestmark = pytest.mark.slow

CONFIG = ROOT / "configs" / "anomaly-alerts.yaml"
NORMAL = (0.05, 0.05)
SLOW = (3.0, 0.05)  # tool_0 (docs-server) slow, tool_1 (web-server) not


def _component(service: Service, kind: Kind, type_: str, signal: str = "") -> Any:
    return next(
        n.component
        for n in service.graph.nodes
        if n.kind == kind and n.id.type == type_ and signal in n.signal
    )


async def test_a_slow_tool_alerts_the_team_and_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grpc = f"127.0.0.1:{free_port()}"
    state = tmp_path / "baselines.json"
    async with alertmanager(tmp_path) as (am, webhook):
        for name, value in {
            "OTLP_GRPC_ENDPOINT": grpc,
            "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
            "PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{free_port()}",
            "PIPELINE_TELEMETRY_ADDRESS": f"127.0.0.1:{free_port()}",
            "ALERTMANAGER_ENDPOINT": am.url,
            "ANOMALY_STATE_FILE": str(state),
            "WORKFLOW_WAIT_DURATION": "50ms",
            # each simulated minute's tool calls are counted at its flush, not a window later
            "TOOL_CALL_JOIN_WINDOW": "0s",
            "GATEWAY_NAME": "gw-test",
        }.items():
            monkeypatch.setenv(name, value)
        service = Service(load_config([str(CONFIG)], default_registry()), SelfTelemetry())
        await service.start()
        try:
            agentmetrics = _component(service, Kind.CONNECTOR, "agentmetrics")
            engine = _component(service, Kind.CONNECTOR, "anomaly", "logs").engine
            spans = 0

            async def minute(latencies: tuple[float, float]) -> list[Any]:
                nonlocal spans
                cfg = WorkloadConfig(
                    endpoint=grpc,
                    workflows=8,
                    concurrency=8,
                    tool_latencies=latencies,
                    db=False,
                    http=False,
                )
                # its own event loop in a thread: the SDK's flush blocks, the gateway serves here
                summary = await asyncio.to_thread(lambda: asyncio.run(Workload(cfg).run()))
                spans += summary.spans
                await wait_until_async(
                    lambda: (
                        service.telemetry.value(
                            "otelcol_connector_incoming_items_total",
                            connector="agentmetrics",
                            from_signal="traces",
                            to_signal="metrics",
                        )
                        >= spans
                    )
                )
                await agentmetrics.flush()
                _, events = await engine.tick(time.time())
                return events

            def tool_series() -> dict[str, Any]:
                return {
                    s.labels["tool"]: s.state
                    for s in engine.series.values()
                    if s.labels.get("metric") == "mcp_tool_call_duration"
                }

            for _ in range(16):
                await minute(NORMAL)
            assert not any(s.active for s in tool_series().values())
            for _ in range(3):
                await minute(SLOW)
            slow = tool_series()
            assert slow["tool_0"].active and slow["tool_0"].severity == "critical"
            assert not slow["tool_1"].active

            def latency_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [
                    a
                    for a in alerts
                    if a["labels"]["alertname"] == "AnomalyLatencyIncrease"
                    and a["labels"].get("metric") == "mcp_tool_call_duration"
                ]

            got = latency_alerts(await am.wait_for(lambda a: bool(latency_alerts(a))))
            assert len(got) == 1
            labels = got[0]["labels"]
            assert labels["severity"] == "critical"
            assert labels["team"] == "integrations" and labels["component"] == "mcp"
            assert (labels["server"], labels["tool"]) == ("docs-server", "tool_0")
            assert labels["gateway"] == "gw-test"
            annotations = got[0]["annotations"]
            assert annotations["summary"] == "Latency increase on mcp_tool_call_duration"
            assert "latency increased significantly" in annotations["description"]
            assert annotations["suggested_actions"].startswith("Check database query performance")
            assert annotations["runbook_url"] == (
                "https://runbooks.example.com/anomaly-latency_increase"
            )

            def paged() -> list[Any]:
                return [
                    (r, a)
                    for r, a in webhook.alerts("firing")
                    if a["labels"]["alertname"] == "AnomalyLatencyIncrease"
                ]

            await wait_until_async(lambda: bool(paged()))
            assert paged()[0][0] == "integrations-pager"

            # the tool recovers: the recent window empties of slow calls, then close_after
            for _ in range(12):
                await minute(NORMAL)
                if not tool_series()["tool_0"].active:
                    break
            assert not tool_series()["tool_0"].active
            await am.wait_for(lambda a: not latency_alerts(a))
            await wait_until_async(
                lambda: any(
                    a["labels"]["alertname"] == "AnomalyLatencyIncrease"
                    for _, a in webhook.alerts("resolved")
                )
            )
        finally:
            await service.shutdown()
    # the baselines were saved on shutdown
    saved = json.loads(state.read_text())
    assert any("mcp_tool_call_duration" in key for key in saved["series"])
