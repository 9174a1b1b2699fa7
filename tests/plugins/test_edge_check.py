"""What a receiver accepts, every later stage decodes: the poison requests of the audit are
refused at the edge, naming the field, counted, and the good requests after them are
delivered; requests fuzzed from real ones that the edge check accepts go through every
component that decodes deeper (the workflow processor, the agentmetrics and spanmetrics
connectors, each on its C and Python paths; the debug exporter at detailed verbosity; the
prometheus exporter; ``Payload.message()``) without an exception, and what those components
emit passes the check too."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, Metrics, Payload, PermanentError, Signal, Traces
from pipeline._otlpvalid import check
from pipeline._wire import SkeletonTraces
from pipeline.telemetry import SelfTelemetry
from pipeline.testing import create_settings
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from plugins.debugexporter import DebugConfig, DebugExporter
from plugins.prometheusexporter.config import PrometheusExporterConfig
from plugins.prometheusexporter.exporter import PrometheusExporter, serialize
from plugins.spanmetricsconnector.config import SpanMetricsConfig
from plugins.spanmetricsconnector.connector import SpanMetricsConnector
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import WorkflowProcessor
from tests.otlp_corpus import agent_requests, corpus, mutate, sdk_requests
from tests.otlp_support import TRACE_METHOD, recording_backend
from tests.plugins._agent_support import settings
from tests.plugins._native_support import ld
from tests.support import free_port, running_service, wait_until

IDS = ld(1, bytes(range(16))) + ld(2, bytes(range(8)))


def poison_requests() -> list[tuple[str, bytes, str]]:
    """(what, request, the message naming the field) for the three poisons of the audit."""
    # (a) a resource string attribute that is not UTF-8: answered OK before, and the connectors
    # behind the batch processor then raised protobuf's DecodeError
    good_attr = ld(1, ld(1, b"service.name") + ld(2, ld(1, b"agent")))
    bad_attr = ld(1, ld(1, b"host") + ld(2, ld(1, b"caf\xe9")))
    utf8 = ld(1, ld(1, good_attr * 2 + bad_attr) + ld(2, ld(2, IDS + ld(5, b"op"))))
    # (b) a request whose framing is valid down to every span's fields (what the receiver
    # checked before) but which no full parse accepts: an attribute's value runs past its end
    attr = ld(1, b"tool") + ld(2, b"\x0a\x05ab")
    framing = ld(1, ld(1, good_attr) + ld(2, ld(1, ld(1, b"lib")) + ld(2, IDS + ld(9, attr))))
    # (c) a request whose first resource is fine and second is not: the workflow processor
    # took the first part in and failed on the second
    workflow_root = ld(2, IDS + ld(5, b"workflow.x") + ld(9, ld(1, b"workflow.name")))
    late_bad = ld(2, ld(1, bytes(range(16, 32))) + ld(2, bytes(8)) + ld(9, attr))
    partial = ld(1, ld(1, good_attr) + ld(2, workflow_root)) + ld(1, ld(2, late_bad))
    return [
        ("invalid UTF-8", utf8, "resource_spans[0].resource.attributes[2].value.string_value"),
        ("framing-valid, corrupt inside", framing, "spans[0].attributes[0].value"),
        ("corrupt after a good part", partial, "resource_spans[1].scope_spans[0].spans[0]"),
    ]


def test_the_poisons_passed_the_old_framing_check_and_fail_a_full_parse() -> None:
    for _, data, _ in poison_requests():
        SkeletonTraces.FromString(data)  # every span's own fields are well framed
        with pytest.raises(DecodeError):
            ExportTraceServiceRequest.FromString(data)


def gateway_yaml(grpc_port: int, http_port: int, backend: Any) -> str:
    """The default config's trace pipeline (workflow, batch, agentmetrics, spanmetrics) with
    an OTLP exporter to a recording backend."""
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
      http: {{endpoint: 127.0.0.1:{http_port}}}
processors:
  workflow: {{wait_duration: 100ms}}
  batch: {{timeout: 50ms}}
connectors:
  agentmetrics: {{metrics_flush_interval: 100ms}}
  spanmetrics: {{metrics_flush_interval: 100ms}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend.grpc_port}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [workflow, batch]
      exporters: [otlp, agentmetrics, spanmetrics]
    metrics/agent:
      receivers: [agentmetrics, spanmetrics]
      exporters: [otlp]
"""


@pytest.fixture(params=["grpc-native", "grpc-grpcio", "http"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "grpc-grpcio":
        monkeypatch.setenv("PIPELINE_GRPC_SERVER", "grpcio")
    yield str(request.param)


async def test_poisons_are_refused_at_the_edge_and_good_requests_after_them_delivered(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    grpc_port, http_port = free_port(), free_port()
    good = agent_requests(5, count=3)
    good_spans = sum(check("traces", g) for g in good)
    async with (
        recording_backend() as backend,
        running_service(gateway_yaml(grpc_port, http_port, backend)) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        aiohttp.ClientSession() as http,
    ):
        export = channel.unary_unary(TRACE_METHOD)

        async def send(data: bytes) -> tuple[bool, str]:
            if transport.startswith("grpc"):
                try:
                    await export(data)
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
                    return False, err.details() or ""
                return True, ""
            async with http.post(
                f"http://127.0.0.1:{http_port}/v1/traces",
                data=data,
                headers={"Content-Type": "application/x-protobuf"},
            ) as resp:
                if resp.status == 200:
                    return True, ""
                assert resp.status == 400
                return False, status_pb2.Status.FromString(await resp.read()).message

        with caplog.at_level(logging.WARNING, logger="pipeline"):
            for what, data, field in poison_requests():
                ok, message = await send(data)
                assert not ok, what
                assert message.startswith("malformed ExportTraceServiceRequest: ")
                assert field in message, (what, message)
        for data in good:
            assert await send(data) == (True, "")
        await wait_until(lambda: backend.span_count() == good_spans, within=15)
        await wait_until(lambda: len(backend.metrics) > 0, within=15)
        await asyncio.sleep(0.3)  # nothing of a refused request comes after (held 100 ms)
        assert backend.span_count() == good_spans
        tel = service.telemetry
        assert tel.value(
            "otelcol_receiver_malformed_requests_total", receiver="otlp", otel_signal="traces"
        ) == len(poison_requests())
        assert tel.value("otelcol_receiver_accepted_spans_total", receiver="otlp") == good_spans
        # refusals are logged, rate-limited: the first with its field, the others counted
        refusals = [r for r in caplog.records if "malformed OTLP request" in r.getMessage()]
        assert refusals and "resource.attributes[2]" in refusals[0].getMessage()
        assert refusals[0].__dict__.get("peer")


# -- fuzzing: accepted requests through the components that decode deeper --------------------
class Checked:
    """A consumer that decodes what it gets and checks it as a receiver would."""

    mutates_data = False

    def __init__(self) -> None:
        self.payloads = 0

    async def consume(self, data: Payload) -> None:
        data.message()
        assert check(data.signal.value, data.to_bytes()) == data.item_count()
        self.payloads += 1


def trace_components(native: bool) -> tuple[dict[str, Any], dict[str, Checked]]:
    """The components, created on the C paths or the Python ones, and what each emits to."""
    env = os.environ.get("PIPELINE_NATIVE")
    os.environ["PIPELINE_NATIVE"] = "1" if native else "0"
    sinks = {"workflow": Checked(), "agentmetrics": Checked(), "spanmetrics": Checked()}
    try:
        tel = SelfTelemetry()
        return {
            "workflow": WorkflowProcessor(
                settings(Kind.PROCESSOR, "workflow", tel),
                WorkflowConfig.model_validate({"wait_duration": "20ms"}),
                sinks["workflow"],
            ),
            "agentmetrics": AgentMetricsConnector(
                settings(Kind.CONNECTOR, "agentmetrics", tel),
                AgentMetricsConfig.model_validate({"metrics_flush_interval": "0s"}),
                sinks["agentmetrics"],
            ),
            "spanmetrics": SpanMetricsConnector(
                settings(Kind.CONNECTOR, "spanmetrics", tel),
                SpanMetricsConfig.model_validate({"metrics_flush_interval": "0s"}),
                sinks["spanmetrics"],
            ),
            "debug": DebugExporter(
                create_settings(Kind.EXPORTER, "debug"),
                DebugConfig.model_validate({"verbosity": "detailed"}),
                Signal.TRACES,
            ),
        }, sinks
    finally:
        if env is None:
            del os.environ["PIPELINE_NATIVE"]
        else:
            os.environ["PIPELINE_NATIVE"] = env


async def test_fuzzed_traces_the_edge_accepts_go_through_every_component() -> None:
    seeds = corpus("traces", 21, 20, sdk_requests()["traces"]) + agent_requests(2)
    rng = random.Random(21)
    paths = {}
    sinks = {}
    for native in (True, False):
        paths[native], sinks[native] = trace_components(native)
    accepted = 0
    logging.disable(logging.WARNING)  # the debug exporter at detailed verbosity
    try:
        for i in range(2500):
            data = mutate("traces", rng.choice(seeds), rng, seeds)
            try:
                n = check("traces", data)
            except ValueError:
                continue
            accepted += 1
            assert Traces(data).item_count() == n
            for comps in paths.values():
                for name, comp in comps.items():
                    try:
                        await comp.consume(Traces(data, item_count=n))
                    except Exception as exc:  # pragma: no cover - the failure reported
                        raise AssertionError(f"{name} raised on {data.hex()}") from exc
            if i % 100 == 0:
                await asyncio.sleep(0.03)  # the workflow processor releases what is due
        for comps in paths.values():
            for comp in comps.values():
                await comp.shutdown()
    finally:
        logging.disable(logging.NOTSET)
    assert accepted > 1000
    for emitted in sinks.values():  # released traces and flushed metrics were checked
        assert all(sink.payloads > 0 for sink in emitted.values()), emitted


async def test_fuzzed_metrics_the_edge_accepts_go_through_the_exporters() -> None:
    seeds = corpus("metrics", 22, 30, sdk_requests()["metrics"])
    rng = random.Random(22)
    debug = DebugExporter(
        create_settings(Kind.EXPORTER, "debug"),
        DebugConfig.model_validate({"verbosity": "detailed"}),
        Signal.METRICS,
    )
    prometheus = PrometheusExporter(
        create_settings(Kind.EXPORTER, "prometheus"),
        PrometheusExporterConfig.model_validate({"endpoint": "127.0.0.1:0"}),
    )
    accepted = 0
    logging.disable(logging.WARNING)
    try:
        for _ in range(1500):
            data = mutate("metrics", rng.choice(seeds), rng, seeds)
            try:
                check("metrics", data)
            except ValueError:
                continue
            accepted += 1
            Metrics(data).message()
            await debug.consume(Metrics(data))
            await prometheus.consume(Metrics(data))
        families = list(prometheus.accumulator.collect(False))
        serialize(families, True)
        serialize(families, False)
    finally:
        logging.disable(logging.NOTSET)
    assert accepted > 600


def test_payload_validate_names_the_field() -> None:
    _, data, field = poison_requests()[0]
    with pytest.raises(PermanentError) as err:
        Traces(data).validate()
    assert str(err.value) == f"malformed ExportTraceServiceRequest: {field}: invalid UTF-8"
