"""configs/alerts/: the rules check and pass their unit tests, the Alertmanager config routes
by team and severity and inhibits as documented, and the rules fire on what the gateway
really exports (checked end to end with a real Prometheus)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from plugins.prometheustranslator import MetricKind, metric_name
from tests.plugins.alertmanager_server import alertmanager
from tests.plugins.prometheus_server import prometheus
from tests.support import ROOT, GatewayProcess, free_port, require_program, write_config

ALERTS = ROOT / "configs" / "alerts"
RULES = ALERTS / "agent-alerts.yml"


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules() -> None:
    promtool = require_program("promtool", "apt-get install prometheus")
    proc = run([promtool, "check", "rules", str(RULES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 12 rules found" in proc.stdout


def test_promtool_test_rules() -> None:
    promtool = require_program("promtool", "apt-get install prometheus")
    tests = sorted((ALERTS / "tests").glob("*.yml"))
    assert len(tests) >= 3
    proc = run([promtool, "test", "rules", *map(str, tests)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(tests)


def test_a_broken_expectation_makes_promtool_fail(tmp_path: Path) -> None:
    """The unit tests can fail: 5% failures must not fire the failure-rate alert."""
    promtool = require_program("promtool", "apt-get install prometheus")
    test = write_config(
        tmp_path,
        f"""
        rule_files: [{RULES}]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'agent_workflow_executions_total{{workflow_type="s",outcome="failed"}}'
                values: '0+1x30'
              - series: 'agent_workflow_executions_total{{workflow_type="s",outcome="success"}}'
                values: '0+19x30'
            alert_rule_test:
              - eval_time: 20m
                alertname: WorkflowFailureRateHigh
                exp_alerts:
                  - exp_labels: {{severity: critical, component: workflow, team: product,
                                  workflow_type: s}}
        """,
        "broken.test.yml",
    )
    proc = run([promtool, "test", "rules", str(test)])
    assert proc.returncode != 0
    assert "FAILED" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "team=platform"], "platform-pager"),
        (["severity=warning", "team=platform"], "platform-chat"),
        (["severity=critical", "team=product"], "product-pager"),
        (["severity=warning", "team=product"], "product-chat"),
        (["severity=critical", "team=integrations"], "integrations-pager"),
        (["severity=warning", "team=integrations"], "integrations-chat"),
        (["severity=critical"], "oncall-pager"),
        (["severity=warning", "team=nobody"], "oncall-chat"),
    ],
)
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    amtool = require_program("amtool", "apt-get install prometheus-alertmanager")
    config = str(ALERTS / "alertmanager.yml")
    checked = run([amtool, "check-config", config])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    proc = run([amtool, "config", "routes", "test", f"--config.file={config}", *labels])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == receiver


def _post(url: str, body: Any) -> int:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


async def test_alertmanager_mutes_the_warning_while_the_critical_fires(tmp_path: Path) -> None:
    shipped = (ALERTS / "alertmanager.yml").read_text()
    async with alertmanager(tmp_path, shipped) as (am, _):
        base = {"alertname": "WorkflowErrorBudgetBurn", "team": "product", "instance": "gw-1"}
        alerts = [
            {"labels": {**base, "severity": "critical", "workflow_type": "search"}},
            {"labels": {**base, "severity": "warning", "workflow_type": "search"}},
            # Another workflow's warning is not muted by the search page.
            {"labels": {**base, "severity": "warning", "workflow_type": "chat"}},
        ]
        assert await asyncio.to_thread(_post, f"{am.url}/api/v2/alerts", alerts) == 200

        def states(got: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
            return {
                (a["labels"]["severity"], a["labels"]["workflow_type"]): a["status"] for a in got
            }

        state = states(
            await am.wait_for(
                lambda got: (
                    len(states(got)) == 3
                    and bool(states(got)[("warning", "search")]["inhibitedBy"])
                ),
                within=10,
            )
        )
        assert state[("warning", "search")]["state"] == "suppressed"
        assert state[("warning", "search")]["inhibitedBy"]
        assert state[("critical", "search")]["state"] == "active"
        assert state[("warning", "chat")]["state"] == "active"


@pytest.mark.parametrize(
    ("otel_name", "unit", "kind", "prometheus_name"),
    [
        ("process.cpu.usage", "%", MetricKind.GAUGE, "process_cpu_usage_percent"),
        ("process.memory.rss", "By", MetricKind.GAUGE, "process_memory_rss_bytes"),
        (
            "agent.workflow.executions",
            "{execution}",
            MetricKind.COUNTER,
            "agent_workflow_executions_total",
        ),
        ("mcp.tool.call.duration", "s", MetricKind.HISTOGRAM, "mcp_tool_call_duration_seconds"),
        ("agent.workflow.failure_ratio", "1", MetricKind.GAUGE, "agent_workflow_failure_ratio"),
        (
            "agent.workflow.sla_compliance_ratio",
            "1",
            MetricKind.GAUGE,
            "agent_workflow_sla_compliance_ratio",
        ),
        # Unit "1" would add "_ratio": a burn rate and a status carry no unit (or {...}).
        (
            "agent.workflow.error_budget_burn_rate",
            "",
            MetricKind.GAUGE,
            "agent_workflow_error_budget_burn_rate",
        ),
        ("health_check_status", "{status}", MetricKind.GAUGE, "health_check_status"),
    ],
)
def test_rule_metric_names_are_what_the_exporter_serves(
    otel_name: str, unit: str, kind: MetricKind, prometheus_name: str
) -> None:
    assert metric_name(otel_name, unit, kind) == prometheus_name
    assert prometheus_name in RULES.read_text()


async def test_rules_fire_on_what_the_shipped_gateway_config_exports(tmp_path: Path) -> None:
    """configs/prometheus-gateway.yaml, run as a process; SDK metrics in; Prometheus with the
    rules scrapes it; the alerts on those metrics become pending."""
    otlp, exporter, own = free_port(), free_port(), free_port()
    env = {
        "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{otlp}",
        "PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{exporter}",
        "PIPELINE_TELEMETRY_ADDRESS": f"127.0.0.1:{own}",
    }
    scrape = [
        {
            "job_name": "gateway",
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{exporter}"]}],
        }
    ]
    with GatewayProcess(ROOT / "configs" / "prometheus-gateway.yaml", env=env) as gw:
        await asyncio.to_thread(gw.wait_ready)
        async with prometheus(tmp_path, scrape, rule_files=[str(RULES)]) as prom:
            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"127.0.0.1:{otlp}", insecure=True),
                export_interval_millis=500,
            )
            provider = MeterProvider(
                resource=Resource.create({"service.name": "agent", "service.instance.id": "a-1"}),
                metric_readers=[reader],
            )
            meter = provider.get_meter("test")
            meter.create_gauge("process.cpu.usage", unit="%").set(95.0)
            meter.create_gauge("agent.workflow.failure_ratio", unit="1").set(
                0.2, {"workflow_type": "search"}
            )
            meter.create_gauge("health_check_status", unit="{status}").set(
                0, {"check": "database_connectivity", "type": "database", "critical": "true"}
            )
            try:
                expected = {"AgentHighCPUUsage", "WorkflowFailureRatioHigh", "HealthCheckFailing"}
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                names: set[str] = set()
                while loop.time() < deadline:
                    body = await prom.get_json("/api/v1/alerts")
                    names = {a["labels"]["alertname"] for a in body["data"]["alerts"]}
                    if expected <= names:
                        break
                    await asyncio.sleep(0.3)
                assert expected <= names, names
                alerts = (await prom.get_json("/api/v1/alerts"))["data"]["alerts"]
                ratio = next(
                    a for a in alerts if a["labels"]["alertname"] == "WorkflowFailureRatioHigh"
                )
                assert ratio["labels"]["workflow_type"] == "search"
                assert ratio["labels"]["job"] == "agent"
                assert ratio["state"] in ("pending", "firing")
            finally:
                await asyncio.to_thread(provider.shutdown)
        assert gw.stop() == 0
