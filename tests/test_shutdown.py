"""Shutdown under load loses nothing the receiver acknowledged."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import GatewayProcess, free_port, write_config

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_REQUEST = 50


def request(i: int) -> bytes:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for j in range(SPANS_PER_REQUEST):
        span = ss.spans.add(
            name=f"r{i}-s{j}", trace_id=i.to_bytes(16, "big"), span_id=(j + 1).to_bytes(8, "big")
        )
        span.attributes.add(key="k").value.string_value = "v" * 20
    return req.SerializeToString()


async def test_sigterm_under_load_drains_everything_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        f"""\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
    timeout: 2s
    send_batch_size: 100000
exporters:
  debug:
    verbosity: basic
    sampling_initial: 1000000
service:
  shutdown_timeout: 20s
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
""",
    )
    with GatewayProcess(config) as gw:
        gw.wait_ready()
        acked = 0
        attempted = 0
        stop_sending = asyncio.Event()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(TRACE_EXPORT)

            async def sender(worker: int) -> None:
                nonlocal acked, attempted
                i = worker * 1_000_000
                while not stop_sending.is_set():
                    i += 1
                    attempted += SPANS_PER_REQUEST
                    try:
                        await export(request(i), timeout=5)
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.01)
                        continue
                    acked += SPANS_PER_REQUEST

            senders = [asyncio.create_task(sender(w)) for w in range(4)]
            await asyncio.sleep(1.0)
            assert acked > 0
            gw.proc.send_signal(signal.SIGTERM)
            signalled_at = time.monotonic()
            # keep sending while the gateway shuts down: late requests must be refused, not lost
            while gw.proc.poll() is None and time.monotonic() - signalled_at < 30:
                await asyncio.sleep(0.05)
            stop_sending.set()
            await asyncio.gather(*senders)
        code = gw.stop()
        records = gw.records()
    assert code == 0, "\n".join(gw.lines()[-30:])
    delivered = sum(int(r.get("spans", 0)) for r in records if r.get("msg") == "Traces")
    assert any(r.get("msg") == "signal received; shutting down" for r in records)
    assert any(r.get("msg") == "shutdown complete" for r in records)
    # the batch timeout (2s) had not passed for the last batch: it was drained by the shutdown
    assert acked <= delivered <= attempted, (acked, delivered, attempted)
    stopped = [r["component"] for r in records if r.get("msg") == "component stopped"]
    assert stopped == ["otlp", "batch", "debug"]
