"""The forward path otlp → batch → (an exporter that forwards) decodes no span."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import pdata
from tests.support import free_port, running_service, wait_until

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


async def test_forwarding_never_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    original = pdata.Payload.message

    def spy(self: pdata.Payload) -> object:
        decoded.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(pdata.Payload, "message", spy)
    parses: list[int] = []
    real_parse = ExportTraceServiceRequest.FromString
    monkeypatch.setattr(
        ExportTraceServiceRequest,
        "FromString",
        staticmethod(lambda b: parses.append(len(b)) or real_parse(b)),
    )
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
    assert decoded == [] and parses == []
