"""``probabilistic_sampler`` in running gateways fed by the OpenTelemetry Python SDK: two
gateways with the same seed keep exactly the same traces, the ones the Collector's formula
selects; logs are sampled by trace id and, without one, by a record attribute; the decisions are
counted in the gateway's own metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from plugins.probabilisticsamplerprocessor import sampling as s
from tests.otlp_support import recording_backend
from tests.support import free_port, running_service, wait_until

TRACES = 400
SPANS_PER_TRACE = 3


def _config(port: int, backend_port: int, sampler: str, signal: str = "traces") -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}"}}
processors:
  probabilistic_sampler: {sampler}
exporters:
  otlp: {{endpoint: "127.0.0.1:{backend_port}", tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{free_port()}"}}}}
  pipelines:
    {signal}: {{receivers: [otlp], processors: [probabilistic_sampler], exporters: [otlp]}}
"""


def _send_traces(ports: list[int]) -> list[bytes]:
    provider = TracerProvider(resource=Resource.create({"service.name": "sampled"}))
    for port in ports:
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=128))
    tracer = provider.get_tracer("t")
    ids = []
    for i in range(TRACES):
        with tracer.start_as_current_span(f"root-{i}") as root:
            ids.append(root.get_span_context().trace_id.to_bytes(16, "big"))
            for j in range(SPANS_PER_TRACE - 1):
                with tracer.start_as_current_span(f"child-{j}"):
                    pass
    provider.shutdown()
    return ids


async def test_two_gateways_keep_the_same_traces(tmp_path: Path) -> None:
    seed, pct = 1234, 30.0
    sampler = f"{{sampling_percentage: {pct}, hash_seed: {seed}}}"
    a, b = free_port(), free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        recording_backend() as backend_a,
        recording_backend() as backend_b,
        running_service(_config(a, backend_a.grpc_port, sampler), tmp_path / "a") as gw_a,
        running_service(_config(b, backend_b.grpc_port, sampler), tmp_path / "b"),
    ):
        ids = await asyncio.to_thread(_send_traces, [a, b])
        expected = {t for t in ids if s.fnv1a_32(t, seed) & 0x3FFF < s.hash_seed_scaled_rate(pct)}
        want = len(expected) * SPANS_PER_TRACE
        await wait_until(lambda: backend_a.span_count() >= want and backend_b.span_count() >= want)
        await asyncio.sleep(0.2)
        tel = gw_a.telemetry
        sampled = tel.value(
            "otelcol_processor_probabilistic_sampler_count_traces_sampled_total",
            processor="probabilistic_sampler",
            policy="trace_id_hash",
            sampled="true",
        )
        not_sampled = tel.value(
            "otelcol_processor_probabilistic_sampler_count_traces_sampled_total",
            processor="probabilistic_sampler",
            policy="trace_id_hash",
            sampled="false",
        )
    kept_a = {bytes(sp.trace_id) for sp in backend_a.spans}
    kept_b = {bytes(sp.trace_id) for sp in backend_b.spans}
    assert kept_a == kept_b == expected
    assert backend_a.span_count() == backend_b.span_count() == want
    # within statistical bounds of 30 % of 400 traces (5 sigma)
    assert abs(len(expected) - 120) < 5 * (400 * 0.3 * 0.7) ** 0.5
    assert sampled == want and not_sampled == (TRACES - len(expected)) * SPANS_PER_TRACE
    for sp in backend_a.spans:  # the Collector's tracestate: rv from the hash, th of 30 %
        rv = s.rvalue(s.randomness_from_bytes(bytes(sp.trace_id), seed))
        assert sp.trace_state == f"ot=rv:{rv};th:{s.tvalue(s.hash_seed_threshold(pct))}"


async def test_proportional_mode_by_trace_randomness(tmp_path: Path) -> None:
    port = free_port()
    async with (
        recording_backend() as backend,
        running_service(_config(port, backend.grpc_port, "{sampling_percentage: 20}"), tmp_path),
    ):
        ids = await asyncio.to_thread(_send_traces, [port])
        th = s.probability_to_threshold(0.2, 4)
        assert th is not None
        expected = {t for t in ids if s.trace_id_randomness(t) >= th}
        await wait_until(lambda: backend.span_count() >= len(expected) * SPANS_PER_TRACE)
        await asyncio.sleep(0.2)
    assert {bytes(sp.trace_id) for sp in backend.spans} == expected
    assert backend.span_count() == len(expected) * SPANS_PER_TRACE
    assert {sp.trace_state for sp in backend.spans} == {f"ot=th:{s.tvalue(th)}"}


def _send_logs(port: int) -> list[Any]:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=Resource.create({"service.name": "logs"}))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
    )
    logger = provider.get_logger("l")
    tracer = TracerProvider().get_tracer("t")
    for i in range(300):
        if i % 2:
            with tracer.start_as_current_span("s"):
                logger.emit(body=f"in span {i}", attributes={"record.id": f"r{i}"})
        else:
            logger.emit(body=f"no span {i}", attributes={"record.id": f"r{i}"})
    provider.shutdown()
    return []


async def test_logs_by_trace_id_then_record_attribute(tmp_path: Path) -> None:
    """hash_seed for logs: the trace id when the record has one (attribute_source traceID),
    else ``from_attribute``; the Collector hashes the trace id even when it is empty (all
    zeros), so with attribute_source record every record is decided by its attribute."""
    seed, pct = 99, 50.0
    port = free_port()
    sampler = (f"{{sampling_percentage: {pct}, hash_seed: {seed}, attribute_source: record, "
               "from_attribute: record.id}")  # fmt: skip
    async with (
        recording_backend() as backend,
        running_service(_config(port, backend.grpc_port, sampler, "logs"), tmp_path) as gw,
    ):
        await asyncio.to_thread(_send_logs, port)
        expected = {
            f"r{i}"
            for i in range(300)
            if s.fnv1a_32(f"r{i}".encode(), seed) & 0x3FFF < s.hash_seed_scaled_rate(pct)
        }
        await wait_until(lambda: backend.log_record_count() >= len(expected))
        await asyncio.sleep(0.2)
        dropped = gw.telemetry.value(
            "otelcol_processor_probabilistic_sampler_count_logs_sampled_total",
            processor="probabilistic_sampler",
            policy="record.id",
            sampled="false",
        )
    got = {
        kv.value.string_value
        for r in backend.log_records
        for kv in r.attributes
        if kv.key == "record.id"
    }
    assert got == expected and backend.log_record_count() == len(expected)
    assert dropped == 300 - len(expected)
    for r in backend.log_records:
        attrs = {kv.key: kv.value.string_value for kv in r.attributes}
        assert attrs["sampling.threshold"] == "8"
        assert len(attrs["sampling.randomness"]) == 14
