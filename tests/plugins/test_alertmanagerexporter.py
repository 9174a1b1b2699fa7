"""The ``alertmanager`` exporter against a real Alertmanager 0.25 (Debian's package) routing
with the shipped ``configs/alerts/alertmanager.yml`` to a local webhook."""

from __future__ import annotations

import asyncio
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
from tests.plugins.helpers.peers import LocalServer, forward
from tests.plugins.test_anomalyconnector import FAST, T0, gauge
from tests.support import CLIENT_TIMEOUT, free_port

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


async def test_records_that_change_no_alert_are_counted_apart_from_the_sent() -> None:
    """A payload whose records change no alert (no condition matches; the alert of one that
    matches already fires) posts nothing: its records are counted as unchanged, not left out
    of every counter."""
    exp = exporter(
        "http://127.0.0.1:1",
        conditions=[{"name": "Boom", "match": {"severity_min": "ERROR", "body": "^boom"}}],
    )
    registry = exp.settings.telemetry.service.registry

    def unchanged() -> float | None:
        return registry.get_sample_value(
            "otelcol_exporter_alertmanager_unchanged_log_records_total",
            {"exporter": "alertmanager"},
        )

    exp.translate(log_record("boom"))  # fires Boom (translate alone: nothing consumed)
    assert unchanged() == 0
    await exp.consume(log_record("quiet", severity=9))  # matches nothing
    await exp.consume(log_record("boom again"))  # Boom already firing: nothing to post
    assert unchanged() == 2
    assert len(exp.active) == 1


async def test_alertmanager_refuses_a_bad_alert_permanently(tmp_path: Path) -> None:
    """Alertmanager answers 400 to an alert it cannot take; nothing is retried."""
    async with alertmanager(tmp_path) as (am, _):
        exp = exporter(am.url)
        await exp.start(StubHost())
        try:
            batch = AlertBatch([b'[{"labels": {}}]'], 1, [1])
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
                aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session,
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


# -- the sending queue: batching and the persistent queue ------------------------------------
def test_alert_batches_merge_split_copy_and_size_by_their_arrays() -> None:
    """What ``sending_queue.batch`` does with translated alerts: before, a merge built an
    empty ``AlertBatch`` (no ``body``: dropped at send) of 0 bytes."""
    from pipeline import Logs

    a = AlertBatch([b'[{"labels": {"alertname": "A"}}]'], 1, [1])
    b = AlertBatch([b'[{"labels": {"alertname": "B"}}, {"labels": {"alertname": "C"}}]'], 3, [3])
    c = AlertBatch([b"[]"], 1, [1])
    a.carry_acks(["tok-a"])
    b.carry_acks(["tok-b"])
    merged = AlertBatch.merge([a, b, c])
    assert isinstance(merged, AlertBatch)
    assert merged.chunks == [*a.chunks, *b.chunks, *c.chunks] and merged.counts == [1, 3, 1]
    assert merged.item_count() == 5 and merged.nbytes == a.nbytes + b.nbytes + 2
    assert merged.ack_tokens == ("tok-a", "tok-b")
    # posted as one JSON array: every alert, in order
    assert [x["labels"]["alertname"] for x in json.loads(merged.body)] == ["A", "B", "C"]
    assert a.body is a.chunks[0]
    assert [p.item_count() for p in merged.split(2)] == [1, 3, 1]  # never inside an array
    assert [p.item_count() for p in merged.split(4)] == [4, 1]
    dup = merged.copy()
    assert isinstance(dup, AlertBatch) and dup.body == merged.body and dup.item_count() == 5
    with pytest.raises(TypeError, match="no OTLP encoding"):
        merged.message()
    with pytest.raises(TypeError, match="cannot merge"):
        AlertBatch.merge([a, Logs(b"")])


async def test_a_damaged_queued_batch_is_refused_permanently() -> None:
    from pipeline import PermanentError

    exp = exporter("http://127.0.0.1:1")
    damaged = AlertBatch.merge([AlertBatch([b"[{}]"], 1, [1]), AlertBatch([b"{}"], 1, [1])])
    try:
        with pytest.raises(PermanentError, match="not a JSON array of alerts"):
            await exp._send(damaged)
    finally:
        await exp.shutdown()


def test_alert_batches_round_trip_through_the_persistent_queue_codec() -> None:
    import struct

    from pipeline import Signal
    from plugins.alertmanagerexporter.exporter import AlertBatchCodec

    codec = AlertBatchCodec(Signal.LOGS)
    merged = AlertBatch.merge(
        [AlertBatch([b'[{"a": 1}]'], 2, [2]), AlertBatch([b'[{"b": 2}]', b"[]"], 3, [1, 2])]
    )
    body = b"".join(codec.encode(merged))
    back = codec.decode(body)
    assert isinstance(back, AlertBatch)
    assert back.chunks == [b'[{"a": 1}]', b'[{"b": 2}]', b"[]"] and back.counts == [2, 1, 2]
    assert back.item_count() == 5 and codec.count(body) == 5
    assert json.loads(back.body) == [{"a": 1}, {"b": 2}]
    # a record of the previous layout (item count, one JSON array) is still read
    old = codec.decode(struct.pack("<I", 4) + b'[{"c": 3}]')
    assert isinstance(old, AlertBatch)
    assert (old.chunks, old.counts, old.item_count()) == ([b'[{"c": 3}]'], [4], 4)
    for cut in range(4):
        with pytest.raises(ValueError):
            codec.decode(body[:cut])


class AlertProxy(LocalServer):
    """Forwards alert posts to Alertmanager and keeps each post's alerts."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.posts: list[list[dict[str, Any]]] = []

    def routes(self) -> list[Any]:
        from aiohttp import web

        return [web.post("/api/v2/alerts", self._handle)]

    async def _handle(self, request: Any) -> Any:
        body = await request.read()
        self.posts.append(json.loads(body))
        return await forward(self.target + request.path, request, body)

    def alerts(self) -> list[tuple[str, bool]]:
        """(probe, resolved) of every alert posted, in order (a firing alert is valid for
        four resend intervals, a resolved one ended when it resolved)."""
        from datetime import datetime, timedelta

        out = []
        for post in self.posts:
            for a in post:
                starts, ends = (datetime.fromisoformat(a[k]) for k in ("startsAt", "endsAt"))
                out.append((a["labels"]["probe"], ends - starts < timedelta(minutes=30)))
        return out


PROBES = [3, 1, 5, 2, 4, 3, 6, 1, 2, 3]  # alerts fired by each request; from the sixth on,
RESOLVES = 5  # each request also resolves the first alert of the request five before it


def _probe_records(index: int) -> bytes:
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    for j in range(PROBES[index]):
        lr = records.add(severity_number=17)
        lr.body.string_value = "fire"
        lr.attributes.add(key="probe.id").value.string_value = f"{index}-{j}"
    if index >= RESOLVES:
        lr = records.add(severity_number=9)
        lr.body.string_value = "resolve"
        lr.attributes.add(key="probe.id").value.string_value = f"{index - RESOLVES}-0"
    return req.SerializeToString()


def _alert_config(http_port: int, endpoint: str, queue: str, tmp_path: Path) -> str:
    return f"""
extensions:
  file_storage: {{directory: "{tmp_path}"}}
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http_port}"}}}}}}
exporters:
  alertmanager:
    endpoint: "{endpoint}"
    resend_interval: 1h
    sending_queue: {queue}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 0s}}
    conditions:
      - name: Probe
        match: {{body: "^fire$"}}
        resolve: {{body: "^resolve$"}}
        resolve_after: 0s
        label_attributes: {{probe: probe.id}}
        annotations: {{summary: "{{body}}"}}
service:
  shutdown_timeout: 1s
  extensions: [file_storage]
  pipelines:
    logs: {{receivers: [otlp], exporters: [alertmanager]}}
  telemetry:
    metrics: {{level: none}}
"""


async def _post_probes(http_port: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        for i in range(len(PROBES)):
            async with session.post(
                f"http://127.0.0.1:{http_port}/v1/logs",
                data=_probe_records(i),
                headers={"Content-Type": "application/x-protobuf"},
            ) as resp:
                assert resp.status == 200, await resp.text()


async def _check_probes(am: Any, proxy: AlertProxy, telemetry: Any, recovered: bool) -> None:
    """Alertmanager holds every fired alert not resolved; every fire and resolve was posted
    once, each resolve after its fire; every record counts as sent."""
    fired = [f"{i}-{j}" for i, n in enumerate(PROBES) for j in range(n)]
    resolved = [f"{i}-0" for i in range(len(PROBES) - RESOLVES)]
    active = sorted(set(fired) - set(resolved))
    await am.wait_for(lambda a: sorted(x["labels"]["probe"] for x in a) == active)
    await asyncio.sleep(0.3)  # anything posted twice arrives too
    posted = proxy.alerts()
    assert sorted(p for p, r in posted if not r) == sorted(fired), posted
    assert sorted(p for p, r in posted if r) == sorted(resolved), posted
    for probe in resolved:
        assert posted.index((probe, False)) < posted.index((probe, True))
    records = len(fired) + len(resolved)
    name = "otelcol_exporter_{}_log_records_total"
    assert telemetry.value(name.format("sent"), exporter="alertmanager") == records
    assert not telemetry.value(name.format("send_failed"), exporter="alertmanager")
    assert not telemetry.value(name.format("enqueue_failed"), exporter="alertmanager")
    if recovered:
        assert telemetry.value(name.format("queue_recovered"), exporter="alertmanager") == records


@pytest.mark.parametrize(
    ("queue", "most_posts"),
    [
        ("{batch: {flush_timeout: 1s, min_size: 1000}}", 3),
        ("{batch: {flush_timeout: 1s, min_size: 5, max_size: 7}}", 9),
        (
            "{sizer: bytes, queue_size: 1000000, batch: {flush_timeout: 1s, min_size: 1500, "
            "max_size: 1500, sizer: bytes}}",
            9,
        ),
    ],
    ids=["batch", "batch-max-items", "batch-bytes"],
)
async def test_every_alert_arrives_through_a_batching_sending_queue(
    tmp_path: Path, queue: str, most_posts: int
) -> None:
    """OTLP logs -> alertmanager exporter with ``sending_queue.batch`` -> a real
    Alertmanager: the alert arrays a batch gathers are posted as one array (fewer posts than
    requests), split at ``max_size`` between arrays; every alert fires, every resolve
    resolves after its alert, each posted once, every record counted as sent. Before, a batch
    had no body: every alert was dropped."""
    from tests.support import running_service

    http_port = free_port()
    async with alertmanager(tmp_path) as (am, _), AlertProxy(am.url) as proxy:
        config = _alert_config(http_port, f"http://127.0.0.1:{proxy.port}", queue, tmp_path)
        async with running_service(config) as service:
            await _post_probes(http_port)
            await _check_probes(am, proxy, service.telemetry, recovered=False)
        assert 1 <= len(proxy.posts) <= most_posts, [len(p) for p in proxy.posts]
        if "max_size: 7" in queue:  # no post over max_size (no request has more than 7)
            assert all(len(post) <= 7 for post in proxy.posts)


async def test_alerts_wait_in_the_persistent_queue_through_a_restart(tmp_path: Path) -> None:
    """Alertmanager unreachable: the translated alerts wait in the file_storage queue through
    a shutdown; on the next start every alert and resolve arrives once, in order, and the
    records count as recovered and sent."""
    from tests.support import running_service, wait_until

    http_port = free_port()
    async with alertmanager(tmp_path) as (am, _):
        proxy = AlertProxy(am.url)  # not listening yet
        endpoint = f"http://127.0.0.1:{proxy.port}"
        config = _alert_config(http_port, endpoint, "{storage: file_storage}", tmp_path)
        async with running_service(config) as service:
            await _post_probes(http_port)
            await wait_until(
                lambda: (
                    service.telemetry.value(
                        "otelcol_exporter_retried_log_records_total", exporter="alertmanager"
                    )
                    > 0
                )
            )
        assert not await am.alerts()
        async with proxy, running_service(config) as service:
            await _check_probes(am, proxy, service.telemetry, recovered=True)


class HoldingAlertProxy(AlertProxy):
    """An :class:`AlertProxy` that holds every post until ``release`` is set."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.release = asyncio.Event()
        self.arrived = 0

    async def _handle(self, request: Any) -> Any:
        self.arrived += 1
        await self.release.wait()
        return await super()._handle(request)


FULL_QUEUES = {
    # a batch in flight (held), one queued: the queue is full in its own units
    "requests": {"queue_size": 1},
    "items": {"sizer": "items", "queue_size": 2},
    "bytes": {"sizer": "bytes", "queue_size": 50},
    # the batcher holds the first payload (flushed on its timeout): already full
    "batch": {"queue_size": 1, "batch": {"flush_timeout": "300ms"}},
    "batch-items": {
        "sizer": "items",
        "queue_size": 2,
        "batch": {"flush_timeout": "300ms", "min_size": 100},
    },
}


def two_records(probe: str) -> Payload:
    """A record that fires the alert of ``probe`` and one that matches nothing."""
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    lr = records.add(severity_number=17)
    lr.body.string_value = "fire"
    lr.attributes.add(key="probe.id").value.string_value = probe
    records.add(severity_number=9).body.string_value = "noise"
    return Logs.from_message(req)


@pytest.mark.parametrize("queue", list(FULL_QUEUES))
async def test_a_full_queue_refuses_before_the_alert_table_changes(
    tmp_path: Path, queue: str
) -> None:
    """A record refused by a full sending queue (RetryableError) and sent again once the
    queue drained fires its alert in a real Alertmanager, whatever the queue's sizer and with
    ``sending_queue.batch`` holding payloads; the refusal is counted once and logged, and a
    resend meanwhile is skipped without resolving anything. Before, only a queue full in
    requests refused before the table changed: with items, bytes or a batch the helper refused
    after the alert was in the table, and the record sent again found it already firing and
    posted nothing (the alert never reached Alertmanager)."""
    from pipeline import RetryableError
    from tests.support import logged, wait_until

    batching = "batch" in FULL_QUEUES[queue]
    async with (
        alertmanager(tmp_path) as (am, _),
        HoldingAlertProxy(am.url) as proxy,
    ):
        if batching:
            proxy.release.set()
        exp = exporter(
            f"http://127.0.0.1:{proxy.port}",
            resend_interval="1h",
            sending_queue={**FULL_QUEUES[queue], "num_consumers": 1},
            conditions=[
                {
                    "name": "Probe",
                    "match": {"body": "^fire$"},
                    "resolve_after": "1h",
                    "label_attributes": {"probe": "probe.id"},
                }
            ],
        )
        helper = exp.helper
        tel = exp.settings.telemetry.service

        def refused() -> float:
            return tel.value(
                "otelcol_exporter_enqueue_failed_log_records_total", exporter="alertmanager"
            )

        async def drained() -> None:
            await wait_until(
                lambda: (
                    helper.queue_size == 0
                    and helper._in_flight == 0
                    and (helper._batcher is None or not helper._batcher.pending)
                )
            )

        await exp.start(StubHost())
        try:
            records = [two_records(p) for p in "abc"]
            await exp.consume(records[0])
            if batching:  # held by the batcher until its timeout
                last = records[1]
            else:
                await wait_until(lambda: proxy.arrived == 1)  # in flight, held
                await exp.consume(records[1])  # queued
                last = records[2]
            active = dict(exp.active)
            with logged() as lines, pytest.raises(RetryableError, match=r"queue .* full"):
                await exp.consume(last)
            assert exp.active == active
            assert refused() == 2  # the payload's records, once
            # a resend while the queue is full resolves nothing (it would post nothing)
            assert await exp.resend(time.time() + 7200) == 0
            assert exp.active == active
            proxy.release.set()
            await drained()
            await exp.consume(last)  # the sender's retry
            if batching:
                await drained()
                await exp.consume(records[2])
            got = await am.wait_for(lambda a: len(a) == 3)
            assert sorted(a["labels"]["probe"] for a in got) == ["a", "b", "c"]
            fired = [p for p, resolved in proxy.alerts() if not resolved]
            assert sorted(fired) == ["a", "b", "c"]  # each posted once
            assert refused() == 2
            assert [r.levelname for r in lines if "full" in r.getMessage()] == ["WARNING"]
        finally:
            proxy.release.set()
            await exp.shutdown()


async def test_a_changed_table_is_never_handed_back_as_retryable(tmp_path: Path) -> None:
    """Without a sending queue or retries, an Alertmanager that cannot be reached fails the
    records permanently (counted once): the alert is in the table already, so the upstream
    must not send them again (the alert would be found firing and post nothing); the next
    resend posts it. Before, the connection error went back as retryable."""
    from pipeline import PermanentError

    port = free_port()
    config = AlertmanagerExporterConfig.model_validate(
        {
            "endpoint": f"http://127.0.0.1:{port}",
            "resend_interval": "1h",
            "sending_queue": {"enabled": False},
            "retry_on_failure": {"enabled": False},
            "conditions": [
                {
                    "name": "Probe",
                    "match": {"body": "^fire$"},
                    "label_attributes": {"probe": "probe.id"},
                }
            ],
        }
    )
    exp = AlertmanagerExporter(create_settings(Kind.EXPORTER, "alertmanager"), config)
    await exp.start(StubHost())
    try:
        with pytest.raises(PermanentError, match="alert table already changed"):
            await exp.consume(two_records("a"))
        tel = exp.settings.telemetry.service
        failed = "otelcol_exporter_send_failed_log_records_total"
        assert tel.value(failed, exporter="alertmanager") == 2
        assert list(exp.active)
        async with alertmanager(tmp_path, port=port) as (am, _):
            assert await exp.resend() == 1
            got = await am.wait_for(lambda a: len(a) == 1)
            assert got[0]["labels"]["probe"] == "a"
    finally:
        await exp.shutdown()
