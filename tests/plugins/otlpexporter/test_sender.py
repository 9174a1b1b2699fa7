"""The ``otlp`` and ``otlphttp`` exporters against a backend that refuses in each way the OTLP
specification names: what is retried, what is dropped (and counted), delays honoured,
partial success counted, headers and compression sent."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from plugins.otlpexporter.sender import retry_delay_from_trailers
from plugins.otlphttpexporter.sender import parse_retry_after
from tests.otlp_support import RecordingBackend, recording_backend
from tests.plugins.otlpreceiver.test_http_server import a_request
from tests.support import free_port, running_service, wait_until


def retry_info(delay: float) -> tuple[tuple[str, bytes], ...]:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=int(delay * 1e9)))
    )
    st = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down", details=[detail])
    return (("grpc-status-details-bin", st.SerializeToString()),)


def config(port: int, backend: RecordingBackend, exporter: str) -> str:
    if exporter == "otlp":
        exp = (
            f"otlp: {{endpoint: '127.0.0.1:{backend.grpc_port}', tls: {{insecure: true}}, "
            "headers: {x-tenant: acme}, "
            "retry_on_failure: {initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 5s}}"
        )
    else:
        exp = (
            f"otlphttp: {{endpoint: 'http://127.0.0.1:{backend.http_port}', "
            "headers: {x-tenant: acme}, "
            "retry_on_failure: {initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 5s}}"
        )
    return f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:{port}}}}}}}
exporters:
  {exp}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [{exporter}]}}
"""


async def send(port: int, n: int = 3) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{port}/v1/traces",
            data=a_request(n).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        ) as resp,
    ):
        assert resp.status == 200


def refusals(*answers: Any) -> Any:
    """A ``respond`` callable giving ``answers`` in turn, then accepting."""
    queue = list(answers)

    def respond(kind: str) -> Any:
        return queue.pop(0) if queue else None

    return respond


GRPC_UNAVAILABLE = ("grpc", grpc.StatusCode.UNAVAILABLE, "down for maintenance", ())
HTTP_503 = ("http", 503, b"busy", {"Retry-After": "1"})


@pytest.mark.parametrize(
    ("exporter", "answers", "delivered", "min_elapsed"),
    [
        ("otlp", [GRPC_UNAVAILABLE, GRPC_UNAVAILABLE], True, 0.0),
        ("otlp", [("grpc", grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", ())], False, 0.0),
        (
            "otlp",
            [("grpc", grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_info(0.6))],
            True,
            0.6,
        ),
        ("otlp", [("grpc", grpc.StatusCode.INVALID_ARGUMENT, "bad data", ())], False, 0.0),
        ("otlp", [("grpc", grpc.StatusCode.UNAUTHENTICATED, "who are you", ())], False, 0.0),
        ("otlphttp", [HTTP_503], True, 1.0),
        (
            "otlphttp",
            [("http", 429, b"", {}), ("http", 502, b"", {}), ("http", 504, b"", {})],
            True,
            0.0,
        ),
        (
            "otlphttp",
            [
                (
                    "http",
                    400,
                    status_pb2.Status(code=3, message="bad data").SerializeToString(),
                    {"Content-Type": "application/x-protobuf"},
                )
            ],
            False,
            0.0,
        ),
        ("otlphttp", [("http", 401, b"no", {})], False, 0.0),
    ],
)
async def test_retryable_and_permanent_errors(
    exporter: str, answers: list[Any], delivered: bool, min_elapsed: float
) -> None:
    port = free_port()
    async with (
        recording_backend() as backend,
        running_service(config(port, backend, exporter)) as service,
    ):
        backend.respond = refusals(*answers)
        started = time.monotonic()
        await send(port)
        tel = service.telemetry
        if delivered:
            await wait_until(
                lambda: tel.value("otelcol_exporter_sent_spans_total", exporter=exporter) == 3
            )
            assert backend.span_count() == 3
            assert time.monotonic() - started >= min_elapsed
            assert backend.attempts == len(answers) + 1
            assert tel.value("otelcol_exporter_sent_spans_total", exporter=exporter) == 3
            assert tel.value("otelcol_exporter_retried_spans_total", exporter=exporter) == 3 * len(
                answers
            )
        else:
            await wait_until(
                lambda: (
                    tel.value("otelcol_exporter_send_failed_spans_total", exporter=exporter) == 3
                )
            )
            assert backend.attempts == 1  # a permanent error is not retried
            assert backend.span_count() == 0
            assert tel.value("otelcol_exporter_retried_spans_total", exporter=exporter) == 0
        # headers reach the backend
        if exporter == "otlp":
            assert backend.grpc_metadata[-1]["x-tenant"] == "acme"
        else:
            assert backend.http_headers[-1]["x-tenant"] == "acme"
            assert backend.http_headers[-1]["Content-Encoding"] == "gzip"


@pytest.mark.parametrize("exporter", ["otlp", "otlphttp"])
async def test_partial_success_is_counted(exporter: str) -> None:
    port = free_port()
    async with (
        recording_backend() as backend,
        running_service(config(port, backend, exporter)) as service,
    ):
        backend.response_body = ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(rejected_spans=2, error_message="too old")
        ).SerializeToString()
        await send(port, 5)
        tel = service.telemetry
        await wait_until(
            lambda: (
                tel.value(
                    "otelcol_exporter_dropped_items_total",
                    exporter=exporter,
                    otel_signal="traces",
                    reason="rejected_by_server",
                )
                == 2
            )
        )


def test_retry_delay_parsing() -> None:
    assert retry_delay_from_trailers(retry_info(0.25)) == pytest.approx(0.25)
    assert retry_delay_from_trailers((("other", b"x"),)) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert 0 <= (parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") or 0) <= 0.0 + 1e-9


def test_config_errors() -> None:
    from plugins.otlpexporter.config import OTLPExporterConfig
    from plugins.otlphttpexporter.config import OTLPHTTPExporterConfig

    with pytest.raises(ValueError, match="host:port"):
        OTLPExporterConfig(endpoint="nohost")
    with pytest.raises(ValueError, match="at least one endpoint"):
        OTLPHTTPExporterConfig()
    with pytest.raises(ValueError, match="http:// or https://"):
        OTLPHTTPExporterConfig(endpoint="localhost:4318")
    cfg = OTLPHTTPExporterConfig(endpoint="http://h:4318/", metrics_endpoint="http://m:9000/custom")
    assert cfg.url("traces") == "http://h:4318/v1/traces"
    assert cfg.url("metrics") == "http://m:9000/custom"
    assert OTLPExporterConfig(endpoint="http://h:4317").insecure
    assert not OTLPExporterConfig(endpoint="h:4317").insecure
