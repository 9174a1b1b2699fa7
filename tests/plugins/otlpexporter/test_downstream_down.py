"""The backend is down for 30 s under steady load: an exporter whose queue has room holds
everything and delivers it all once the backend is back; one whose queue fills refuses new data
with a retryable error (counted), and still delivers everything it accepted."""

from __future__ import annotations

import asyncio
import struct

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from plugins.otlpexporter.sender import retry_delay_from_trailers
from tests.otlp_support import TRACE_METHOD, RecordingBackend
from tests.support import free_port, running_service, wait_until

DOWN_FOR = 30.0
RATE = 20  # requests per second per receiver
SPANS = 50  # per request


class Load:
    """Steady load on one receiver; remembers which span IDs were accepted and refused."""

    def __init__(self, port: int, tag: int) -> None:
        self.port = port
        self.tag = tag
        self.accepted: set[bytes] = set()
        self.refused: set[bytes] = set()
        self.codes: list[grpc.StatusCode] = []
        self.retry_delays: list[float | None] = []

    async def run(self, duration: float) -> None:
        # no transparent retries: one call is one attempt at the gateway
        options = [("grpc.enable_retries", 0)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options) as channel:
            call = channel.unary_unary(TRACE_METHOD)
            loop = asyncio.get_running_loop()
            start = loop.time()
            seq = 0
            while loop.time() - start < duration:
                req = ExportTraceServiceRequest()
                ss = req.resource_spans.add().scope_spans.add()
                ids = []
                for _ in range(SPANS):
                    sid = struct.pack(">HxxI", self.tag, seq + 1)  # unique, never all-zero
                    seq += 1
                    ids.append(sid)
                    ss.spans.add(trace_id=b"\x01" * 16, span_id=sid, name="steady")
                try:
                    await call(req.SerializeToString(), timeout=5)
                except grpc.aio.AioRpcError as exc:
                    self.codes.append(exc.code())
                    self.retry_delays.append(retry_delay_from_trailers(exc.trailing_metadata()))
                    self.refused.update(ids)
                else:
                    self.accepted.update(ids)
                next_at = start + seq / SPANS / RATE
                await asyncio.sleep(max(0.0, next_at - loop.time()))


@pytest.mark.slow
async def test_backend_down_for_30s_under_steady_load() -> None:
    backend = RecordingBackend()
    p_big, p_small = free_port(), free_port()
    retry = "retry_on_failure: {initial_interval: 500ms, max_interval: 2s, max_elapsed_time: 0s}"
    config = f"""
receivers:
  otlp/big: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{p_big}}}}}}}
  otlp/small: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{p_small}}}}}}}
exporters:
  otlp/big:
    endpoint: 127.0.0.1:{backend.grpc_port}
    tls: {{insecure: true}}
    compression: none
    sending_queue: {{queue_size: 1000, num_consumers: 4}}
    {retry}
  otlp/small:
    endpoint: 127.0.0.1:{backend.grpc_port}
    tls: {{insecure: true}}
    sending_queue: {{queue_size: 5, num_consumers: 2}}
    {retry}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces/big: {{receivers: [otlp/big], exporters: [otlp/big]}}
    traces/small: {{receivers: [otlp/small], exporters: [otlp/small]}}
"""
    async with running_service(config) as service:
        big, small = Load(p_big, 1), Load(p_small, 2)
        await asyncio.gather(big.run(DOWN_FOR), small.run(DOWN_FOR))
        tel = service.telemetry
        # while down: nothing lost, nothing delivered; the small queue refused with a
        # retryable error carrying a retry delay
        assert backend.span_count() == 0
        assert not big.refused
        assert len(big.accepted) >= DOWN_FOR * RATE * SPANS * 0.8  # the load was steady
        assert small.refused and small.accepted
        assert set(small.codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all(d is not None and d > 0 for d in small.retry_delays)
        # every refusal the load saw was counted; the gateway's counts agree with each other
        # (a refusal the client library resent on its own would be counted twice, rightly)
        enqueue_failed = tel.value(
            "otelcol_exporter_enqueue_failed_spans_total", exporter="otlp/small"
        )
        assert enqueue_failed >= len(small.refused)
        assert enqueue_failed % SPANS == 0
        assert (
            tel.value("otelcol_receiver_refused_spans_total", receiver="otlp/small")
            == enqueue_failed
        )
        assert tel.value("otelcol_exporter_send_failed_spans_total", exporter="otlp/big") == 0
        # the backend comes back: everything accepted is delivered, exactly once
        await backend.start_grpc()
        try:
            total = len(big.accepted) + len(small.accepted)
            await wait_until(lambda: backend.span_count() >= total, within=60)
            await asyncio.sleep(0.5)
            delivered = [s.span_id for s in backend.spans]
            assert len(delivered) == len(set(delivered)) == total
            assert set(delivered) == big.accepted | small.accepted
            assert tel.value("otelcol_exporter_sent_spans_total", exporter="otlp/big") == len(
                big.accepted
            )
            assert tel.value("otelcol_exporter_send_failed_spans_total", exporter="otlp/small") == 0
        finally:
            await backend.stop()
