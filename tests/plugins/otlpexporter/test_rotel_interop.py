"""The gateway's ``otlp`` and ``otlphttp`` exporters deliver to rotel, and rotel's OTLP exporter
(gRPC and HTTP) delivers back to the gateway: SDK -> gateway -> rotel -> gateway -> backend,
compared field by field with what the SDK recorded (spans, metric points, log records)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from tests.otlp_support import Rotel, compare_logs, make_logs, recording_backend, rotel_binary
from tests.plugins.otlpreceiver.test_http_server import (
    attr_value,
    compare_spans,
    make_spans,
    record_metrics,
)
from tests.support import free_port, running_service, wait_until


def rotel_exporting_to(protocol: str, grpc_port: int, http_port: int) -> Rotel:
    """rotel, exporting everything it receives over OTLP (``protocol``) to the given port."""
    return Rotel(
        "--exporter",
        "otlp",
        "--otlp-exporter-protocol",
        protocol,
        "--otlp-exporter-endpoint",
        f"http://127.0.0.1:{grpc_port if protocol == 'grpc' else http_port}",
        "--batch-timeout",
        "100ms",
    )


@pytest.mark.parametrize(
    ("exporter", "rotel_protocol"),
    [("otlp", "grpc"), ("otlphttp", "http")],
)
async def test_gateway_to_rotel_to_gateway(exporter: str, rotel_protocol: str) -> None:
    rotel_binary()
    p_in, p_bg, p_bh = free_port(), free_port(), free_port()
    async with recording_backend() as backend:
        rotel_target = None
        rotel = rotel_exporting_to(rotel_protocol, p_bg, p_bh)
        try:
            if exporter == "otlp":
                rotel_target = (
                    f"otlp/to_rotel: {{endpoint: '127.0.0.1:{rotel.grpc_port}', "
                    "tls: {insecure: true}}"
                )
            else:
                rotel_target = (
                    f"otlphttp/to_rotel: {{endpoint: 'http://127.0.0.1:{rotel.http_port}'}}"
                )
            config = f"""
receivers:
  otlp/in: {{protocols: {{http: {{endpoint: 127.0.0.1:{p_in}}}}}}}
  otlp/back:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{p_bg}}}
      http: {{endpoint: 127.0.0.1:{p_bh}}}
exporters:
  {rotel_target}
  otlp/sink: {{endpoint: '127.0.0.1:{backend.grpc_port}', tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces/a: {{receivers: [otlp/in], exporters: [{exporter}/to_rotel]}}
    metrics/a: {{receivers: [otlp/in], exporters: [{exporter}/to_rotel]}}
    traces/b: {{receivers: [otlp/back], exporters: [otlp/sink]}}
    metrics/b: {{receivers: [otlp/back], exporters: [otlp/sink]}}
"""
            async with running_service(config) as service:
                await rotel.wait_ready()
                expected = await asyncio.to_thread(
                    make_spans, OTLPSpanExporter(endpoint=f"http://127.0.0.1:{p_in}/v1/traces")
                )
                metrics = await asyncio.to_thread(
                    record_metrics,
                    OTLPMetricExporter(endpoint=f"http://127.0.0.1:{p_in}/v1/metrics"),
                )
                await wait_until(
                    lambda: backend.span_count() >= len(expected) and backend.point_count() >= 6,
                    within=20,
                )
                await asyncio.sleep(0.3)  # nothing more (no duplicates) arrives
                compare_spans(expected, backend)
                want = {
                    (m.name, tuple(sorted((dp.attributes or {}).items()))): dp
                    for rm in metrics.resource_metrics
                    for sm in rm.scope_metrics
                    for m in sm.metrics
                    for dp in m.data.data_points
                }
                assert backend.point_count() == len(want) == 6
                for req in backend.metrics:
                    for rm in req.resource_metrics:
                        for sm in rm.scope_metrics:
                            for m in sm.metrics:
                                kind = m.WhichOneof("data")
                                for dp in getattr(m, kind).data_points:
                                    key = (
                                        m.name,
                                        tuple(
                                            sorted(
                                                (kv.key, attr_value(kv.value))
                                                for kv in dp.attributes
                                            )
                                        ),
                                    )
                                    if kind == "sum":
                                        assert dp.as_int == want[key].value
                                    else:
                                        assert dp.count == want[key].count
                                        assert dp.sum == want[key].sum
                                        assert list(dp.bucket_counts) == list(
                                            want[key].bucket_counts
                                        )
                tel = service.telemetry
                assert (
                    tel.value("otelcol_exporter_sent_spans_total", exporter=f"{exporter}/to_rotel")
                    == 10
                )
                assert (
                    tel.value("otelcol_receiver_accepted_spans_total", receiver="otlp/back") == 10
                )
                assert (
                    tel.value(
                        "otelcol_exporter_sent_metric_points_total", exporter=f"{exporter}/to_rotel"
                    )
                    == 6
                )
        finally:
            rotel.stop()


@pytest.mark.parametrize(
    ("sdk", "exporter", "rotel_protocol"),
    [("grpc", "otlp", "grpc"), ("json", "otlphttp", "http"), ("http", "otlp", "http")],
)
async def test_logs_gateway_to_rotel_to_gateway(
    sdk: str, exporter: str, rotel_protocol: str
) -> None:
    """SDK logs (OTLP/gRPC, OTLP/HTTP JSON or protobuf) -> gateway -> ``otlp`` / ``otlphttp``
    -> rotel -> rotel's OTLP exporter (gRPC or HTTP) -> gateway -> backend: every record field
    by field. (Towards rotel the gateway sends protobuf: rotel 0.0.1a15 refuses OTLP/JSON logs
    holding an empty AnyValue, such as ``"body": {}``.)"""
    from opentelemetry.exporter.otlp.json.http._log_exporter import (
        OTLPLogExporter as JsonLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
        OTLPLogExporter as GrpcLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )

    rotel_binary()
    p_grpc, p_http, p_bg, p_bh = free_port(), free_port(), free_port(), free_port()
    async with recording_backend() as backend:
        rotel = rotel_exporting_to(rotel_protocol, p_bg, p_bh)
        try:
            if exporter == "otlp":
                target = f"{{endpoint: '127.0.0.1:{rotel.grpc_port}', tls: {{insecure: true}}}}"
            else:
                target = f"{{endpoint: 'http://127.0.0.1:{rotel.http_port}'}}"
            config = f"""
receivers:
  otlp/in:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{p_grpc}}}
      http: {{endpoint: 127.0.0.1:{p_http}}}
  otlp/back:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{p_bg}}}
      http: {{endpoint: 127.0.0.1:{p_bh}}}
exporters:
  {exporter}/to_rotel: {target}
  otlp/sink: {{endpoint: '127.0.0.1:{backend.grpc_port}', tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs/a: {{receivers: [otlp/in], exporters: [{exporter}/to_rotel]}}
    logs/b: {{receivers: [otlp/back], exporters: [otlp/sink]}}
"""
            async with running_service(config) as service:
                await rotel.wait_ready()
                sdk_exporter: Any
                if sdk == "grpc":
                    sdk_exporter = GrpcLogExporter(endpoint=f"127.0.0.1:{p_grpc}", insecure=True)
                elif sdk == "json":
                    sdk_exporter = JsonLogExporter(endpoint=f"http://127.0.0.1:{p_http}/v1/logs")
                else:
                    sdk_exporter = HttpLogExporter(endpoint=f"http://127.0.0.1:{p_http}/v1/logs")
                expected = await asyncio.to_thread(make_logs, sdk_exporter)
                await wait_until(lambda: backend.log_record_count() >= len(expected), within=20)
                await asyncio.sleep(0.3)  # nothing more (no duplicates) arrives
                compare_logs(expected, backend.logs)
                tel = service.telemetry
                name = f"{exporter}/to_rotel"
                assert tel.value("otelcol_exporter_sent_log_records_total", exporter=name) == len(
                    expected
                )
                assert tel.value(
                    "otelcol_receiver_accepted_log_records_total", receiver="otlp/back"
                ) == len(expected)
        finally:
            rotel.stop()
