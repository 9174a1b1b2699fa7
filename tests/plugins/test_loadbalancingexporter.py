"""The ``loadbalancing`` exporter: the ring, the byte-level split, and real gateway processes
as backends (three on one port at 127.0.0.2-4, as the addresses a DNS name gives), one removed
and one added while spans flow, every span delivered exactly and every trace on one backend."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import ConfigErrors, Kind, Signal
from plugins._otlproute import span_trace_id, split
from plugins.loadbalancingexporter.backends import DNSResolver, HashRing, with_port
from tests.otlp_support import RecordingBackend, recording_backend
from tests.support import (
    GatewayProcess,
    config_from_text,
    free_port,
    running_service,
    wait_until,
    write_config,
)


def traces_request(n_traces: int, spans_per_trace: int, seed: int = 1) -> ExportTraceServiceRequest:
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    for r in range(2):
        rs = req.resource_spans.add()
        kv = rs.resource.attributes.add(key="service.name")
        kv.value.string_value = f"svc-{r}"
        rs.schema_url = "https://opentelemetry.io/schemas/1.26.0"
        ss = rs.scope_spans.add()
        ss.scope.name = f"scope-{r}"
    for t in range(n_traces):
        tid = rng.randbytes(16)
        for s in range(spans_per_trace):
            span = req.resource_spans[t % 2].scope_spans[0].spans.add()
            span.trace_id = tid
            span.span_id = rng.randbytes(8)
            span.name = f"t{t}-s{s}"
    return req


# -- the ring -----------------------------------------------------------------------------
def test_ring_moves_only_the_share_of_a_backend_that_joins_or_leaves() -> None:
    keys = [os.urandom(16) for _ in range(20000)]
    three = HashRing(["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"])
    four = HashRing([*three.endpoints, "10.0.0.4:4317"])
    before = {k: three.endpoint_for(k) for k in keys}
    after = {k: four.endpoint_for(k) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    # every key that moved went to the new backend, and about a quarter moved
    assert all(after[k] == "10.0.0.4:4317" for k in moved)
    assert 0.15 < len(moved) / len(keys) < 0.35
    # removing a backend moves only its keys
    two = HashRing(["10.0.0.1:4317", "10.0.0.3:4317"])
    for k in keys:
        if before[k] != "10.0.0.2:4317":
            assert two.endpoint_for(k) == before[k]
    # every backend gets a share
    share = Counter(before.values())
    assert min(share.values()) > len(keys) / 3 * 0.5
    # the same on every gateway: the order endpoints are given in does not matter
    assert HashRing(list(reversed(three.endpoints))).endpoint_for(keys[0]) == before[keys[0]]


def test_with_port() -> None:
    assert with_port("backend") == "backend:4317"
    assert with_port("backend:55690") == "backend:55690"
    assert with_port("::1", 4000) == "[::1]:4000"
    assert with_port("[::1]:5") == "[::1]:5"


async def test_dns_resolver_resolves_localhost() -> None:
    got = await DNSResolver("localhost", 4999, 5.0, 2.0).resolve()
    assert "127.0.0.1:4999" in got


# -- the byte-level split -------------------------------------------------------------------
def test_split_traces_by_trace_id_keeps_every_span_resource_and_scope() -> None:
    req = traces_request(50, 4)
    raw = req.SerializeToString()
    ring = HashRing(["a:1", "b:1", "c:1"])
    parts = split(Signal.TRACES, raw, "traceID", ring.endpoint_for)
    assert sum(c for _, c in parts.values()) == 200
    seen: dict[bytes, str] = {}
    names = []
    for ep, (data, count) in parts.items():
        part = ExportTraceServiceRequest.FromString(data)
        n = 0
        for rs in part.resource_spans:
            svc = rs.resource.attributes[0].value.string_value
            assert rs.schema_url == "https://opentelemetry.io/schemas/1.26.0"
            for ss in rs.scope_spans:
                assert ss.scope.name == f"scope-{svc[-1]}"
                for span in ss.spans:
                    n += 1
                    names.append(span.name)
                    assert seen.setdefault(span.trace_id, ep) == ep  # one trace, one backend
                    assert ring.endpoint_for(span.trace_id) == ep
                    # the span from its resource of origin
                    assert int(span.name.split("-")[0][1:]) % 2 == int(svc[-1])
        assert n == count
    assert sorted(names) == sorted(
        s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans
    )


def test_split_reads_a_trace_id_that_is_not_first() -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    span = Span(name="x", trace_id=b"\x01" * 16).SerializeToString()
    reordered = span[span.index(b"\x2a") :] + span[: span.index(b"\x2a")]  # name first
    assert span_trace_id(reordered) == b"\x01" * 16


def test_split_by_service_and_resource() -> None:
    raw = traces_request(10, 2).SerializeToString()
    by_service = split(Signal.TRACES, raw, "service", lambda k: k)
    assert {k: c for k, (_, c) in by_service.items()} == {b"svc-0": 10, b"svc-1": 10}
    by_resource = split(Signal.TRACES, raw, "resource", lambda k: k)
    assert sorted(c for _, c in by_resource.values()) == [10, 10]


def test_split_logs_by_trace_id() -> None:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(30):
        rec = sl.log_records.add(trace_id=bytes([i % 3]) * 16)
        rec.body.string_value = f"log {i}"
    sl.log_records.add().body.string_value = "no trace"
    parts = split(Signal.LOGS, req.SerializeToString(), "traceID", lambda k: k)
    counts = {k: c for k, (_, c) in parts.items()}
    assert counts[b"\x00" * 16] == counts[b"\x01" * 16] == counts[b"\x02" * 16] == 10
    assert sum(counts.values()) == 31


def test_split_metrics_by_stream_and_by_metric() -> None:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "svc"
    sm = rm.scope_metrics.add()
    m = sm.metrics.add(name="requests", unit="1")
    m.sum.aggregation_temporality = 2
    m.sum.is_monotonic = True
    for i in range(6):
        p = m.sum.data_points.add(as_int=i)
        p.attributes.add(key="route").value.string_value = f"/r{i % 3}"
    h = sm.metrics.add(name="latency")
    h.histogram.data_points.add(count=1).attributes.add(key="route").value.string_value = "/r0"
    raw = req.SerializeToString()
    streams = split(Signal.METRICS, raw, "streamID", lambda k: k)
    assert sorted(c for _, c in streams.values()) == [1, 2, 2, 2]
    for data, _ in streams.values():
        for rm2 in ExportMetricsServiceRequest.FromString(data).resource_metrics:
            for metric in rm2.scope_metrics[0].metrics:
                if metric.name == "requests":
                    assert metric.sum.is_monotonic and metric.sum.aggregation_temporality == 2
                    assert (
                        len({p.attributes[0].value.string_value for p in metric.sum.data_points})
                        == 1
                    )
    by_metric = split(Signal.METRICS, raw, "metric", lambda k: k)
    assert sorted(c for _, c in by_metric.values()) == [1, 6]
    assert list(split(Signal.METRICS, raw, "service", lambda k: k)) == [b"svc"]


def test_split_refuses_unreadable_input() -> None:
    from pipeline import MalformedDataError

    with pytest.raises(MalformedDataError):
        split(Signal.TRACES, b"\x0a\x05\x12\x10ab", "traceID", lambda k: k)


# -- config ---------------------------------------------------------------------------------
BASE = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  loadbalancing:
{lb}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    {signal}: {{receivers: [otlp], exporters: [loadbalancing]}}
"""


@pytest.mark.parametrize(
    ("lb", "signal", "message"),
    [
        ("    resolver: {}", "traces", "exactly one of 'static' and 'dns'"),
        (
            "    resolver: {static: {hostnames: [a]}, dns: {hostname: b}}",
            "traces",
            "exactly one",
        ),
        (
            "    protocol: {otlp: {endpoint: 'x:1'}}\n    resolver: {static: {hostnames: [a]}}",
            "traces",
            "the resolver gives",
        ),
        (
            "    protocol: {otlp: {compression: zip}}\n    resolver: {static: {hostnames: [a]}}",
            "traces",
            "protocol.otlp: compression",
        ),
    ],
)
def test_config_errors(lb: str, signal: str, message: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        config_from_text(BASE.format(port=free_port(), lb=lb, signal=signal))
    assert message in str(info.value)


def test_routing_key_must_fit_the_signal() -> None:
    from pipeline.testing import create_settings
    from plugins.loadbalancingexporter import LoadBalancingConfig, LoadBalancingExporterFactory

    config = LoadBalancingConfig.model_validate(
        {"routing_key": "streamID", "resolver": {"static": {"hostnames": ["a"]}}}
    )
    with pytest.raises(ValueError, match="does not apply to traces"):
        LoadBalancingExporterFactory().create_traces(
            create_settings(Kind.EXPORTER, "loadbalancing"), config
        )


def test_collector_config_is_accepted() -> None:
    lb = """    routing_key: traceID
    protocol:
      otlp:
        timeout: 1s
        tls: {insecure: true}
        sending_queue: {queue_size: 500, num_consumers: 4}
        retry_on_failure: {initial_interval: 1s, max_elapsed_time: 60s}
    resolver:
      dns: {hostname: otelcol-tier2.example, port: 4317, interval: 5s, timeout: 1s}"""
    cfg = config_from_text(BASE.format(port=free_port(), lb=lb, signal="traces"))
    assert cfg.components[Kind.EXPORTER]


# -- real backends ------------------------------------------------------------------------
BACKEND = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "{ip}:{port}"}}}}}}
processors:
  resource: {{attributes: [{{key: backend, value: "{ip}", action: upsert}}]}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink}"
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 0.1s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [resource], exporters: [otlp]}}
"""


def start_backend(tmp_path: Path, ip: str, port: int, sink: int) -> GatewayProcess:
    path = write_config(tmp_path, BACKEND.format(ip=ip, port=port, sink=sink), f"backend-{ip}.yaml")
    gw = GatewayProcess(path)
    return gw


def spans_by_backend(sink: RecordingBackend) -> tuple[Counter[str], dict[bytes, set[str]]]:
    names: Counter[str] = Counter()
    where: dict[bytes, set[str]] = {}
    for req in list(sink.traces):
        for rs in req.resource_spans:
            backend = next(
                (a.value.string_value for a in rs.resource.attributes if a.key == "backend"), "?"
            )
            for ss in rs.scope_spans:
                for span in ss.spans:
                    names[span.name] += 1
                    where.setdefault(span.trace_id, set()).add(backend)
    return names, where


async def send_sdk_traces(port: int, first: int, n_traces: int, spans: int) -> None:
    """Spans from the OpenTelemetry SDK, exported with its OTLP/HTTP exporter (grpcio's
    client in a thread beside the sink's grpc.aio server in this loop stalls)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("lb-test")
    for t in range(first, first + n_traces):
        with tracer.start_as_current_span(f"t{t}-root"):
            for s in range(spans - 1):
                with tracer.start_as_current_span(f"t{t}-s{s}"):
                    pass
    finished = list(memory.get_finished_spans())
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=30)
    try:
        for i in range(0, len(finished), 40):
            result = await asyncio.to_thread(exporter.export, finished[i : i + 40])
            assert result == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def lb_gateway(port: int, backend_port: int) -> str:
    return f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  loadbalancing:
    protocol:
      otlp:
        tls: {{insecure: true}}
        timeout: 20s
        sending_queue: {{queue_size: 10000}}
        retry_on_failure: {{initial_interval: 0.1s, max_interval: 0.2s, max_elapsed_time: 0}}
    resolver:
      dns: {{hostname: tier2.test, port: {backend_port}, interval: 0.1s, timeout: 1s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [loadbalancing]}}
"""


def lb_exporter(service: Any) -> Any:
    return next(
        n.component
        for n in service.graph.nodes
        if type(n.component).__name__ == "LoadBalancingExporter"
    )


@pytest.mark.slow
async def test_three_gateways_one_leaves_one_joins_exact_counts(tmp_path: Path) -> None:
    """Three gateway processes behind one name: one is dropped from the name while it is
    stopped (what was sent to it is retried, then re-routed), another joins, and every span
    arrives once, each trace through a single backend."""
    port = free_port()
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    names = {"tier2.test": ips[:2]}

    async def lookup(hostname: str) -> list[str]:
        # the name service of the test: the backends and the traffic are real
        return list(names[hostname])

    async with recording_backend() as sink:
        gws = {ip: start_backend(tmp_path, ip, port, sink.grpc_port) for ip in ips}
        try:
            for gw in gws.values():
                await asyncio.to_thread(gw.wait_ready)
            lb_port = free_port()
            async with running_service(lb_gateway(lb_port, port), tmp_path) as service:
                exporter = lb_exporter(service)
                exporter.dns.lookup = lookup
                await exporter._resolve_once()
                assert exporter.ring.endpoints == [f"{ip}:{port}" for ip in ips[:2]]

                await send_sdk_traces(lb_port, 0, 40, 5)
                # the second backend stops: sends to it fail and are retried ...
                await asyncio.to_thread(gws[ips[1]].stop)
                await send_sdk_traces(lb_port, 40, 40, 5)
                await asyncio.sleep(0.3)
                # ... until it leaves the name and a third one joins: re-routed
                names["tier2.test"] = [ips[0], ips[2]]
                await wait_until(
                    lambda: len(exporter.ring) == 2 and ips[2] in str(exporter.ring.endpoints)
                )
                assert exporter.rerouted > 0
                await send_sdk_traces(lb_port, 80, 40, 5)
                names["tier2.test"] = ips
                await wait_until(lambda: len(exporter.ring) == 3)
                gws[ips[1]] = start_backend(tmp_path, ips[1], port, sink.grpc_port)
                await asyncio.to_thread(gws[ips[1]].wait_ready)
                await send_sdk_traces(lb_port, 120, 40, 5)

                async def delivered() -> None:
                    while len(spans_by_backend(sink)[0]) < 800:
                        await asyncio.sleep(0.05)

                try:
                    await asyncio.wait_for(delivered(), 30)
                except TimeoutError:
                    counts, _ = spans_by_backend(sink)
                    got = {int(n.split("-")[0][1:]) for n in counts}
                    held = [
                        (b.endpoint, len(b.queue), len(b.current))
                        for b in exporter.backends.values()
                    ]
                    raise AssertionError(
                        f"{len(counts)} spans delivered; missing traces "
                        f"{sorted(set(range(160)) - got)}; held {held}"
                    ) from None
                await asyncio.sleep(0.3)
                counts, where = spans_by_backend(sink)
                assert len(counts) == 800 and set(counts.values()) == {1}
                assert len(where) == 160
                rerouted = [k for k, v in where.items() if len(v) > 1]
                assert not rerouted, "a trace was split across backends"
                used = Counter(next(iter(v)) for v in where.values())
                assert set(used) == set(ips)
                assert exporter.rerouted > 0
        finally:
            for gw in gws.values():
                gw.__exit__()


def lb_static(port: int, backends: list[int], queue: str) -> str:
    hostnames = ", ".join(f'"127.0.0.1:{p}"' for p in backends)
    return f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  loadbalancing:
    protocol:
      otlp:
        tls: {{insecure: true}}
        sending_queue: {queue}
        retry_on_failure: {{initial_interval: 0.05s, max_interval: 0.1s, max_elapsed_time: 0}}
    resolver: {{static: {{hostnames: [{hostnames}]}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [loadbalancing]}}
"""


async def test_without_a_queue_consume_returns_once_every_backend_has_its_part(
    tmp_path: Path,
) -> None:
    from pipeline.pdata import Traces

    async with recording_backend() as a, recording_backend() as b:
        config = lb_static(free_port(), [a.grpc_port, b.grpc_port], "{enabled: false}")
        async with running_service(config, tmp_path) as service:
            exporter = lb_exporter(service)
            req = traces_request(40, 3)
            await exporter.consume(Traces(req.SerializeToString()))
            # nothing waits: both backends already have their share
            assert a.span_count() + b.span_count() == 120
            assert a.span_count() and b.span_count()
            ids_a = {s.trace_id for s in a.spans}
            assert not ids_a & {s.trace_id for s in b.spans}


async def test_a_full_backend_queue_refuses_the_whole_request(tmp_path: Path) -> None:
    from pipeline import RetryableError
    from pipeline.pdata import Traces

    async with recording_backend() as a, recording_backend() as b:
        b.respond = lambda _: ("grpc", 14, "unavailable", ())  # b refuses: its queue fills
        config = lb_static(
            free_port(), [a.grpc_port, b.grpc_port], "{queue_size: 1, num_consumers: 1}"
        )
        async with running_service(config, tmp_path) as service:
            exporter = lb_exporter(service)
            req = traces_request(40, 3)
            raw = req.SerializeToString()
            mine = f"127.0.0.1:{a.grpc_port}"
            share = sum(
                1
                for rs in req.resource_spans
                for ss in rs.scope_spans
                for sp in ss.spans
                if exporter.ring.endpoint_for(sp.trace_id) == mine
            )
            assert 0 < share < 120
            await exporter.consume(Traces(raw))  # in flight to b (retrying)
            await wait_until(lambda: b.attempts > 0)
            await exporter.consume(Traces(raw))  # queued for b
            await wait_until(lambda: a.span_count() == 2 * share)
            state = exporter.exporter_state()
            assert (state.queue_size, state.queue_capacity) == (1, 2)
            with pytest.raises(RetryableError, match="queue of backend"):
                await exporter.consume(Traces(raw))
            await asyncio.sleep(0.2)
            # nothing of the refused request went anywhere
            assert a.span_count() == 2 * share
            b.respond = None
            await wait_until(lambda: a.span_count() + b.span_count() == 240)
