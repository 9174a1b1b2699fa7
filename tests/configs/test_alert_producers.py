"""Every alert rule shipped in ``configs/alerts/`` has a producer: the example agent workload
(OpenTelemetry SDK spans, asyncpg against PostgreSQL, a Redis cache, MCP tool calls, requests
against a local HTTP endpoint) through the unmodified default config ``configs/gateway.yaml``
(only environment variables: the local services' endpoints, random ports), and through
``configs/anomaly-alerts.yaml`` plus health checks of the local PostgreSQL and Redis (an
overlay, as a user adds them), scraped by a real Prometheus: the series of every rule's
expression (its thresholds taken away) return data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.agent_workload import Workload, WorkloadConfig
from pipeline.config import load_config
from pipeline.pluginmanager import default_registry
from pipeline.service import Service
from pipeline.telemetry import SelfTelemetry
from tests.plugins.helpers.peers import mcp_server
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


async def missing_rules(prom: Any) -> list[str]:
    """The rules whose expression (thresholds taken away) returns no data; each whole
    expression must be valid PromQL for this Prometheus."""
    missing = []
    for name, expr in rules():
        data = COMPARISON.sub("", expr)
        try:
            await prom.wait_for(data, bool, within=30)
        except AssertionError:
            missing.append(f"{name}: {data}")
        body = await prom.get_json("/api/v1/query", query=expr)
        assert body["status"] == "success", (name, body)
    return missing


async def missing_families(prom: Any, families: tuple[str, ...], within: float) -> list[str]:
    missing = []
    for family in families:
        try:
            await prom.wait_for(family, bool, within=within)
        except AssertionError:
            missing.append(family)
    return missing


# the reference's other families: derived (dbmetrics) or recorded
DERIVED = (
    'database_operations_total{operation="SELECT",query_type="read"}',
    'cache_operations_total{cache_type="redis",operation="GET",result="hit"}',
    'cache_operations_total{cache_type="redis",operation="GET",result="miss"}',
    'cache_hit_ratio{cache_type="redis"}',
    'http_requests_per_second{method="GET",endpoint="/api/items/{id}"}',
)


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


@contextlib.asynccontextmanager
async def scraped_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: list[str], env: dict[str, str]
) -> AsyncIterator[tuple[Service, Any]]:
    """The gateway of ``files`` run here (the environment ``env`` and random ports for its
    endpoints), scraped by a real Prometheus with the recording rules, once the example agent
    workload (40 workflows, one in five failing, with Redis) went through it."""
    grpc, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    for name, value in {
        "OTLP_GRPC_ENDPOINT": grpc,
        "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
        "PROMETHEUS_EXPORTER_ENDPOINT": metrics,
        "PIPELINE_TELEMETRY_ADDRESS": f"127.0.0.1:{free_port()}",
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    service = Service(load_config(files, default_registry()), SelfTelemetry())
    await service.start()
    try:
        scrape = [{"job_name": "gateway", "static_configs": [{"targets": [metrics]}]}]
        async with prometheus(tmp_path, scrape, rule_files=[str(RECORDING)]) as prom:
            cfg = WorkloadConfig(endpoint=grpc, workflows=40, rate=20, failure_rate=0.2, redis=True)
            # its own event loop in a thread: the SDK's flush blocks, the gateway serves here
            with own_instrumentation():
                await asyncio.to_thread(lambda: asyncio.run(Workload(cfg).run()))
            yield service, prom
    finally:
        await service.shutdown()


async def test_the_default_config_produces_every_alert_expression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """configs/gateway.yaml as shipped; the environment gives the local services to check
    (PostgreSQL and Redis, critical as in the reference; an MCP server of the official SDK and
    an HTTP service, the gateway's own health endpoint, not critical) and random ports."""
    health = f"127.0.0.1:{free_port()}"
    peers = contextlib.ExitStack()
    request.addfinalizer(peers.close)
    mcp_url, _ = peers.enter_context(mcp_server())
    for name in ("POSTGRESQL_CRITICAL", "REDIS_CRITICAL", "MCP_CRITICAL", "HTTP_CRITICAL"):
        monkeypatch.delenv(f"HEALTHCHECK_{name}", raising=False)
    env = {
        "HEALTH_CHECK_ENDPOINT": health,
        "HEALTHCHECK_POSTGRESQL_ENDPOINT": PG,
        "HEALTHCHECK_REDIS_ENDPOINT": REDIS,
        "HEALTHCHECK_HTTP_ENDPOINT": f"http://{health}/live",
        "HEALTHCHECK_MCP_ENDPOINT": mcp_url,
    }
    async with scraped_gateway(
        tmp_path, monkeypatch, [str(ROOT / "configs" / "gateway.yaml")], env
    ) as (_, prom):
        # the default config flushes the derived metrics every 15 s
        missing = await missing_families(
            prom, ("agent_workflow_executions_total", *DERIVED), within=45
        )
        missing += await missing_rules(prom)
        assert not missing, missing
        status = await prom.query("health_check_status")
        assert {(r["metric"]["check"], r["metric"]["critical"]) for r in status} == {
            ("postgresql", "true"),
            ("redis", "true"),
            ("mcp", "false"),
            ("http", "false"),
        }
        healthy = await prom.query("health_check_status == 1")
        assert len(healthy) == 4, status
        own = await prom.query("process_memory_rss_bytes")
        assert len(own) == 1  # the gateway's own process only


async def test_every_alert_expression_returns_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "ALERTMANAGER_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "ANOMALY_STATE_FILE": str(tmp_path / "baselines.json"),
        "WORKFLOW_WAIT_DURATION": "100ms",
    }
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
    files = [str(ROOT / "configs" / "anomaly-alerts.yaml"), str(overlay)]
    async with scraped_gateway(tmp_path, monkeypatch, files, env) as (service, prom):
        missing = await missing_rules(prom)
        # one evaluation of the anomaly connector (its interval is a minute)
        engine = next(n.component.engine for n in service.graph.nodes if n.id.type == "anomaly")
        await engine.tick()
        missing += await missing_families(
            prom,
            (
                'anomaly_score{metric="mcp_tool_call_duration",anomaly_type="latency_increase"}',
                'anomaly_active{metric="process_memory_rss_bytes",anomaly_type="memory_leak"}',
                *DERIVED,
            ),
            within=40,
        )
        assert not missing, missing
