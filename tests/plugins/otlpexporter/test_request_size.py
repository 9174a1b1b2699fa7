"""Batches larger than the downstream accepts: the ``otlp`` and ``otlphttp`` exporters send
them in halves until they fit, losing nothing; a single span too large is dropped and counted,
not retried. Downstreams are real: the gateway's own ``otlp`` receiver with
``max_recv_msg_size_mib: 1`` / ``max_request_body_size: 1 MiB``, and rotel with
``--otlp-grpc-max-recv-msg-size-mib 1``."""

from __future__ import annotations

import os

import aiohttp
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.service import Service
from tests.otlp_support import RecordingBackend, Rotel, recording_backend, rotel_binary
from tests.support import free_port, running_service, wait_until

MIB = 1 << 20
IN_LIMIT = f"max_request_body_size: {64 * MIB}"
RETRY = "retry_on_failure: {initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 10s}"


def big_request(n: int, attributes: int = 64, huge: int = 0) -> ExportTraceServiceRequest:
    """``n`` spans of ``attributes`` random (poorly compressible) string attributes each, about
    3.4 kB a span; with ``huge``, one more span carrying ``huge`` bytes in one attribute."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "sizes"
    ss = rs.scope_spans.add()
    for i in range(n + (1 if huge else 0)):
        span = ss.spans.add(
            trace_id=os.urandom(16),
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"op-{i}",
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_000_100_000 + i,
        )
        if i == n:
            span.attributes.add(key="blob").value.string_value = os.urandom(huge // 2).hex()
            continue
        for a in range(attributes):
            span.attributes.add(key=f"attr.{a}").value.string_value = os.urandom(20).hex()
    return req


async def post(port: int, req: ExportTraceServiceRequest) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{port}/v1/traces",
            data=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


def chain_config(
    exporter: str, p_in: int, p_down: int, backend: RecordingBackend, extra: str = ""
) -> str:
    """in (HTTP) -> ``exporter``/up -> the gateway's own small-limit receiver -> backend."""
    if exporter == "otlp":
        up = f"otlp/up: {{endpoint: '127.0.0.1:{p_down}', tls: {{insecure: true}}, {RETRY}{extra}}}"
        down = f"grpc: {{endpoint: 127.0.0.1:{p_down}, max_recv_msg_size_mib: 1}}"
    else:
        up = f"otlphttp/up: {{endpoint: 'http://127.0.0.1:{p_down}', {RETRY}{extra}}}"
        down = f"http: {{endpoint: 127.0.0.1:{p_down}, max_request_body_size: {MIB}}}"
    return f"""
receivers:
  otlp/in: {{protocols: {{http: {{endpoint: 127.0.0.1:{p_in}, {IN_LIMIT}}}}}}}
  otlp/down: {{protocols: {{{down}}}}}
exporters:
  {up}
  otlp/sink: {{endpoint: '127.0.0.1:{backend.grpc_port}', tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces/a: {{receivers: [otlp/in], exporters: [{exporter}/up]}}
    traces/b: {{receivers: [otlp/down], exporters: [otlp/sink]}}
"""


def splits(service: Service, exporter: str, reason: str) -> float:
    return service.telemetry.value(
        "otelcol_exporter_split_requests_total",
        exporter=exporter,
        data_type="traces",
        reason=reason,
    )


def exporter_value(service: Service, what: str, exporter: str) -> float:
    return service.telemetry.value(f"otelcol_exporter_{what}_spans_total", exporter=exporter)


def received_ids(backend: RecordingBackend) -> list[bytes]:
    return sorted(s.span_id for s in backend.spans)


@pytest.mark.parametrize("exporter", ["otlp", "otlphttp"])
async def test_a_batch_too_large_for_the_downstream_arrives_whole(exporter: str) -> None:
    p_in, p_down = free_port(), free_port()
    req = big_request(1000)
    assert req.ByteSize() > 3 * MIB
    async with (
        recording_backend() as backend,
        running_service(chain_config(exporter, p_in, p_down, backend)) as service,
    ):
        await post(p_in, req)
        await wait_until(lambda: backend.span_count() >= 1000, within=30)
        name = f"{exporter}/up"
        await wait_until(lambda: exporter_value(service, "sent", name) == 1000)
        assert received_ids(backend) == [(i + 1).to_bytes(8, "big") for i in range(1000)]
        assert splits(service, name, "too_large") >= 3  # 1000 -> 500 -> 250: at least 1+2
        assert exporter_value(service, "send_failed", name) == 0
        assert exporter_value(service, "retried", name) == 0
        # Every request that got through fitted under the downstream's limit.
        assert max(r.ByteSize() for r in backend.traces) <= MIB
        # Attributes arrived intact.
        first = next(s for s in backend.spans if s.span_id == (1).to_bytes(8, "big"))
        assert len(first.attributes) == 64
        assert first.attributes[5].value.string_value == (
            req.resource_spans[0].scope_spans[0].spans[0].attributes[5].value.string_value
        )


@pytest.mark.parametrize("exporter", ["otlp", "otlphttp"])
async def test_a_single_span_too_large_is_dropped_and_counted_not_retried(
    exporter: str,
) -> None:
    p_in, p_down = free_port(), free_port()
    req = big_request(50, attributes=4, huge=3 * MIB)
    async with (
        recording_backend() as backend,
        running_service(chain_config(exporter, p_in, p_down, backend)) as service,
    ):
        await post(p_in, req)
        name = f"{exporter}/up"
        await wait_until(lambda: exporter_value(service, "send_failed", name) == 1, within=30)
        await wait_until(lambda: backend.span_count() >= 50)
        assert received_ids(backend) == [(i + 1).to_bytes(8, "big") for i in range(50)]
        assert exporter_value(service, "sent", name) == 50
        assert exporter_value(service, "retried", name) == 0
        assert splits(service, name, "too_large") >= 1
        assert (
            service.telemetry.value("otelcol_receiver_accepted_spans_total", receiver="otlp/down")
            == 50
        )


@pytest.mark.parametrize("exporter", ["otlp", "otlphttp"])
async def test_max_request_bytes_keeps_requests_under_the_limit(exporter: str) -> None:
    p_in, p_down = free_port(), free_port()
    limit = 512 << 10
    async with (
        recording_backend() as backend,
        running_service(
            chain_config(exporter, p_in, p_down, backend, f", max_request_bytes: {limit}")
        ) as service,
    ):
        await post(p_in, big_request(1000))
        name = f"{exporter}/up"
        await wait_until(lambda: exporter_value(service, "sent", name) == 1000, within=30)
        await wait_until(lambda: backend.span_count() >= 1000)
        assert received_ids(backend) == [(i + 1).to_bytes(8, "big") for i in range(1000)]
        assert max(r.ByteSize() for r in backend.traces) <= limit
        assert splits(service, name, "max_request_bytes") >= 1
        assert splits(service, name, "too_large") == 0  # nothing was refused


async def test_rotel_with_a_1_mib_limit_gets_every_span() -> None:
    rotel_binary()
    p_in, p_back = free_port(), free_port()
    async with recording_backend() as backend:
        rotel = Rotel(
            "--otlp-grpc-max-recv-msg-size-mib",
            "1",
            "--exporter",
            "otlp",
            "--otlp-exporter-protocol",
            "grpc",
            "--otlp-exporter-endpoint",
            f"http://127.0.0.1:{p_back}",
            "--batch-timeout",
            "100ms",
        )
        config = f"""
receivers:
  otlp/in: {{protocols: {{http: {{endpoint: 127.0.0.1:{p_in}, {IN_LIMIT}}}}}}}
  otlp/back: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{p_back}, max_recv_msg_size_mib: 64}}}}}}
exporters:
  otlp/to_rotel: {{endpoint: '127.0.0.1:{rotel.grpc_port}', tls: {{insecure: true}}, {RETRY}}}
  otlp/sink: {{endpoint: '127.0.0.1:{backend.grpc_port}', tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces/a: {{receivers: [otlp/in], exporters: [otlp/to_rotel]}}
    traces/b: {{receivers: [otlp/back], exporters: [otlp/sink]}}
"""
        try:
            async with running_service(config) as service:
                await rotel.wait_ready()
                await post(p_in, big_request(1000))
                await wait_until(lambda: backend.span_count() >= 1000, within=30)
                name = "otlp/to_rotel"
                assert received_ids(backend) == [(i + 1).to_bytes(8, "big") for i in range(1000)]
                assert exporter_value(service, "sent", name) == 1000
                assert exporter_value(service, "send_failed", name) == 0
                # tonic answers OUT_OF_RANGE "decoded message length too large" and counts the
                # gzip-compressed size (~1.7 MiB here): one split is enough.
                assert splits(service, name, "too_large") >= 1
        finally:
            rotel.stop()
