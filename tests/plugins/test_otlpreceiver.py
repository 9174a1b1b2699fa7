"""The otlp receiver over gRPC, driven by the real OpenTelemetry Python SDK."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from pipeline import (
    Component,
    ComponentConfig,
    CreateSettings,
    ExporterFactory,
    Payload,
    RetryableError,
    Signal,
    Stability,
)
from pipeline.config import load_config
from pipeline.pluginmanager import build_registry
from pipeline.service import Service
from pipeline.telemetry import SelfTelemetry
from tests.otlp_support import compare_logs, make_logs, recording_backend, second_gateway
from tests.plugins._native_support import both_paths
from tests.poison import good_logs, poison_logs
from tests.support import free_port, running_service, wait_until, write_config

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


# every test on the native gRPC server (plugins/otlpreceiver/grpc_native.py) and on grpcio's
server = both_paths("_h2server", disable=lambda mp: mp.setenv("PIPELINE_GRPC_SERVER", "grpcio"))


def gateway_yaml(port: int, verbosity: str = "detailed", extra_receiver: str = "") -> str:
    return f"""\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
        max_recv_msg_size_mib: 1
{extra_receiver}
processors:
  batch:
    timeout: 50ms
exporters:
  debug:
    verbosity: {verbosity}
    sampling_initial: 1000
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
"""


def send_spans(port: int, count: int, compression: bool) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

    exporter = OTLPSpanExporter(
        endpoint=f"127.0.0.1:{port}",
        insecure=True,
        compression=Compression.Gzip if compression else Compression.NoCompression,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.scope", "1.2.3")
    for i in range(count):
        with tracer.start_as_current_span(
            f"op-{i}", kind=trace_api.SpanKind.SERVER, attributes={"index": i, "tag": "t"}
        ) as span:
            span.add_event("checkpoint", {"step": i})
            if i % 5 == 0:
                span.set_status(trace_api.Status(trace_api.StatusCode.ERROR, "boom"))
    provider.shutdown()


def debug_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "pipeline.exporter")


@pytest.mark.parametrize("compression", [False, True])
async def test_sdk_spans_arrive_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, compression: bool
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    port = free_port()
    async with running_service(gateway_yaml(port), tmp_path) as service:
        await asyncio.to_thread(send_spans, port, 25, compression)
        await asyncio.sleep(0.3)
        assert (
            service.telemetry.value("otelcol_receiver_accepted_spans_total", receiver="otlp") == 25
        )
    text = debug_text(caplog)
    assert text.count("\nSpan #") + text.startswith("Span #") == 25
    for i in range(25):
        assert f"    Name           : op-{i}\n" in text
    assert text.count("     -> tag: Str(t)") == 25
    assert "     -> index: Int(7)" in text
    assert text.count("    Kind           : Server") == 25
    assert text.count("    Status code    : Error") == 5
    assert text.count("    Status message : boom") == 5
    assert text.count("     -> Name: checkpoint") == 25
    assert "     -> service.name: Str(sdk-test)" in text
    assert "InstrumentationScope tests.scope 1.2.3" in text
    trace_ids = re.findall(r"Trace ID       : ([0-9a-f]{32})", text)
    assert len(trace_ids) == 25 and len(set(trace_ids)) == 25


async def test_sdk_metrics_arrive_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    port = free_port()

    def send() -> None:
        exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
        provider = MeterProvider([reader], resource=Resource.create({"service.name": "m"}))
        meter = provider.get_meter("tests.meter")
        counter = meter.create_counter("requests", unit="1", description="Requests")
        hist = meter.create_histogram("latency", unit="s")
        counter.add(3, {"route": "/a"})
        counter.add(4, {"route": "/b"})
        for v in (0.1, 0.2, 7.0):
            hist.record(v, {"route": "/a"})
        provider.shutdown()

    async with running_service(gateway_yaml(port), tmp_path) as service:
        await asyncio.to_thread(send)
        await asyncio.sleep(0.3)
        assert (
            service.telemetry.value(
                "otelcol_receiver_accepted_metric_points_total", receiver="otlp"
            )
            == 3
        )
        assert (
            service.telemetry.value("otelcol_exporter_sent_metric_points_total", exporter="debug")
            == 3
        )
    text = debug_text(caplog)
    assert "     -> Name: requests" in text and "     -> Name: latency" in text
    assert "     -> DataType: Sum" in text and "     -> IsMonotonic: true" in text
    assert "     -> AggregationTemporality: Cumulative" in text
    assert "     -> route: Str(/a)" in text
    assert "Value: 3" in text and "Value: 4" in text
    assert "Count: 3" in text and "Sum: 7.300000" in text


async def test_malformed_and_oversize_requests(tmp_path: Path) -> None:
    port = free_port()
    async with running_service(gateway_yaml(port), tmp_path) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(TRACE_EXPORT)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(b"\xff\xff\xff\xff garbage")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed ExportTraceServiceRequest" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(b"\x0a" + b"\xff" * (2 << 20))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # still serving
            ok = ExportTraceServiceRequest()
            ok.resource_spans.add().scope_spans.add().spans.add(
                name="fine", trace_id=bytes(range(16)), span_id=bytes(8)
            )
            assert await export(ok.SerializeToString()) == b""
        assert (
            service.telemetry.value("otelcol_receiver_accepted_spans_total", receiver="otlp") == 1
        )
        assert (
            service.telemetry.value(
                "otelcol_receiver_malformed_requests_total", receiver="otlp", otel_signal="traces"
            )
            == 1
        )


async def test_signal_without_pipeline_is_unimplemented(tmp_path: Path) -> None:
    port = free_port()
    text = gateway_yaml(port).split("    metrics:\n      receivers")[0]
    async with (
        running_service(text, tmp_path),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(METRICS_EXPORT)(b"")
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("compression", [False, True])
async def test_sdk_logs_arrive_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, compression: bool
) -> None:
    """SDK (gRPC) -> gateway (batch, debug, otlp exporter) -> a second gateway -> backend:
    every record field by field; the debug exporter printed them."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

    caplog.set_level(logging.INFO, logger="pipeline")
    port = free_port()
    async with recording_backend() as backend, second_gateway(backend) as (relay, _):
        text = gateway_yaml(port) + (
            "    logs:\n"
            "      receivers: [otlp]\n"
            "      processors: [batch]\n"
            "      exporters: [debug, otlp/relay]\n"
        )
        text = text.replace(
            "exporters:\n  debug:\n",
            "exporters:\n"
            f"  otlp/relay: {{endpoint: '127.0.0.1:{relay}', tls: {{insecure: true}}}}\n"
            "  debug:\n",
        )
        async with running_service(text, tmp_path) as service:
            exporter = OTLPLogExporter(
                endpoint=f"127.0.0.1:{port}",
                insecure=True,
                compression=Compression.Gzip if compression else Compression.NoCompression,
            )
            expected = await asyncio.to_thread(make_logs, exporter)
            await wait_until(lambda: backend.log_record_count() >= len(expected))
            tel = service.telemetry
            assert tel.value("otelcol_receiver_accepted_log_records_total", receiver="otlp") == len(
                expected
            )
            assert tel.value(
                "otelcol_exporter_sent_log_records_total", exporter="otlp/relay"
            ) == len(expected)
        await asyncio.sleep(0.2)
        compare_logs(expected, backend.logs)
    text = debug_text(caplog)
    assert text.count("\nLogRecord #") + text.startswith("LogRecord #") == len(expected)
    assert "Body: Str(plain text body)" in text and "Body: Empty()" in text
    assert "EventName: gen_ai.client.inference.operation.details" in text
    assert "     -> service.name: Str(interop-test)" in text


async def test_malformed_and_corrupt_logs_requests(tmp_path: Path) -> None:
    """Bad logs are handled as bad traces: a request whose framing is wrong is refused at the
    edge (INVALID_ARGUMENT, counted as malformed); one that passes the receiver's check but that
    a full decode refuses has the records that cannot be decoded dropped where they are decoded
    (the detailed debug exporter) and counted (INVALID_ARGUMENT when none could be taken); the
    good requests after them are all delivered. (Each corrupt request is counted once either
    way, so the test holds whether the receiver checks the framing only or every field.)"""
    port = free_port()
    text = gateway_yaml(port) + "    logs: {receivers: [otlp], exporters: [debug]}\n"
    async with running_service(text, tmp_path) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(LOGS_EXPORT)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(b"\xff\xff\xff\xff garbage")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed ExportLogsServiceRequest" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(b"\x0a" + b"\xff" * (2 << 20))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            corrupt = [(n, d) for n, d in poison_logs() if "id of" not in n]
            for name, data in corrupt:
                try:
                    await export(data)  # OK when some of its records could be taken
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            for i in range(5):
                assert await export(good_logs(3, service=f"good-{i}")) == b""
        tel = service.telemetry
        malformed = tel.value(
            "otelcol_receiver_malformed_requests_total", receiver="otlp", otel_signal="logs"
        )
        await wait_until(
            lambda: tel.value("otelcol_exporter_sent_log_records_total", exporter="debug") >= 15
        )
        dropped = tel.value(
            "otelcol_exporter_dropped_items_total",
            exporter="debug",
            otel_signal="logs",
            reason="component_error",
        )
        assert malformed >= 1  # the garbage
        # each corrupt request was refused at the edge or had at least one record dropped
        assert (malformed - 1) + dropped >= len(corrupt)
        assert tel.value("otelcol_exporter_sent_log_records_total", exporter="debug") >= 15
        assert all(s.status == "ok" for s in service.statuses.values())


class Refuser(Component):
    mutates_data = False
    exhausted: ClassVar[bool] = False

    async def consume(self, data: Payload) -> None:
        raise RetryableError(
            "backend is busy", retry_after=2.5, resource_exhausted=Refuser.exhausted
        )


class RefuserFactory(ExporterFactory):
    type = "refuse"
    config_class = ComponentConfig
    stability: ClassVar[Any] = {Signal.TRACES: Stability.DEVELOPMENT}

    def create_traces(self, settings: CreateSettings, config: ComponentConfig) -> Refuser:
        return Refuser()


@pytest.mark.parametrize("exhausted", [False, True])
async def test_pushback_answers_with_retry_info(tmp_path: Path, exhausted: bool) -> None:
    Refuser.exhausted = exhausted
    registry = build_registry()
    registry.register(RefuserFactory())
    port = free_port()
    text = f"""\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  refuse:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [refuse]
"""
    service = Service(load_config([str(write_config(tmp_path, text))], registry), SelfTelemetry())
    await service.start()
    try:
        req = ExportTraceServiceRequest()
        req.resource_spans.add().scope_spans.add().spans.add(
            name="x", trace_id=bytes(range(16)), span_id=bytes(8)
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(TRACE_EXPORT)(req.SerializeToString())
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
        expected = grpc.StatusCode.RESOURCE_EXHAUSTED if exhausted else grpc.StatusCode.UNAVAILABLE
        assert err.value.code() == expected
        details = dict(err.value.trailing_metadata() or ())["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(details)
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info)
        assert info.retry_delay.seconds == 2 and info.retry_delay.nanos == 500_000_000
        assert service.telemetry.value("otelcol_receiver_refused_spans_total", receiver="otlp") == 1
    finally:
        await service.shutdown()
