"""Every alert rule shipped in ``configs/alerts/`` has a producer: the example agent workload
(OpenTelemetry SDK spans, asyncpg against PostgreSQL, requests against a local HTTP endpoint)
through ``configs/anomaly-alerts.yaml`` plus health checks of the local PostgreSQL and Redis
(an overlay, as a user adds them), scraped by a real Prometheus: the series of every rule's
expression (its thresholds taken away) return data."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest
import yaml

from examples.agent_workload import Workload, WorkloadConfig
from pipeline.config import load_config
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from pipeline.telemetry import SelfTelemetry
from tests.plugins.prometheus_server import prometheus
from tests.plugins.test_dbmetricsconnector import own_instrumentation
from tests.support import ROOT, free_port

pytestmark = pytest.mark.slow

RULE_FILES = sorted((ROOT / "configs" / "alerts").glob("*-alerts.yml"))
RECORDING = ROOT / "configs" / "alerts" / "recording-rules.yml"
COMPARISON = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*[0-9.e+]+")
PG = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/0"


def rules() -> list[tuple[str, str]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out.append((f"{rule['alert']}/{rule['labels'].get('severity')}", rule["expr"]))
    return out


def test_promtool_checks_the_recording_rules() -> None:
    import subprocess

    from tests.support import require_program

    promtool = require_program("promtool", "apt-get install prometheus")
    proc = subprocess.run(
        [promtool, "check", "rules", str(RECORDING)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 1 rules found" in proc.stdout


def test_thresholds_are_taken_away() -> None:
    assert COMPARISON.sub("", 'a{x="1"} >= 95') == 'a{x="1"}'
    assert (
        COMPARISON.sub("", 'a{w="1h"} > 14.4\n  and ignoring (window)\nb{w="5m"} > 14.4')
        == 'a{w="1h"}\n  and ignoring (window)\nb{w="5m"}'
    )
    assert len(rules()) == 12


async def test_every_alert_expression_returns_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grpc, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    for name, value in {
        "OTLP_GRPC_ENDPOINT": grpc,
        "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
        "PROMETHEUS_EXPORTER_ENDPOINT": metrics,
        "PIPELINE_TELEMETRY_ADDRESS": f"127.0.0.1:{free_port()}",
        "ALERTMANAGER_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "ANOMALY_STATE_FILE": str(tmp_path / "baselines.json"),
        "WORKFLOW_WAIT_DURATION": "100ms",
    }.items():
        monkeypatch.setenv(name, value)
    overlay = tmp_path / "local-services.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "receivers": {
                    "hostmetrics": {
                        "collection_interval": "1s",
                        "scrapers": {"process": {"include": {"names": [], "pids": [os.getpid()]}}},
                    },
                    "healthcheck": {
                        "collection_interval": "1s",
                        "trace_checks": False,
                        "checks": [
                            {
                                "name": "orders-db",
                                "type": "postgresql",
                                "endpoint": PG,
                                "critical": True,
                            },
                            {"name": "cache", "type": "redis", "endpoint": REDIS},
                        ],
                    },
                },
                "connectors": {"agentmetrics": {"metrics_flush_interval": "1s"}},
                "exporters": {"alertmanager": {"retry_on_failure": {"enabled": False}}},
                "service": {
                    "pipelines": {
                        "metrics/agent": {
                            "receivers": ["agentmetrics", "dbmetrics", "hostmetrics", "healthcheck"]
                        }
                    }
                },
            }
        )
    )
    config = load_config(
        [str(ROOT / "configs" / "anomaly-alerts.yaml"), str(overlay)], default_registry()
    )
    service = Service(config, SelfTelemetry())
    await service.start()
    try:
        scrape = [{"job_name": "gateway", "static_configs": [{"targets": [metrics]}]}]
        async with prometheus(tmp_path, scrape, rule_files=[str(RECORDING)]) as prom:
            cfg = WorkloadConfig(endpoint=grpc, workflows=40, rate=20, failure_rate=0.2, redis=True)
            # its own event loop in a thread: the SDK's flush blocks, the gateway serves here
            with own_instrumentation():
                await asyncio.to_thread(lambda: asyncio.run(Workload(cfg).run()))
            missing = []
            for name, expr in rules():
                data = COMPARISON.sub("", expr)
                try:
                    await prom.wait_for(data, bool, within=30)
                except AssertionError:
                    missing.append(f"{name}: {data}")
                # the whole expression is valid PromQL for this Prometheus
                body = await prom.get_json("/api/v1/query", query=expr)
                assert body["status"] == "success", (name, body)
            # one evaluation of the anomaly connector (its interval is a minute)
            engine = next(n.component.engine for n in service.graph.nodes if n.id.type == "anomaly")
            await engine.tick()
            # the reference's other families: derived (dbmetrics) or recorded; the scores
            for family in (
                'anomaly_score{metric="mcp_tool_call_duration",anomaly_type="latency_increase"}',
                'anomaly_active{metric="process_memory_rss_bytes",anomaly_type="memory_leak"}',
                'database_operations_total{operation="SELECT",query_type="read"}',
                'cache_operations_total{cache_type="redis",operation="GET",result="hit"}',
                'cache_operations_total{cache_type="redis",operation="GET",result="miss"}',
                'cache_hit_ratio{cache_type="redis"}',
                'http_requests_per_second{method="GET",endpoint="/api/items/{id}"}',
            ):
                try:
                    await prom.wait_for(family, bool, within=40)
                except AssertionError:
                    missing.append(family)
            assert not missing, missing
    finally:
        await service.shutdown()
