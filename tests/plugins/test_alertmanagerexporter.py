"""The ``alertmanager`` exporter against a real Alertmanager 0.25 (Debian's package) routing
with the shipped ``configs/alerts/alertmanager.yml`` to a local webhook."""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pipeline import Kind, Logs, Payload
from pipeline.telemetry import LOGGER_NAME
from pipeline.testing import SinkConsumer, StubHost, check_factory, create_settings
from plugins.alertmanagerexporter.config import AlertmanagerExporterConfig
from plugins.alertmanagerexporter.exporter import AlertBatch, AlertmanagerExporter
from plugins.alertmanagerexporter.factory import AlertmanagerExporterFactory
from plugins.anomalyconnector.config import DEFAULT_ACTIONS, AnomalyConfig, RuleConfig
from plugins.anomalyconnector.factory import AnomalyConnectorFactory
from tests.plugins.alertmanager_server import alertmanager, wait_until_async
from tests.plugins.test_anomalyconnector import FAST, T0, gauge
from tests.support import free_port

MINUTE = 60.0


def exporter(endpoint: str, **options: Any) -> AlertmanagerExporter:
    config = AlertmanagerExporterConfig(
        endpoint=endpoint,
        retry_on_failure={"initial_interval": "100ms", "max_interval": "200ms"},
        **options,
    )
    return AlertmanagerExporter(create_settings(Kind.EXPORTER, "alertmanager"), config)


def log_record(body: str, severity: int = 17, **attrs: str) -> Payload:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "pipeline-gateway"
    lr = rl.scope_logs.add().log_records.add(
        severity_number=severity,  # type: ignore[arg-type]
        severity_text={17: "ERROR", 9: "INFO", 13: "WARNING"}.get(severity, ""),
        time_unix_nano=time.time_ns(),
    )
    lr.body.string_value = body
    for k, v in attrs.items():
        lr.attributes.add(key=k).value.string_value = v
    return Logs.from_message(req)


async def test_an_anomaly_fires_routes_to_the_team_and_resolves(tmp_path: Path) -> None:
    async with alertmanager(tmp_path) as (am, webhook):
        exp = exporter(am.url, labels={"env": "test"})
        await exp.start(StubHost())
        factory = AnomalyConnectorFactory()
        rule = RuleConfig(
            metric="mcp_tool_call_duration",
            type="latency_increase",
            labels={"team": "integrations", "component": "mcp"},
            runbook_url="https://runbooks.example.com/mcp-latency",
        )
        config = AnomalyConfig(rules=[rule], **FAST)
        settings = create_settings(Kind.CONNECTOR, "anomaly")
        m = factory.create_metrics_to_metrics(settings, config, SinkConsumer())
        factory.create_metrics_to_logs(settings, config, exp)
        rng = random.Random(4)
        labels = {"server": "docs-server", "tool": "search"}
        t = T0
        try:
            for i in range(40):
                t += MINUTE
                value = rng.gauss(2.0 if 20 <= i < 28 else 0.2, 0.02)
                await m.consume(gauge("mcp_tool_call_duration", value, labels, t))
                await m.engine.tick(t)
                if i == 27:  # the slow phase is over: the alert is firing
                    got = await am.wait_for(lambda a: len(a) == 1)
                    alert = got[0]
                    assert alert["labels"] == {
                        "alertname": "AnomalyLatencyIncrease",
                        "severity": "critical",
                        "team": "integrations",
                        "component": "mcp",
                        "server": "docs-server",
                        "tool": "search",
                        "metric": "mcp_tool_call_duration",
                        "anomaly_type": "latency_increase",
                        "service": "agent",
                        "env": "test",
                    }
                    ann = alert["annotations"]
                    assert ann["summary"] == "Latency increase on mcp_tool_call_duration"
                    assert "vs baseline 0.2" in ann["description"]
                    assert ann["runbook_url"] == "https://runbooks.example.com/mcp-latency"
                    assert ann["suggested_actions"] == "; ".join(
                        DEFAULT_ACTIONS["latency_increase"]
                    )
                    assert alert["status"]["state"] == "active"
                    # routed by the shipped config: critical + integrations -> the pager
                    await wait_until_async(lambda: bool(webhook.alerts("firing")))
                    receiver, sent = webhook.alerts("firing")[0]
                    assert receiver == "integrations-pager"
                    assert webhook.notifications[0]["_path"] == "/pagerduty/integrations"
                    assert sent["labels"]["tool"] == "search"
            # recovered: the anomaly closed, the alert resolved in Alertmanager
            assert not exp.active
            await am.wait_for(lambda a: not a)
            await wait_until_async(lambda: bool(webhook.alerts("resolved")))
            receiver, resolved = webhook.alerts("resolved")[0]
            assert receiver == "integrations-pager"
            assert resolved["labels"]["alertname"] == "AnomalyLatencyIncrease"
        finally:
            await exp.shutdown()


async def test_escalation_resolves_the_warning_and_fires_the_critical(tmp_path: Path) -> None:
    async with alertmanager(tmp_path) as (am, _):
        exp = exporter(am.url)
        await exp.start(StubHost())
        try:
            base = {
                "anomaly.id": "a1",
                "anomaly.type": "error_rate_spike",
                "anomaly.metric_name": "errors",
            }
            await exp.consume(
                log_record(
                    "x", **base, **{"anomaly.state": "opened", "anomaly.severity": "warning"}
                )
            )
            await am.wait_for(lambda a: [x["labels"]["severity"] for x in a] == ["warning"])
            await exp.consume(
                log_record(
                    "x", **base, **{"anomaly.state": "escalated", "anomaly.severity": "critical"}
                )
            )
            await am.wait_for(lambda a: [x["labels"]["severity"] for x in a] == ["critical"])
            assert [a.labels["severity"] for a in exp.active.values()] == ["critical"]
            await exp.consume(
                log_record(
                    "x", **base, **{"anomaly.state": "closed", "anomaly.severity": "critical"}
                )
            )
            await am.wait_for(lambda a: not a)
        finally:
            await exp.shutdown()


async def test_a_condition_on_the_gateway_s_own_logs(tmp_path: Path) -> None:
    """Exporter failures of the gateway itself (its own log records, pushed by
    ``service.telemetry.logs`` into a logs pipeline) raise an alert that resolves once no
    failure came for ``resolve_after``."""
    async with alertmanager(tmp_path) as (am, webhook):
        exp = exporter(
            am.url,
            resend_interval="10m",  # active alerts valid 40 minutes from the driven clock
            conditions=[
                {
                    "name": "GatewayExportFailing",
                    "match": {
                        "severity_min": "ERROR",
                        "body": "^export failed",
                        "attributes": {"kind": "exporter"},
                    },
                    "resolve_after": "5m",
                    "labels": {"severity": "warning", "team": "platform", "component": "gateway"},
                    "label_attributes": {"exporter": "component"},
                    "annotations": {
                        "summary": "Exporter {component} is failing",
                        "description": "{body}",
                    },
                }
            ],
        )
        await exp.start(StubHost())
        try:
            failure = "export failed, dropping data: http://x/v1/traces: HTTP 503"
            now = time.time() - 400  # the exporter's clock, driven: 400 s ago
            exp.clock = lambda: now
            await exp.consume(log_record(failure, kind="exporter", component="otlphttp/backend"))
            await exp.consume(log_record("started", severity=9, kind="exporter", component="x"))
            await exp.consume(log_record(failure, severity=13, kind="exporter", component="y"))
            got = await am.wait_for(lambda a: len(a) == 1)
            assert got[0]["labels"] == {
                "alertname": "GatewayExportFailing",
                "severity": "warning",
                "team": "platform",
                "component": "gateway",
                "exporter": "otlphttp/backend",
            }
            assert got[0]["annotations"]["summary"] == "Exporter otlphttp/backend is failing"
            await wait_until_async(lambda: bool(webhook.alerts("firing")))
            assert webhook.alerts("firing")[0][0] == "platform-chat"
            # the resend loop, driven: still active at 4 minutes, resolved at 5
            assert await exp.resend(now + 240) == 1
            assert exp.active
            assert await exp.resend(now + 300) == 1
            assert not exp.active
            await am.wait_for(lambda a: not a)
        finally:
            await exp.shutdown()


async def test_alerts_wait_for_alertmanager_and_are_retried(tmp_path: Path) -> None:
    port = free_port()
    exp = exporter(f"http://127.0.0.1:{port}")
    await exp.start(StubHost())
    try:
        await exp.consume(
            log_record(
                "slow",
                **{
                    "anomaly.id": "b",
                    "anomaly.state": "opened",
                    "anomaly.severity": "critical",
                    "anomaly.type": "latency_increase",
                    "anomaly.metric_name": "m",
                },
            )
        )
        tel = exp.settings.telemetry.service
        await wait_until_async(
            lambda: (
                tel.value("otelcol_exporter_send_failed_log_records_total", exporter="alertmanager")
                + tel.value("otelcol_exporter_retried_log_records_total", exporter="alertmanager")
                > 0
                or exp.helper.consecutive_failures > 0
            )
        )
        async with alertmanager(tmp_path, port=port) as (am, _):
            got = await am.wait_for(lambda a: len(a) == 1)
            assert got[0]["labels"]["alertname"] == "AnomalyLatencyIncrease"
    finally:
        await exp.shutdown()


async def test_active_alerts_are_resent_with_a_valid_until() -> None:
    exp = exporter("http://127.0.0.1:1", resend_interval="30s")
    now = time.time()
    changed = exp.translate(
        log_record(
            "x",
            **{
                "anomaly.id": "c",
                "anomaly.state": "opened",
                "anomaly.severity": "warning",
                "anomaly.type": "throughput_drop",
                "anomaly.metric_name": "calls",
            },
        ),
        now,
    )
    batch = exp._batch(changed, now, 1)
    assert isinstance(batch, AlertBatch)
    (alert,) = json.loads(batch.body)
    assert alert["labels"]["alertname"] == "AnomalyThroughputDrop"
    starts = alert["startsAt"]
    ends = alert["endsAt"]
    assert starts.endswith("Z") and ends > starts  # endsAt: 4 resend intervals ahead
    # a second "opened" of the same labels does not fire again
    assert (
        exp.translate(
            log_record(
                "x",
                **{
                    "anomaly.state": "opened",
                    "anomaly.id": "d",
                    "anomaly.severity": "warning",
                    "anomaly.type": "throughput_drop",
                    "anomaly.metric_name": "calls",
                },
            ),
            now,
        )
        == []
    )


async def test_alertmanager_refuses_a_bad_alert_permanently(tmp_path: Path) -> None:
    """Alertmanager answers 400 to an alert it cannot take; nothing is retried."""
    async with alertmanager(tmp_path) as (am, _):
        exp = exporter(am.url)
        await exp.start(StubHost())
        try:
            batch = AlertBatch(b"", item_count=1)
            batch.body = b'[{"labels": {}}]'
            from pipeline import PermanentError

            with pytest.raises(PermanentError, match="400"):
                await exp._send(batch)
        finally:
            await exp.shutdown()


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="http"):
        AlertmanagerExporterConfig(endpoint="alertmanager:9093")
    with pytest.raises(ValueError, match="not a valid Alertmanager label name"):
        AlertmanagerExporterConfig(endpoint="http://a:9093", labels={"bad-name": "x"})
    with pytest.raises(ValueError, match="unknown severity"):
        AlertmanagerExporterConfig(
            endpoint="http://a:9093", conditions=[{"name": "x", "match": {"severity_min": "LOUD"}}]
        )
    with pytest.raises(ValueError, match="regular expression"):
        AlertmanagerExporterConfig(
            endpoint="http://a:9093", conditions=[{"name": "x", "match": {"body": "("}}]
        )
    config = AlertmanagerExporterConfig(endpoint="http://a:9093/")
    assert config.url() == "http://a:9093/api/v2/alerts"
    assert config.sending_queue.num_consumers == 1


def test_a_sending_queue_without_num_consumers_keeps_one_consumer() -> None:
    """A resolve must not overtake its alert: ``sending_queue`` written without
    ``num_consumers`` keeps the one consumer (it got the helper's 10)."""
    for queue, expected in (
        ({"batch": {"min_size": 10}}, 1),
        ({"storage": "file_storage"}, 1),
        ({"queue_size": 10, "num_consumers": 3}, 3),
    ):
        config = AlertmanagerExporterConfig(endpoint="http://a:9093", sending_queue=queue)
        assert config.sending_queue.num_consumers == expected


async def test_factory_contract() -> None:
    await check_factory(AlertmanagerExporterFactory())


async def test_health_check_state_changes_alert_through_the_gateway_s_own_logs(
    tmp_path: Path,
) -> None:
    """A real healthcheck receiver watching a local HTTP dependency; the gateway pushes its own
    logs (``service.telemetry.logs``) to its OTLP receiver; the shipped conditions of
    ``configs/anomaly-alerts.yaml`` raise DependencyUnhealthy when the dependency fails and
    resolve it when it recovers."""
    from aiohttp import web

    from tests.support import ROOT, running_service

    shipped = yaml.safe_load((ROOT / "configs" / "anomaly-alerts.yaml").read_text())
    conditions = shipped["exporters"]["alertmanager"]["conditions"]
    state = {"status": 503}

    async def handle(_: web.Request) -> web.Response:
        return web.Response(status=state["status"], text="dependency")

    app = web.Application()
    app.router.add_get("/health", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    dep_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", dep_port).start()
    http_port = free_port()
    async with alertmanager(tmp_path) as (am, webhook):
        config = {
            "receivers": {
                "otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}},
                "healthcheck": {
                    "collection_interval": "200ms",
                    "trace_checks": False,
                    "checks": [
                        {
                            "name": "orders-api",
                            "type": "http",
                            "endpoint": f"http://127.0.0.1:{dep_port}/health",
                            "critical": True,
                        }
                    ],
                },
            },
            "exporters": {
                "alertmanager": {"endpoint": am.url, "conditions": conditions},
                "debug": {"verbosity": "basic"},
            },
            "service": {
                "pipelines": {
                    "metrics": {"receivers": ["healthcheck"], "exporters": ["debug"]},
                    "logs": {"receivers": ["otlp"], "exporters": ["alertmanager"]},
                },
                "telemetry": {
                    "metrics": {"level": "none"},
                    "logs": {
                        "level": "info",
                        "processors": [
                            {
                                "simple": {
                                    "exporter": {
                                        "otlp": {
                                            "protocol": "http/protobuf",
                                            "endpoint": f"http://127.0.0.1:{http_port}",
                                        }
                                    }
                                }
                            }
                        ],
                    },
                },
            },
        }
        # what `pipeline run` does with service.telemetry.logs.level (the info record of the
        # recovery must not be filtered by the test runner's level)
        logger = logging.getLogger(LOGGER_NAME)
        level = logger.level
        logger.setLevel(logging.INFO)
        try:
            async with running_service(json.dumps(config)):
                got = await am.wait_for(
                    lambda a: any(x["labels"]["alertname"] == "DependencyUnhealthy" for x in a)
                )
                alert = next(x for x in got if x["labels"]["alertname"] == "DependencyUnhealthy")
                assert alert["labels"] == {
                    "alertname": "DependencyUnhealthy",
                    "severity": "critical",
                    "team": "platform",
                    "component": "health",
                    "check": "orders-api",
                    "check_type": "http",
                }
                assert alert["annotations"]["summary"] == "Dependency orders-api is unhealthy"
                assert "HTTP status 503" in alert["annotations"]["description"]
                await wait_until_async(lambda: bool(webhook.alerts("firing")))
                assert webhook.alerts("firing")[0][0] == "platform-pager"
                state["status"] = 200  # the dependency recovers
                await am.wait_for(
                    lambda a: not any(x["labels"]["alertname"] == "DependencyUnhealthy" for x in a)
                )
        finally:
            logger.setLevel(level)
            await runner.cleanup()


def test_fuzzed_records_never_stop_the_exporter() -> None:
    """Records with hostile anomaly attributes (any value kind, huge, nested, missing):
    translating never raises, and every alert it makes has valid label names and strings."""
    rng = random.Random(99)
    exp = exporter(
        "http://127.0.0.1:1",
        conditions=[
            {
                "name": "Any",
                "match": {"severity_min": "WARN"},
                "label_attributes": {"who": "component"},
                "annotations": {"summary": "{body} {component} {missing}"},
            }
        ],
    )
    keys = [
        "anomaly.state",
        "anomaly.id",
        "anomaly.type",
        "anomaly.severity",
        "anomaly.labels",
        "anomaly.metric_name",
        "anomaly.suggested_actions",
        "component",
        "service.name",
    ]
    for _ in range(500):
        req = ExportLogsServiceRequest()
        lr = (
            req.resource_logs.add()
            .scope_logs.add()
            .log_records.add(
                severity_number=rng.choice([0, 9, 13, 17, 24, 99])  # type: ignore[arg-type]
            )
        )
        if rng.random() < 0.5:
            lr.body.string_value = rng.choice(["", "x" * 10_000, "\x00\udcff".encode(
                "utf-8", "surrogatepass").decode("utf-8", "replace")])  # fmt: skip
        for key in rng.sample(keys, rng.randint(0, len(keys))):
            v = lr.attributes.add(key=key).value
            kind = rng.choice(["s", "i", "d", "b", "a", "kv", "none"])
            if kind == "s":
                v.string_value = rng.choice(["opened", "closed", "escalated", "", "y" * 9000])
            elif kind == "i":
                v.int_value = rng.randrange(-(2**63), 2**63)
            elif kind == "d":
                v.double_value = rng.choice([math.nan, math.inf, 1.5])
            elif kind == "b":
                v.bool_value = True
            elif kind == "a":
                v.array_value.values.add().kvlist_value.values.add(key="k")
            elif kind == "kv":
                for j in range(rng.choice([0, 3, 200])):
                    item = v.kvlist_value.values.add(key=rng.choice(["a-b", "1x", "", f"k{j}"]))
                    item.value.string_value = "v"
        changed = exp.translate(Logs.from_message(req), 1_800_000_000.0)
        for alert in changed:
            assert len(alert.labels) <= 64 + 8
            for name, value in {**alert.labels, **alert.annotations}.items():
                assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name), name
                assert isinstance(value, str) and len(value) <= 4096
        json.loads(exp._batch(list(exp.active.values()), 1_800_000_000.0, 1).body)


async def test_an_exporter_failure_of_the_gateway_alerts(tmp_path: Path) -> None:
    """An ``otlphttp`` exporter whose backend is down drops a batch; the gateway's own error
    log comes back through its OTLP receiver and the shipped GatewayExportFailing condition
    raises an alert naming the exporter."""
    import aiohttp

    from tests.poison import good_traces
    from tests.support import ROOT, running_service

    shipped = yaml.safe_load((ROOT / "configs" / "anomaly-alerts.yaml").read_text())
    conditions = shipped["exporters"]["alertmanager"]["conditions"]
    http_port = free_port()
    async with alertmanager(tmp_path) as (am, _):
        config = {
            "receivers": {
                "otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}},
            },
            "exporters": {
                "otlphttp/backend": {
                    "endpoint": f"http://127.0.0.1:{free_port()}",
                    "retry_on_failure": {"enabled": False},
                },
                "alertmanager": {"endpoint": am.url, "conditions": conditions},
            },
            "service": {
                "pipelines": {
                    "traces": {"receivers": ["otlp"], "exporters": ["otlphttp/backend"]},
                    "logs": {"receivers": ["otlp"], "exporters": ["alertmanager"]},
                },
                "telemetry": {
                    "metrics": {"level": "none"},
                    "logs": {
                        "processors": [
                            {
                                "simple": {
                                    "exporter": {
                                        "otlp": {
                                            "protocol": "http/protobuf",
                                            "endpoint": f"http://127.0.0.1:{http_port}",
                                        }
                                    }
                                }
                            }
                        ],
                    },
                },
            },
        }
        async with running_service(json.dumps(config)):
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{http_port}/v1/traces",
                    data=good_traces(2),
                    headers={"Content-Type": "application/x-protobuf"},
                ) as resp,
            ):
                assert resp.status == 200
            got = await am.wait_for(
                lambda a: any(x["labels"]["alertname"] == "GatewayExportFailing" for x in a)
            )
            alert = next(x for x in got if x["labels"]["alertname"] == "GatewayExportFailing")
            assert alert["labels"]["exporter"] == "otlphttp/backend"
            assert alert["labels"]["team"] == "platform"
            assert alert["annotations"]["summary"] == (
                "Exporter otlphttp/backend of the gateway is failing"
            )
            assert alert["annotations"]["description"].startswith("export failed")
