"""The backend is down for 30 s under steady load: an exporter whose queue has room holds
everything and delivers it all once the backend is back; one whose queue fills refuses new data
with a retryable error (counted), and still delivers everything it accepted.

Nothing here depends on the machine's speed (it failed on a loaded machine, load average ~15):
each load sends a fixed number of requests (at ``RATE``; on a slow machine the outage lasts
longer), the calls and the sends have timeouts far above any wait of a starved event loop (a
call answered late is not a refusal, a send answered late is not retried into a duplicate),
and the delivery is awaited while it progresses, counted as requests arrive (counting every
span the backend holds at each poll, in the event loop the gateway runs in, took longer than
the delivery itself)."""

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
REQUESTS = int(DOWN_FOR * RATE)  # per receiver: the outage lasts DOWN_FOR at least
# the load's calls and the exporters' sends: no machine is that slow, no answer is lost
TIMEOUT = 120.0
# the delivery fails when nothing more arrives for this long (the exporters retry every 2 s)
STALLED = 60.0


class Load:
    """Steady load on one receiver; remembers which span IDs were accepted and refused."""

    def __init__(self, port: int, tag: int) -> None:
        self.port = port
        self.tag = tag
        self.accepted: set[bytes] = set()
        self.refused: set[bytes] = set()
        self.codes: list[grpc.StatusCode] = []
        self.retry_delays: list[float | None] = []

    async def run(self, requests: int) -> None:
        # no transparent retries: one call is one attempt at the gateway
        options = [("grpc.enable_retries", 0)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options) as channel:
            call = channel.unary_unary(TRACE_METHOD)
            loop = asyncio.get_running_loop()
            start = loop.time()
            seq = 0
            while seq < requests * SPANS:
                req = ExportTraceServiceRequest()
                ss = req.resource_spans.add().scope_spans.add()
                ids = []
                for _ in range(SPANS):
                    sid = struct.pack(">HxxI", self.tag, seq + 1)  # unique, never all-zero
                    seq += 1
                    ids.append(sid)
                    ss.spans.add(trace_id=b"\x01" * 16, span_id=sid, name="steady")
                try:
                    await call(req.SerializeToString(), timeout=TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    self.codes.append(exc.code())
                    self.retry_delays.append(retry_delay_from_trailers(exc.trailing_metadata()))
                    self.refused.update(ids)
                else:
                    self.accepted.update(ids)
                next_at = start + seq / SPANS / RATE
                await asyncio.sleep(max(0.0, next_at - loop.time()))


class Delivered:
    """The span IDs the backend received, read as requests arrive (each request once)."""

    def __init__(self, backend: RecordingBackend) -> None:
        self.backend = backend
        self.read = 0
        self.ids: list[bytes] = []

    def count(self) -> int:
        requests = self.backend.traces
        for req in requests[self.read :]:
            self.ids += [s.span_id for rs in req.resource_spans for ss in rs.scope_spans
                         for s in ss.spans]  # fmt: skip
        self.read = len(requests)
        return len(self.ids)

    async def wait_for(self, total: int) -> None:
        """Until ``total`` spans arrived; fails when none arrived for :data:`STALLED` s."""
        loop = asyncio.get_running_loop()
        seen, since = self.count(), loop.time()
        while seen < total:
            await asyncio.sleep(0.05)
            now = self.count()
            if now != seen:
                seen, since = now, loop.time()
            elif loop.time() - since > STALLED:
                raise AssertionError(f"{seen} of {total} spans delivered, none for {STALLED:g}s")


@pytest.mark.slow
async def test_backend_down_for_30s_under_steady_load() -> None:
    backend = RecordingBackend()
    p_big, p_small = free_port(), free_port()
    retry = "retry_on_failure: {initial_interval: 500ms, max_interval: 2s, max_elapsed_time: 0s}"
    timeout = f"timeout: {TIMEOUT:g}s"
    config = f"""
receivers:
  otlp/big: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{p_big}}}}}}}
  otlp/small: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{p_small}}}}}}}
exporters:
  otlp/big:
    endpoint: 127.0.0.1:{backend.grpc_port}
    tls: {{insecure: true}}
    compression: none
    {timeout}
    sending_queue: {{queue_size: 1000, num_consumers: 4}}
    {retry}
  otlp/small:
    endpoint: 127.0.0.1:{backend.grpc_port}
    tls: {{insecure: true}}
    {timeout}
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
        await asyncio.gather(big.run(REQUESTS), small.run(REQUESTS))
        tel = service.telemetry

        def sent(exporter: str) -> float:
            return tel.value("otelcol_exporter_sent_spans_total", exporter=exporter)

        # while down: nothing lost, nothing delivered; the small queue refused with a
        # retryable error carrying a retry delay
        assert backend.span_count() == 0
        assert not big.refused
        assert len(big.accepted) == REQUESTS * SPANS  # the big queue took it all
        assert small.refused and small.accepted
        assert len(small.accepted) + len(small.refused) == REQUESTS * SPANS
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
            arrived = Delivered(backend)
            await arrived.wait_for(total)
            # every batch acknowledged: no send is left that could deliver one again
            await wait_until(lambda: sent("otlp/big") + sent("otlp/small") == total, within=STALLED)
            assert arrived.count() == total
            delivered = arrived.ids
            assert len(delivered) == len(set(delivered)) == total
            assert set(delivered) == big.accepted | small.accepted
            assert sent("otlp/big") == len(big.accepted)
            assert tel.value("otelcol_exporter_send_failed_spans_total", exporter="otlp/small") == 0
        finally:
            await backend.stop()
