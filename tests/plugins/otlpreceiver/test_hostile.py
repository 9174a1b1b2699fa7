"""Seeded hostile OTLP requests for every signal, interleaved with good ones, through a real
gateway to a real OTLP backend: OTLP/HTTP (protobuf and JSON, plain and gzip) and OTLP/gRPC
(on both servers: the native one and grpcio's). Every good request sent after bad ones is
delivered, every request refused is counted and the refusals are logged, and nothing but a
client error is answered (no 500, no INTERNAL). Seeded: each run sends the same requests."""

from __future__ import annotations

import gzip
import random

import aiohttp
import grpc
import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Signal
from plugins import _otlpjson
from plugins._native import load
from tests.hostile import mutate, refused_requests
from tests.otlp_support import (
    LOGS_METHOD,
    METRICS_METHOD,
    TRACE_METHOD,
    RecordingBackend,
    recording_backend,
)
from tests.support import free_port, logged, running_service, wait_until

BAD_PER_CASE = 25
PATHS = {Signal.TRACES: "/v1/traces", Signal.METRICS: "/v1/metrics", Signal.LOGS: "/v1/logs"}


GRPC_METHODS = {
    Signal.TRACES: TRACE_METHOD,
    Signal.METRICS: METRICS_METHOD,
    Signal.LOGS: LOGS_METHOD,
}


def config(port: int, backend: RecordingBackend, protocol: str = "http") -> str:
    return f"""
receivers:
  otlp:
    protocols:
      {protocol}:
        endpoint: 127.0.0.1:{port}
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend.grpc_port}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
    metrics: {{receivers: [otlp], exporters: [otlp]}}
    logs: {{receivers: [otlp], exporters: [otlp]}}
"""


def good(signal: Signal, marker: str) -> Message:
    """A request of one item named ``marker``."""
    if signal == Signal.TRACES:
        t = ExportTraceServiceRequest()
        t.resource_spans.add().scope_spans.add().spans.add(
            trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name=marker
        )
        return t
    if signal == Signal.METRICS:
        m = ExportMetricsServiceRequest()
        metric = m.resource_metrics.add().scope_metrics.add().metrics.add(name=marker)
        metric.gauge.data_points.add(as_int=1, time_unix_nano=1)
        return m
    lg = ExportLogsServiceRequest()
    rec = lg.resource_logs.add().scope_logs.add().log_records.add(severity_number=9)
    rec.body.string_value = marker
    return lg


def markers(backend: RecordingBackend, signal: Signal) -> set[str]:
    if signal == Signal.TRACES:
        return {s.name for s in backend.spans}
    if signal == Signal.LOGS:
        return {r.body.string_value for r in backend.log_records}
    return {
        m.name
        for r in backend.metrics
        for rm in r.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def hostile(rng: random.Random, body: bytes, json_body: bool) -> list[bytes]:
    """Mutations of ``body``, and the worst cases of its kind: deep, huge, well framed but
    wrong."""
    out = [mutate(body, rng, body) for _ in range(BAD_PER_CASE)]
    if json_body:
        out += [b"[" * 50_000, b'{"resourceSpans": [' * 5_000, b"\xff\xfe{}", b'{"a": 1e999999}']
    else:
        out += [b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x02\x0a" * 30_000, bytes(100_000)]
    return out


async def test_hostile_requests_are_refused_counted_and_logged_and_good_ones_delivered() -> None:
    rng = random.Random(20261207)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    not_ok = 0
    sent_good: dict[Signal, set[str]] = {s: set() for s in PATHS}
    async with recording_backend() as backend:
        with logged() as records:
            async with (
                running_service(config(port, backend)) as service,
                aiohttp.ClientSession() as session,
            ):
                for signal, path in PATHS.items():
                    for json_body in (False, True):
                        ctype = "application/json" if json_body else "application/x-protobuf"
                        sample = good(signal, "sample")
                        body = _otlpjson.dumps(sample) if json_body else sample.SerializeToString()
                        for i, bad in enumerate(hostile(rng, body, json_body)):
                            headers = {"Content-Type": ctype}
                            if i % 5 == 0:  # some compressed, some corrupt gzip
                                bad = gzip.compress(bad)[: None if i % 10 else -4]
                                headers["Content-Encoding"] = "gzip"
                            async with session.post(base + path, data=bad, headers=headers) as r:
                                assert r.status in (200, 400, 413), (r.status, bad[:80])
                                not_ok += r.status != 200
                            marker = f"good-{signal}-{int(json_body)}-{i}"
                            msg = good(signal, marker)
                            data = _otlpjson.dumps(msg) if json_body else msg.SerializeToString()
                            async with session.post(
                                base + path, data=data, headers={"Content-Type": ctype}
                            ) as r:
                                assert r.status == 200, await r.text()
                            sent_good[signal].add(marker)
                for signal, wanted in sent_good.items():
                    await wait_until(lambda s=signal, w=wanted: w <= markers(backend, s), within=30)
                # every request not taken is counted once
                assert not_ok > len(PATHS) * 2 * BAD_PER_CASE // 2
                assert refused_requests(service) == not_ok
    messages = [r.getMessage() for r in records]
    assert any("refused" in m and "OTLP" in m for m in messages), messages[:20]
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records if r.exc_info]


@pytest.mark.parametrize("server", ["native", "grpcio"])
async def test_hostile_grpc_requests_are_refused_counted_and_good_ones_delivered(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if server == "grpcio":
        monkeypatch.setenv("PIPELINE_GRPC_SERVER", "grpcio")
    elif load("_h2server") is None:
        pytest.skip("plugins._native._h2server is not built")
    rng = random.Random(f"grpc/{server}")
    port = free_port()
    refused = 0
    sent_good: dict[Signal, set[str]] = {s: set() for s in GRPC_METHODS}
    async with recording_backend() as backend:
        with logged() as records:
            async with (
                running_service(config(port, backend, "grpc")) as service,
                grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            ):
                for signal, method in GRPC_METHODS.items():
                    export = channel.unary_unary(method)
                    body = good(signal, "sample").SerializeToString()
                    for i, bad in enumerate(hostile(rng, body, json_body=False)):
                        try:
                            await export(bad)
                        except grpc.aio.AioRpcError as exc:
                            assert exc.code() in (
                                grpc.StatusCode.INVALID_ARGUMENT,
                                grpc.StatusCode.RESOURCE_EXHAUSTED,
                            ), (exc.code(), exc.details(), bad[:80])
                            refused += 1
                        marker = f"good-{signal}-grpc-{i}"
                        assert await export(good(signal, marker).SerializeToString()) == b""
                        sent_good[signal].add(marker)
                for signal, wanted in sent_good.items():
                    await wait_until(lambda s=signal, w=wanted: w <= markers(backend, s), within=30)
                assert refused > len(GRPC_METHODS) * BAD_PER_CASE // 2
                malformed = sum(
                    service.telemetry.value(
                        "otelcol_receiver_malformed_requests_total",
                        receiver="otlp",
                        otel_signal=str(signal),
                    )
                    for signal in GRPC_METHODS
                )
                assert malformed == refused
    assert any("malformed" in r.getMessage() for r in records)
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records if r.exc_info]
