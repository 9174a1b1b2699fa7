"""The OTLP receiver's two gRPC servers (the native one, plugins/otlpreceiver/grpc_native.py,
and grpcio's, grpc_server.py) with a real grpcio client: compression, size limits as sent and
once inflated, many concurrent calls on one connection, unknown methods."""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.service import Service
from plugins.otlpreceiver.common import INLINE_INFLATE
from tests.plugins._native_support import both_paths
from tests.support import free_port, running_service, wait_until

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# an OTLP/gRPC trace export's request headers, as a client sends them
GRPC_HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", TRACE_EXPORT),
    (":authority", "127.0.0.1"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]

server = both_paths("_h2server", disable=lambda mp: mp.setenv("PIPELINE_GRPC_SERVER", "grpcio"))


def config(port: int, max_mib: int = 1) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}", max_recv_msg_size_mib: {max_mib}}}
exporters:
  debug: {{verbosity: basic}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""


def request(spans: int, name: str = "s") -> bytes:
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for i in range(spans):
        scope.spans.add(
            name=f"{name}{i}", trace_id=b"\x01" * 16, span_id=(i + 1).to_bytes(8, "big")
        )
    return req.SerializeToString()


def accepted(service: Service) -> float:
    return float(
        service.telemetry.value("otelcol_receiver_accepted_spans_total", receiver="otlp") or 0
    )


def refused(service: Service, reason: str) -> float:
    return float(
        service.telemetry.value(
            "otelcol_receiver_refused_requests_total",
            receiver="otlp",
            transport="grpc",
            reason=reason,
        )
        or 0
    )


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_compressed_calls(tmp_path: Path, compression: grpc.Compression) -> None:
    port = free_port()
    async with running_service(config(port), tmp_path) as service:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", compression=compression
        ) as channel:
            export = channel.unary_unary(TRACE_EXPORT)
            assert await export(request(30)) == b""
            assert await export(request(12)) == b""
            # compressed above INLINE_INFLATE: inflated in a worker thread
            big = ExportTraceServiceRequest()
            scope = big.resource_spans.add().scope_spans.add()
            for _ in range(400):
                name = os.urandom(250).hex()  # incompressible enough
                scope.spans.add(name=name, trace_id=b"\x02" * 16, span_id=b"s" * 8)
            assert len(gzip.compress(big.SerializeToString())) > INLINE_INFLATE
            assert await export(big.SerializeToString()) == b""
        await wait_until(lambda: accepted(service) == 442)


async def test_messages_over_the_limit_as_sent_and_once_inflated(
    tmp_path: Path, server: str
) -> None:
    port = free_port()
    big = request(1, name="x" * (1 << 20))  # just over 1 MiB
    async with running_service(config(port, max_mib=1), tmp_path) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(TRACE_EXPORT)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(big)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # small on the wire, over the limit once inflated
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(big, compression=grpc.Compression.Gzip)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await export(request(3)) == b""  # still serving, same connection
        await wait_until(lambda: accepted(service) == 3)
        if server == "native":
            assert refused(service, "too_large") == 2


async def test_concurrent_calls_on_one_connection(tmp_path: Path) -> None:
    port = free_port()
    async with running_service(config(port), tmp_path) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(TRACE_EXPORT)
            results = await asyncio.gather(*(export(request(i % 7 + 1)) for i in range(200)))
        assert results == [b""] * 200
        await wait_until(lambda: accepted(service) == sum(i % 7 + 1 for i in range(200)))


async def test_unknown_methods_are_unimplemented(tmp_path: Path, server: str) -> None:
    port = free_port()
    async with running_service(config(port), tmp_path) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for method in (
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",  # no pipeline
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",  # no pipeline
                "/grpc.health.v1.Health/Check",
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await channel.unary_unary(method)(b"")
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, method
        if server == "native":
            assert refused(service, "unimplemented") == 3
