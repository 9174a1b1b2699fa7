"""The ``otlp`` and ``otlphttp`` exporters carry logs (on both gRPC clients, see conftest.py):
the SDK's records through a gateway and its exporter to a second gateway arrive field by field;
batches of records too large for the downstream are split without decoding a record, a single
record too large is dropped and counted; a partial success is counted in log records."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from pipeline.service import Service
from plugins.otlphttpexporter.config import OTLPHTTPExporterConfig
from tests.otlp_support import (
    RecordingBackend,
    compare_logs,
    make_logs,
    recording_backend,
    second_gateway,
)
from tests.support import free_port, running_service, wait_until

MIB = 1 << 20
RETRY = "retry_on_failure: {initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 10s}"


def exporter_yaml(kind: str, grpc_port: int, http_port: int) -> str:
    """``kind``/up: ``otlp``, ``otlphttp`` or ``otlphttp-json`` to the given ports."""
    if kind == "otlp":
        return f"otlp/up: {{endpoint: '127.0.0.1:{grpc_port}', tls: {{insecure: true}}, {RETRY}}}"
    encoding = ", encoding: json" if kind == "otlphttp-json" else ""
    return f"otlphttp/up: {{endpoint: 'http://127.0.0.1:{http_port}'{encoding}, {RETRY}}}"


def chain(kind: str, p_in: int, grpc_port: int, http_port: int) -> str:
    """OTLP/gRPC in -> ``kind``/up."""
    return f"""
receivers:
  otlp/in: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{p_in}}}}}}}
exporters:
  {exporter_yaml(kind, grpc_port, http_port)}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs: {{receivers: [otlp/in], exporters: [{kind.split("-")[0]}/up]}}
"""


@pytest.mark.parametrize("kind", ["otlp", "otlphttp", "otlphttp-json"])
async def test_sdk_logs_through_the_exporter_to_a_second_gateway(kind: str) -> None:
    p_in = free_port()
    async with (
        recording_backend() as backend,
        second_gateway(backend) as (relay_grpc, relay_http),
        running_service(chain(kind, p_in, relay_grpc, relay_http)) as service,
    ):
        exporter = OTLPLogExporter(endpoint=f"127.0.0.1:{p_in}", insecure=True)
        expected = await asyncio.to_thread(make_logs, exporter)
        await wait_until(lambda: backend.log_record_count() >= len(expected))
        name = f"{kind.split('-')[0]}/up"
        await wait_until(
            lambda: (
                service.telemetry.value("otelcol_exporter_sent_log_records_total", exporter=name)
                == len(expected)
            )
        )
        await asyncio.sleep(0.2)
        compare_logs(expected, backend.logs)


def big_logs(n: int, attributes: int = 64, huge: int = 0) -> ExportLogsServiceRequest:
    """``n`` records of ``attributes`` random string attributes (about 3.4 kB a record); with
    ``huge``, one more record whose body holds ``huge`` bytes."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "sizes"
    sl = rl.scope_logs.add()
    for i in range(n + (1 if huge else 0)):
        lr = sl.log_records.add(
            time_unix_nano=1_700_000_000_000_000_000 + i,
            trace_id=os.urandom(16),
            span_id=(i + 1).to_bytes(8, "big"),
            event_name="gen_ai.client.inference.operation.details",
        )
        if i == n:
            lr.body.string_value = os.urandom(huge // 2).hex()
            continue
        lr.body.string_value = f"record {i}"
        for a in range(attributes):
            lr.attributes.add(key=f"attr.{a}").value.string_value = os.urandom(20).hex()
    return req


def small_limit_chain(kind: str, p_in: int, p_down: int, backend: RecordingBackend) -> str:
    """in (HTTP) -> ``kind``/up -> the gateway's own receiver limited to 1 MiB -> backend."""
    if kind == "otlp":
        down = f"grpc: {{endpoint: 127.0.0.1:{p_down}, max_recv_msg_size_mib: 1}}"
    else:
        down = f"http: {{endpoint: 127.0.0.1:{p_down}, max_request_body_size: {MIB}}}"
    up = f"http: {{endpoint: 127.0.0.1:{p_in}, max_request_body_size: {64 * MIB}}}"
    return f"""
receivers:
  otlp/in: {{protocols: {{{up}}}}}
  otlp/down: {{protocols: {{{down}}}}}
exporters:
  {exporter_yaml(kind, p_down, p_down)}
  otlp/sink: {{endpoint: '127.0.0.1:{backend.grpc_port}', tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs/a: {{receivers: [otlp/in], exporters: [{kind}/up]}}
    logs/b: {{receivers: [otlp/down], exporters: [otlp/sink]}}
"""


async def post_logs(port: int, req: ExportLogsServiceRequest) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{port}/v1/logs",
            data=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


def value(service: Service, what: str, exporter: str) -> float:
    return service.telemetry.value(f"otelcol_exporter_{what}_log_records_total", exporter=exporter)


@pytest.mark.parametrize("kind", ["otlp", "otlphttp"])
async def test_records_too_large_for_the_downstream_are_split_or_dropped(kind: str) -> None:
    """A 3.4 MiB batch arrives whole in parts under 1 MiB (each record exactly once, as it
    was sent); a record of 3 MiB on its own is dropped and counted once, never retried."""
    p_in, p_down = free_port(), free_port()
    req = big_logs(1000, huge=3 * MIB)
    assert req.ByteSize() > 6 * MIB
    async with (
        recording_backend() as backend,
        running_service(small_limit_chain(kind, p_in, p_down, backend)) as service,
    ):
        await post_logs(p_in, req)
        name = f"{kind}/up"
        await wait_until(lambda: value(service, "send_failed", name) == 1, within=30)
        await wait_until(lambda: backend.log_record_count() >= 1000, within=30)
        assert value(service, "sent", name) == 1000
        assert value(service, "retried", name) == 0
        assert max(r.ByteSize() for r in backend.logs) <= MIB
        sent = req.resource_logs[0].scope_logs[0].log_records
        got = sorted(backend.log_records, key=lambda r: r.span_id)
        assert [r.SerializeToString() for r in got] == [r.SerializeToString() for r in sent[:1000]]
        assert all(
            rl.resource.attributes[0].value.string_value == "sizes"
            for r in backend.logs
            for rl in r.resource_logs
        )
        assert (
            service.telemetry.value(
                "otelcol_exporter_split_requests_total",
                exporter=name,
                data_type="logs",
                reason="too_large",
            )
            >= 3
        )


@pytest.mark.parametrize("kind", ["otlp", "otlphttp"])
async def test_partial_success_is_counted_in_log_records(kind: str) -> None:
    p_in = free_port()
    async with recording_backend() as backend:
        backend.response_body = ExportLogsServiceResponse(
            partial_success=ExportLogsPartialSuccess(
                rejected_log_records=2, error_message="too old"
            )
        ).SerializeToString()
        config = f"""
receivers:
  otlp/in: {{protocols: {{http: {{endpoint: 127.0.0.1:{p_in}}}}}}}
exporters:
  {exporter_yaml(kind, backend.grpc_port, backend.http_port)}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs: {{receivers: [otlp/in], exporters: [{kind}/up]}}
"""
        async with running_service(config) as service:
            await post_logs(p_in, big_logs(5, attributes=1))
            await wait_until(
                lambda: (
                    service.telemetry.value(
                        "otelcol_exporter_dropped_items_total",
                        exporter=f"{kind}/up",
                        otel_signal="logs",
                        reason="rejected_by_server",
                    )
                    == 2
                )
            )
        assert backend.log_record_count() == 5


def test_logs_endpoint() -> None:
    cfg = OTLPHTTPExporterConfig(endpoint="http://h:4318/")
    assert cfg.url("logs") == "http://h:4318/v1/logs"
    cfg = OTLPHTTPExporterConfig(logs_endpoint="https://l:9000/custom/logs")
    assert cfg.url("logs") == "https://l:9000/custom/logs"
    with pytest.raises(ValueError, match="no endpoint for traces"):
        cfg.url("traces")
    with pytest.raises(ValueError, match="logs_endpoint must be an http"):
        OTLPHTTPExporterConfig(logs_endpoint="l:9000")
