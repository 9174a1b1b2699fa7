"""The forward path otlp → batch → (an exporter that forwards) decodes no span and no log
record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import _wire, pdata
from tests.poison import good_logs
from tests.support import free_port, running_service, wait_until

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def spy_decoding(monkeypatch: pytest.MonkeyPatch, request_class: Any) -> list[str]:
    """What gets decoded from now on: every ``Payload.message()`` and every
    ``request_class.FromString`` (its payload type or size) lands in the list returned."""
    decoded: list[str] = []
    original = pdata.Payload.message

    def spy(self: pdata.Payload) -> object:
        decoded.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(pdata.Payload, "message", spy)
    real_parse = request_class.FromString
    monkeypatch.setattr(
        request_class,
        "FromString",
        staticmethod(lambda b: decoded.append(f"{len(b)} bytes") or real_parse(b)),
    )
    return decoded


async def test_forwarding_never_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = spy_decoding(monkeypatch, ExportTraceServiceRequest)
    port = free_port()
    text = f"""\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
    timeout: 20ms
    send_batch_size: 150
    send_batch_max_size: 200
exporters:
  span_sink:   # from the sample plugin: counts with item_count(), forwards nothing
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [span_sink]
"""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(100):
        ss.spans.add(name=f"s{i}", trace_id=bytes(16), span_id=bytes(8))
    async with (
        running_service(text, tmp_path) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        export = channel.unary_unary(TRACE_EXPORT)
        for _ in range(5):
            await export(req.SerializeToString())
        await wait_until(
            lambda: (
                service.telemetry.value("otelcol_exporter_sent_spans_total", exporter="span_sink")
                == 500
            )
        )
        sizes = service.telemetry.value(
            "otelcol_processor_batch_batch_send_size_count", processor="batch"
        )
        assert sizes >= 3  # batches were built and split (max 200)
    assert decoded == []


async def test_forwarding_logs_never_decodes_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """otlp (gRPC) -> batch (cut at send_batch_max_size) -> forward -> otlp exporter: no log
    record is decoded on the way, and what leaves is what came in, record for record."""
    decoded = spy_decoding(monkeypatch, ExportLogsServiceRequest)
    received: list[bytes] = []

    async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        received.append(request)  # kept as bytes: the sink decodes nothing either
        return b""

    sink = grpc.aio.server()
    sink.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.logs.v1.LogsService",
                {"Export": grpc.unary_unary_rpc_method_handler(export)},
            ),
        )
    )
    sink_port = free_port()
    sink.add_insecure_port(f"127.0.0.1:{sink_port}")
    await sink.start()
    port = free_port()
    text = f"""\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
    timeout: 20ms
    send_batch_size: 150
    send_batch_max_size: 200
connectors:
  forward:
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink_port}
    tls: {{insecure: true}}
    compression: none
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs/in:
      receivers: [otlp]
      processors: [batch]
      exporters: [forward]
    logs/out:
      receivers: [forward]
      exporters: [otlp]
"""
    requests = [good_logs(100, service=f"svc-{i}", seed=i) for i in range(5)]
    try:
        async with (
            running_service(text, tmp_path) as service,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            call = channel.unary_unary(LOGS_EXPORT)
            for req in requests:
                await call(req)
            await wait_until(
                lambda: (
                    service.telemetry.value(
                        "otelcol_exporter_sent_log_records_total", exporter="otlp"
                    )
                    == 500
                )
            )
            sizes = service.telemetry.value(
                "otelcol_processor_batch_batch_send_size_count", processor="batch"
            )
            assert sizes >= 3  # batches were built and split (max 200)
    finally:
        await sink.stop(0)
    assert decoded == []

    def records(data: list[bytes]) -> list[bytes]:
        return [
            rec
            for d in data
            for rl in _wire.ShallowLogs.FromString(d).resource_logs
            for sl in rl.scope_logs
            for rec in sl.log_records
        ]

    assert records(received) == records(requests)
    assert max(len(records([r])) for r in received) <= 200
