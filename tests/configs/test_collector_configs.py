"""Collector configs run unchanged: three a platform team writes (tag environment and cluster,
drop health checks, cut cardinality before spanmetrics) and the OpenTelemetry demo's collector
config (its components we do not have removed). Telemetry comes from the OpenTelemetry SDK
over OTLP; what leaves goes to a recording OTLP backend."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from pipeline import Signal
from tests.otlp_support import recording_backend
from tests.plugins.ottl.support import plain
from tests.support import running_service, wait_until

CONFIGS = Path(__file__).parent / "collector"


def _send_spans(port: int, service: str, spans: list[dict[str, Any]],
                resource: dict[str, Any] | None = None) -> None:  # fmt: skip
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, **(resource or {})})
    )
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
    )
    tracer = provider.get_tracer("collector-configs")
    for spec in spans:
        with tracer.start_as_current_span(
            spec["name"], kind=spec.get("kind", SpanKind.SERVER), attributes=spec.get("attributes")
        ):
            pass
    provider.shutdown()


def _send_logs(port: int, service: str, records: list[tuple[int, str]]) -> None:
    from opentelemetry._logs import SeverityNumber

    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
    )
    logger = provider.get_logger("collector-configs")
    for severity, body in records:
        logger.emit(severity_number=SeverityNumber(severity), body=body)
    provider.shutdown()


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_tag_environment_and_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    grpc_port = _free()
    async with recording_backend() as backend:
        for name, value in {
            "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
            "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{_free()}",
            "DEPLOYMENT_ENVIRONMENT": "production",
            "CLUSTER_NAME": "eu-west-1",
            "BACKEND_ENDPOINT": f"127.0.0.1:{backend.grpc_port}",
            "OTEL_RESOURCE_ATTRIBUTES": "cloud.region=eu-west-1",
        }.items():
            monkeypatch.setenv(name, value)
        async with running_service((CONFIGS / "tag-environment.yaml").read_text()):
            await asyncio.to_thread(_send_spans, grpc_port, "checkout-api", [{"name": "pay"}])
            await asyncio.to_thread(_send_spans, grpc_port, "catalog", [{"name": "list"}],
                                    {"cluster": "from-sdk"})  # fmt: skip
            await asyncio.to_thread(_send_logs, grpc_port, "catalog", [(9, "listed")])
            await wait_until(lambda: len(backend.spans) == 2 and bool(backend.logs))
        spans = {s["name"]: s for s in plain(Signal.TRACES, backend.traces)}
        for span in spans.values():
            assert span["resource"]["deployment.environment.name"] == "production"
            assert span["resource"]["cloud.region"] == "eu-west-1"
            assert span["resource"]["host.name"] == socket.gethostname()
        assert spans["pay"]["resource"]["k8s.cluster.name"] == "eu-west-1"
        assert spans["list"]["resource"]["k8s.cluster.name"] == "from-sdk"
        assert "cluster" not in spans["list"]["resource"]
        assert spans["pay"]["attributes"]["team"] == "payments"
        assert "team" not in spans["list"]["attributes"]
        (record,) = plain(Signal.LOGS, backend.logs)
        assert record["resource"]["deployment.environment.name"] == "production"


async def test_drop_health_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    grpc_port = _free()
    async with recording_backend() as backend:
        monkeypatch.setenv("OTLP_GRPC_ENDPOINT", f"127.0.0.1:{grpc_port}")
        monkeypatch.setenv("BACKEND_ENDPOINT", f"127.0.0.1:{backend.grpc_port}")
        spans = [
            {"name": "GET /healthz", "attributes": {"http.route": "/healthz"}},
            {"name": "GET /readyz"},
            {"name": "GET", "attributes": {"url.path": "/health"}},
            {"name": "GET /", "attributes": {"user_agent.original": "kube-probe/1.29"}},
            {"name": "GET /orders", "attributes": {"http.route": "/orders"}},
            {"name": "charge", "kind": SpanKind.CLIENT},
        ]
        async with running_service((CONFIGS / "drop-health-checks.yaml").read_text()) as service:
            await asyncio.to_thread(_send_spans, grpc_port, "shop", spans)
            records = [(5, "debug"), (9, "info"), (0, "unspecified")]
            await asyncio.to_thread(_send_logs, grpc_port, "shop", records)
            await wait_until(
                lambda: len(backend.spans) == 2 and len(plain(Signal.LOGS, backend.logs)) == 2
            )
            await asyncio.sleep(0.3)
            dropped = service.telemetry.value(
                "otelcol_processor_filter_spans_filtered_total", processor="filter/health-checks"
            )
        assert sorted(s["name"] for s in plain(Signal.TRACES, backend.traces)) == [
            "GET /orders", "charge"
        ]  # fmt: skip
        assert dropped == 4
        assert [r["body"] for r in plain(Signal.LOGS, backend.logs)] == ["info", "unspecified"]


async def test_cut_cardinality_before_spanmetrics(monkeypatch: pytest.MonkeyPatch) -> None:
    grpc_port = _free()
    async with recording_backend() as backend:
        monkeypatch.setenv("OTLP_GRPC_ENDPOINT", f"127.0.0.1:{grpc_port}")
        monkeypatch.setenv("BACKEND_ENDPOINT", f"127.0.0.1:{backend.grpc_port}")
        spans = [
            {"name": f"GET /users/{i}/orders",
             "attributes": {"http.request.method": "GET", "url.path": f"/users/{i}/orders",
                            "user.id": f"u-{i}", "request.id": f"r-{i}"}}
            for i in range(20)
        ]  # fmt: skip
        async with running_service((CONFIGS / "cut-cardinality.yaml").read_text()):
            await asyncio.to_thread(_send_spans, grpc_port, "shop", spans)
            await wait_until(lambda: len(backend.spans) == 20 and bool(backend.metrics))
            await asyncio.sleep(0.5)  # a flush after the last span
        names = {s["name"] for s in plain(Signal.TRACES, backend.traces)}
        assert names == {"GET /users/{id}/orders"}
        attrs = plain(Signal.TRACES, backend.traces)[0]["attributes"]
        assert "user.id" not in attrs and "request.id" not in attrs
        assert attrs["http.route"] == "/users/{id}/orders"
        series = set()
        for m in plain(Signal.METRICS, backend.metrics):
            if m["name"] == "traces.span.metrics.calls":
                for point in m["points"]:
                    series.add(tuple(sorted(point.items())))
        # one series for the twenty users: the route, no user.id
        assert len(series) == 1, series
        (point,) = [dict(s) for s in series]
        assert point["http.route"] == "/users/{id}/orders" and "user.id" not in point


EXTRAS = """\
# what a user layers on the demo's config (its otelcol-config-extras.yml): send everything to
# a backend too (lists replace, so the exporters are repeated)
exporters:
  otlp/backend:
    endpoint: 127.0.0.1:{port}
    tls:
      insecure: true
service:
  pipelines:
    traces:
      exporters: [debug, span_metrics, otlp/backend]
    metrics:
      exporters: [debug, otlp/backend]
    logs:
      exporters: [debug, otlp/backend]
"""


async def test_the_opentelemetry_demo_collector_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The demo's config with its components we lack removed (see the file's header): its
    transform statements (span names by the semantic conventions, redaction, scope attribute
    renames), resource_detection, the telemetry readers and log processors, host_metrics with
    root_path, paging, processes and mute switches, http_check, and span_metrics."""
    caplog.set_level(logging.INFO, logger="pipeline")
    hostfs = tmp_path / "hostfs"  # the demo mounts the host's file system here
    hostfs.mkdir()
    for name in ("proc", "sys", "etc", "dev", "run"):
        (hostfs / name).symlink_to(f"/{name}")
    grpc_port, http_port = _free(), _free()
    text = (CONFIGS / "otel-demo.yaml").read_text().replace("root_path: /hostfs",
                                                          f"root_path: {hostfs}")  # fmt: skip
    async with recording_backend() as backend:
        for name, value in {
            "OTEL_COLLECTOR_HOST": "127.0.0.1",
            "OTEL_COLLECTOR_PORT_GRPC": str(grpc_port),
            "OTEL_COLLECTOR_PORT_HTTP": str(http_port),
            "FRONTEND_PROXY_ADDR": f"127.0.0.1:{_free()}",
            "AD_PROMETHEUS_PORT": str(_free()),
        }.items():
            monkeypatch.setenv(name, value)
        config = tmp_path / "otelcol-config.yml"
        config.write_text(text)
        extras = tmp_path / "otelcol-config-extras.yml"
        extras.write_text(EXTRAS.format(port=backend.grpc_port))
        from pipeline.config import load_config
        from pipeline.pluginmanager import default_registry
        from pipeline.service import Service
        from pipeline.telemetry import SelfTelemetry

        service = Service(load_config([str(config), str(extras)], default_registry()),
                          SelfTelemetry())  # fmt: skip
        await service.start()
        try:
            spans = [
                {"name": "GET /api/products/1YMWWN1N4O", "attributes": {
                    "http.request.method": "GET", "http.route": "/api/products/{productId}",
                    "url.path": "/api/products/1YMWWN1N4O"}},
                {"name": "oteldemo.PaymentService/Charge", "kind": SpanKind.SERVER,
                 "attributes": {"rpc.system": "grpc", "rpc.service": "oteldemo.PaymentService",
                                "rpc.method": "Charge", "user.email": "a@example.com",
                                "demo.payment.card_number": "4432-8015-6152-0454",
                                "demo.payment.card_cvv": "672"}},
            ]  # fmt: skip
            await asyncio.to_thread(_send_spans, grpc_port, "frontend", spans)
            await wait_until(lambda: len(backend.spans) == 2, within=15)
            # host_metrics and http_check scrape on their interval (60s): not awaited here
        finally:
            await service.shutdown()
        by_name = {s["name"]: s for s in plain(Signal.TRACES, backend.traces)}
        assert set(by_name) == {"GET /api/products/{productId}", "oteldemo.PaymentService/Charge"}
        product = by_name["GET /api/products/{productId}"]
        assert product["attributes"]["original_span_name"] == "GET /api/products/1YMWWN1N4O"
        payment = by_name["oteldemo.PaymentService/Charge"]["attributes"]
        assert "user.email" not in payment and "demo.payment.card_cvv" not in payment
        assert payment["user.hash"] == __import__("hashlib").sha256(b"a@example.com").hexdigest()
        assert payment["demo.payment.card_number"] == "****-****-****-0454"
        resource = product["resource"]
        assert resource["host.name"] == socket.gethostname() and resource["os.type"] == "linux"
        assert "docker" in caplog.text  # its docker detector found no daemon: logged, skipped
