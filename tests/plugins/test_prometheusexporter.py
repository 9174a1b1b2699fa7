"""The ``prometheus`` exporter, scraped by a real Prometheus, fed by the OpenTelemetry SDK."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from pipeline import ConfigErrors
from pipeline.telemetry import SelfTelemetry
from plugins.prometheusexporter.accumulator import Accumulator
from plugins.prometheusexporter.exporter import wants_openmetrics
from tests.plugins.prometheus_server import prometheus, run, value
from tests.support import config_from_text, free_port, require_program, running_service
from tests.tls_support import make_pki

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def gateway_config(otlp_port: int, prom_port: int, extra: str = "") -> str:
    return f"""
    receivers:
      otlp:
        protocols:
          grpc:
            endpoint: 127.0.0.1:{otlp_port}
    exporters:
      prometheus:
        endpoint: 127.0.0.1:{prom_port}
        enable_open_metrics: true
        {extra}
    service:
      pipelines:
        metrics:
          receivers: [otlp]
          exporters: [prometheus]
      telemetry:
        metrics:
          level: none
    """


def sdk_provider(otlp_port: int) -> MeterProvider:
    exporter = OTLPMetricExporter(
        endpoint=f"127.0.0.1:{otlp_port}",
        insecure=True,
        preferred_temporality={
            Counter: AggregationTemporality.DELTA,
            Histogram: AggregationTemporality.DELTA,
        },
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create(
        {
            "service.name": "planner",
            "service.namespace": "agents",
            "service.instance.id": "planner-1",
            "deployment.environment": "test",
        }
    )
    return MeterProvider(resource=resource, metric_readers=[reader])


async def scrape(port: int, accept: str = "") -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as resp,
    ):
        assert resp.status == 200
        return await resp.text(), resp.headers["Content-Type"]


async def test_prometheus_scrapes_what_the_sdk_sent(tmp_path: Path) -> None:
    otlp_port, prom_port = free_port(), free_port()
    scrape_configs = [
        {
            "job_name": "gateway",
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}],
        }
    ]
    async with (
        running_service(gateway_config(otlp_port, prom_port), tmp_path),
        prometheus(tmp_path, scrape_configs) as prom,
    ):
        provider = sdk_provider(otlp_port)
        meter = provider.get_meter("agent.sdk", "1.2.3")
        runs = meter.create_counter("agent.workflow.executions", unit="{execution}")
        rss = meter.create_gauge("process.memory.rss", unit="By")
        duration = meter.create_histogram("mcp.tool.call.duration", unit="s")
        runs.add(5, {"workflow.type": "search", "outcome": "success"})
        runs.add(1, {"workflow.type": "search", "outcome": "failed"})
        rss.set(123456789)
        for v in (0.3, 2.0, 7.0):
            duration.record(v, {"tool": "fetch"})
        assert await asyncio.to_thread(provider.force_flush)
        # A second delta export: the exporter must add it to what it holds.
        runs.add(3, {"workflow.type": "search", "outcome": "success"})
        duration.record(12.0, {"tool": "fetch"})
        assert await asyncio.to_thread(provider.force_flush)
        await asyncio.to_thread(provider.shutdown)

        ok = 'agent_workflow_executions_total{outcome="success",workflow_type="search"}'
        result = await prom.wait_for(ok, lambda r: len(r) == 1 and r[0]["value"][1] == "8")
        labels = result[0]["metric"]
        assert labels["job"] == "agents/planner"
        assert labels["instance"] == "planner-1"
        assert labels["otel_scope_name"] == "agent.sdk"
        assert labels["otel_scope_version"] == "1.2.3"
        failed = await prom.query('agent_workflow_executions_total{outcome="failed"}')
        assert value(failed) == 1
        assert value(await prom.query("process_memory_rss_bytes")) == 123456789
        count = await prom.query('mcp_tool_call_duration_seconds_count{tool="fetch"}')
        assert value(count) == 4
        total = await prom.query('mcp_tool_call_duration_seconds_sum{tool="fetch"}')
        assert value(total) == pytest.approx(21.3)
        le5 = await prom.query('mcp_tool_call_duration_seconds_bucket{tool="fetch",le="5.0"}')
        assert value(le5) == 2  # 0.3 and 2.0 (the SDK's default bounds include 5)
        le10 = await prom.query('mcp_tool_call_duration_seconds_bucket{tool="fetch",le="10.0"}')
        assert value(le10) == 3
        inf = await prom.query('mcp_tool_call_duration_seconds_bucket{tool="fetch",le="+Inf"}')
        assert value(inf) == 4
        info = await prom.query('target_info{job="agents/planner"}')
        assert value(info) == 1
        assert info[0]["metric"]["deployment_environment"] == "test"
        assert info[0]["metric"]["instance"] == "planner-1"
        assert "service_name" not in info[0]["metric"]
        # Prometheus negotiated OpenMetrics and parsed it without error.
        targets = await prom.get_json("/api/v1/targets")
        (target,) = targets["data"]["activeTargets"]
        assert target["health"] == "up" and target["lastError"] == "", target
        # The metadata API shows the types Prometheus understood.
        meta = await prom.get_json("/api/v1/metadata")
        assert meta["data"]["agent_workflow_executions"][0]["type"] == "counter"
        assert meta["data"]["mcp_tool_call_duration_seconds"][0]["type"] == "histogram"
        assert meta["data"]["process_memory_rss_bytes"][0]["type"] == "gauge"


async def test_promtool_check_metrics_passes_in_both_formats(tmp_path: Path) -> None:
    promtool = require_program("promtool", "apt-get install prometheus")
    otlp_port, prom_port = free_port(), free_port()
    async with running_service(gateway_config(otlp_port, prom_port), tmp_path):
        provider = sdk_provider(otlp_port)
        meter = provider.get_meter("agent.sdk")
        meter.create_counter("agent.workflow.executions", description="Runs.").add(
            2, {"outcome": "success"}
        )
        meter.create_gauge("agent.workflow.failure_ratio", unit="1", description="Failed.").set(
            0.25
        )
        meter.create_up_down_counter("agent.active.workflows", description="Active.").add(3)
        meter.create_histogram("agent.workflow.duration", unit="s", description="Time.").record(1.5)
        assert await asyncio.to_thread(provider.force_flush)
        await asyncio.to_thread(provider.shutdown)

        text, ctype = await scrape(prom_port)
        assert ctype.startswith("text/plain; version=0.0.4")
        om, om_type = await scrape(prom_port, PROMETHEUS_ACCEPT)
        assert om_type.startswith("application/openmetrics-text; version=1.0.0")
        assert om.endswith("# EOF\n")
        for body in (text, om):
            assert "agent_workflow_executions_total" in body
            assert re.search(r"^agent_workflow_failure_ratio\{[^}]*\} 0\.25$", body, re.M)
            assert "agent_workflow_duration_seconds_bucket" in body
            proc = await asyncio.to_thread(run, [promtool, "check", "metrics"], body.encode())
            if body is text:
                assert proc.returncode == 0, (body, proc.stdout, proc.stderr)
            else:
                # promtool 2.42 lints with the 0.0.4 text parser only: in OpenMetrics a
                # counter's HELP names the family ("x") and its sample is "x_total", which that
                # parser reads as a counter sample without HELP. Anything else must be clean.
                problems = proc.stderr.decode().splitlines()
                assert proc.returncode in (0, 3), (body, proc.stderr)
                assert problems == ["agent_workflow_executions_total no help text"], problems
                assert "# HELP agent_workflow_executions Runs." in body
        # Each format parses with the reference parser of prometheus_client.
        names = {f.name for f in parse_text(text)}
        assert {"agent_workflow_executions", "agent_workflow_failure_ratio"} <= names
        om_families = {f.name: f for f in parse_om(om)}
        assert om_families["agent_workflow_executions"].type == "counter"
        assert om_families["agent_workflow_duration_seconds"].unit == "seconds"
        assert om_families["agent_active_workflows"].type == "gauge"


def _request_with_exemplar() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "svc"
    m = rm.scope_metrics.add().metrics.add(name="latency", unit="ms")
    m.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    dp = m.histogram.data_points.add(
        start_time_unix_nano=1, time_unix_nano=2_000_000_000, count=3, sum=60.0
    )
    dp.explicit_bounds.extend([10.0, 100.0])
    dp.bucket_counts.extend([1, 2, 0])
    ex = dp.exemplars.add(as_double=42.0, time_unix_nano=1_500_000_000)
    ex.trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    ex.span_id = bytes.fromhex("b7ad6b7169203331")
    return req


async def test_openmetrics_carries_exemplars_and_text_does_not(tmp_path: Path) -> None:
    import grpc
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
        MetricsServiceStub,
    )

    otlp_port, prom_port = free_port(), free_port()
    async with running_service(gateway_config(otlp_port, prom_port), tmp_path):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{otlp_port}") as channel:
            await MetricsServiceStub(channel).Export(_request_with_exemplar())
        om, _ = await scrape(prom_port, PROMETHEUS_ACCEPT)
        text, _ = await scrape(prom_port)
    line = next(
        x
        for x in om.splitlines()
        if x.startswith('latency_milliseconds_bucket{job="svc",le="100.0"}')
    )
    assert line.endswith(
        ' 3.0 # {span_id="b7ad6b7169203331",trace_id="0af7651916cd43dd8448eb211c80319c"} 42.0 1.5'
    ), line
    assert "# {" not in text
    assert 'latency_milliseconds_bucket{job="svc",le="10.0"} 1.0' in text


async def test_delta_out_of_order_and_expiry_are_handled() -> None:
    now = [1000.0]
    drops: list[tuple[int, str]] = []
    acc = Accumulator(
        metric_expiration=60, clock=lambda: now[0], on_drop=lambda n, r: drops.append((n, r))
    )

    def delta(v: int, t: int) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="hits")
        m.sum.is_monotonic = True
        m.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
        m.sum.data_points.add(as_int=v, start_time_unix_nano=t - 1, time_unix_nano=t)
        return req

    assert acc.add(delta(2, 10)) == 1
    assert acc.add(delta(5, 20)) == 1
    assert acc.add(delta(7, 15)) == 0  # older than what is held
    assert drops and drops[-1][0] == 1 and "out-of-order" in drops[-1][1]
    samples = [s for f in acc.collect() for s in f.samples]
    assert [(s.name, s.value) for s in samples] == [("hits_total", 7.0)]
    now[0] += 61
    assert list(acc.collect()) == []


async def test_exponential_histograms_are_dropped_and_counted(tmp_path: Path) -> None:
    telemetry = SelfTelemetry()
    acc_drops: list[tuple[int, str]] = []
    acc = Accumulator(on_drop=lambda n, r: acc_drops.append((n, r)))
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="sizes")
    m.exponential_histogram.data_points.add(count=1, sum=1.0)
    m.exponential_histogram.data_points.add(count=2, sum=3.0)
    assert acc.add(req) == 0
    assert acc_drops == [
        (2, "exponential histogram 'sizes': not representable in the text formats")
    ]
    assert telemetry is not None


def test_accept_header_negotiation() -> None:
    assert wants_openmetrics(PROMETHEUS_ACCEPT)
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert not wants_openmetrics("application/openmetrics-text;q=0")
    assert not wants_openmetrics("")


async def test_text_only_when_open_metrics_is_disabled(tmp_path: Path) -> None:
    otlp_port, prom_port = free_port(), free_port()
    config = gateway_config(otlp_port, prom_port).replace(
        "enable_open_metrics: true", "enable_open_metrics: false"
    )
    async with running_service(config, tmp_path):
        _, ctype = await scrape(prom_port, PROMETHEUS_ACCEPT)
    assert ctype.startswith("text/plain; version=0.0.4")


async def test_options_namespace_const_labels_resource_timestamps_suffixes(
    tmp_path: Path,
) -> None:
    otlp_port, prom_port = free_port(), free_port()
    extra = """namespace: gw
        const_labels: {region: eu}
        send_timestamps: true
        add_metric_suffixes: false
        resource_to_telemetry_conversion: {enabled: true}"""
    async with running_service(gateway_config(otlp_port, prom_port, extra), tmp_path):
        provider = sdk_provider(otlp_port)
        meter = provider.get_meter("m")
        meter.create_counter("tool.calls", unit="{call}").add(4, {"tool": "fetch"})
        meter.create_histogram("tool.latency", unit="s").record(0.2)
        assert await asyncio.to_thread(provider.force_flush)
        await asyncio.to_thread(provider.shutdown)
        text, _ = await scrape(prom_port)
    families = {f.name: f for f in parse_text(text)}
    calls = families["gw_tool_calls"]
    assert calls.type == "unknown"  # a counter without "_total" cannot be typed counter
    (sample,) = calls.samples
    assert sample.value == 4
    assert sample.labels["region"] == "eu"
    assert sample.labels["deployment_environment"] == "test"  # a resource attribute
    assert sample.labels["service_name"] == "planner"
    assert sample.labels["job"] == "agents/planner"
    assert sample.timestamp is not None and abs(sample.timestamp - time.time()) < 60
    assert "gw_tool_latency" in families  # no "_seconds" without suffixes
    assert families["gw_tool_latency"].type == "histogram"


def test_config_validation(tmp_path: Path) -> None:
    base = """
    receivers:
      otlp:
        protocols:
          grpc:
    exporters:
      prometheus:
        {opt}
    service:
      pipelines:
        metrics:
          receivers: [otlp]
          exporters: [prometheus]
    """
    with pytest.raises(ConfigErrors, match="not a valid Prometheus label name"):
        config_from_text(base.format(opt="const_labels: {'bad-name': x}"), tmp_path)
    with pytest.raises(ConfigErrors, match="metric_expiration"):
        config_from_text(base.format(opt="metric_expiration: 0s"), tmp_path)
    with pytest.raises(ConfigErrors, match="endpoint"):
        config_from_text(base.format(opt="endpoint: nowhere"), tmp_path)
    cfg = config_from_text(base.format(opt="namespace: x"), tmp_path)
    assert cfg is not None


def test_series_expire_without_scrapes() -> None:
    now = [0.0]
    acc = Accumulator(metric_expiration=30, clock=lambda: now[0])

    def gauge(name: str) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        m = req.resource_metrics.add().scope_metrics.add().metrics.add(name=name)
        m.gauge.data_points.add(as_double=1.0, time_unix_nano=int(now[0] * 1e9) + 1)
        return req

    acc.add(gauge("old"))
    now[0] = 40.0
    acc.add(gauge("new"))
    assert set(acc.families) == {"new"}


async def test_prometheus_scrapes_over_mutual_tls(tmp_path: Path) -> None:
    """``tls`` on the exporter and on the gateway's own metrics, with ``client_ca_file``:
    Prometheus scrapes both over HTTPS with its client certificate (targets up); the same
    targets scraped without one, or over plain HTTP, are down."""
    pki = make_pki(tmp_path / "pki")
    prom_port, own_port = free_port(), free_port()
    tls = (
        f"tls: {{cert_file: '{pki.server_cert}', key_file: '{pki.server_key}', "
        f"client_ca_file: '{pki.ca}'}}"
    )
    config = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
exporters:
  prometheus: {{endpoint: "127.0.0.1:{prom_port}", {tls}}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{own_port}", {tls}}}}}
  pipelines:
    metrics: {{receivers: [otlp], exporters: [prometheus]}}
"""
    targets = [f"localhost:{prom_port}", f"localhost:{own_port}"]
    with_cert = {
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
    }
    scrape_configs = [
        {"job_name": "mtls", "scheme": "https", "tls_config": with_cert,
         "static_configs": [{"targets": targets}]},
        {"job_name": "no-client-cert", "scheme": "https", "tls_config": {"ca_file": str(pki.ca)},
         "static_configs": [{"targets": targets}]},
        {"job_name": "plain", "static_configs": [{"targets": targets}]},
    ]  # fmt: skip
    async with (
        running_service(config, tmp_path),
        prometheus(tmp_path, scrape_configs) as prom,
    ):
        await prom.wait_for(
            'up{job="mtls"}', lambda r: len(r) == 2 and all(x["value"][1] == "1" for x in r)
        )
        # the gateway's own metrics arrived over TLS
        await prom.wait_for('otelcol_process_memory_rss_bytes{job="mtls"}')
        await prom.wait_for(
            'up{job=~"no-client-cert|plain"}',
            lambda r: len(r) == 4 and all(x["value"][1] == "0" for x in r),
        )
