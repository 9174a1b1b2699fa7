"""The agent workload through one gateway, and through tier 1 + two tier-2 gateways (by the
``loadbalancing`` exporter, and by Kafka with a consumer group of two), gives the same derived
metrics: every delta the ``agentmetrics`` connector exports, summed per series over the
gateways, is the single gateway's (exact counts). The spans of a trace are spread over the
requests, so a tier that split a trace would count it twice or wrongly."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import Signal
from pipeline.pdata import Traces
from tests.kafka_support import broker
from tests.otlp_corpus import agent_requests
from tests.otlp_support import RecordingBackend, recording_backend
from tests.support import free_port, running_service, wait_until


def _unique_span_ids(raw: bytes) -> bytes:
    """agent_requests numbers spans 1..n in every trace: make span ids unique across traces
    (the A2A latency pairs a consumer with its producer by span id, across traces)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    def fix(trace_id: bytes, span_id: bytes) -> bytes:
        return trace_id[-4:] + span_id[-4:] if span_id else span_id

    req = ExportTraceServiceRequest.FromString(raw)
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                sp.span_id = fix(sp.trace_id, sp.span_id)
                sp.parent_span_id = fix(sp.trace_id, sp.parent_span_id)
                for link in sp.links:
                    link.span_id = fix(link.trace_id, link.span_id)
    return req.SerializeToString()


# one seed: the trace ids of agent_requests are the same for every seed
WORKLOAD = [_unique_span_ids(r) for r in agent_requests(1, count=6)]


def tier2(receiver: str, sink: RecordingBackend) -> str:
    return f"""
receivers:
{receiver}
processors:
  workflow: {{wait_duration: 0.3s}}
connectors:
  agentmetrics:
    metrics_flush_interval: 0.2s
    aggregation_temporality: AGGREGATION_TEMPORALITY_DELTA
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink.grpc_port}"
    tls: {{insecure: true}}
    sending_queue: {{enabled: false}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [{receiver.split(":")[0].strip()}]
      processors: [workflow]
      exporters: [agentmetrics]
    metrics: {{receivers: [agentmetrics], exporters: [otlp]}}
"""


def otlp_receiver(port: int) -> str:
    return f'  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}'


def kafka_receiver(bootstrap: str) -> str:
    return (
        f'  kafka: {{brokers: ["{bootstrap}"], group_id: tier2, initial_offset: earliest, '
        "session_timeout: 6s, heartbeat_interval: 1s, message_marking: {after: true}}"
    )


def totals(sink: RecordingBackend) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple]:
    """Per (metric, attributes): the summed deltas (sums: value; histograms: count, sum and
    bucket counts). Gauges (ratios, levels) are left out: they do not add up."""
    out: dict[Any, list[float]] = defaultdict(list)
    for req in list(sink.metrics):
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind not in ("sum", "histogram"):
                        continue
                    for p in getattr(m, kind).data_points:
                        attrs = tuple(sorted((a.key, str(a.value).strip()) for a in p.attributes))
                        key = (m.name, attrs)
                        if kind == "sum":
                            vals = [p.as_int if p.HasField("as_int") else p.as_double]
                        else:
                            vals = [p.count, round(p.sum, 6), *p.bucket_counts]
                        acc = out[key]
                        if not acc:
                            acc.extend([0.0] * len(vals))
                        for i, v in enumerate(vals):
                            acc[i] += v
    return {k: tuple(round(x, 6) for x in v) for k, v in out.items()}


async def push(service: Any) -> None:
    receiver = next(n.component for n in service.graph.nodes if n.kind.value == "receiver")
    for raw in WORKLOAD:
        await receiver.push_payload(Signal.TRACES, Traces(raw))


async def settle(sink: RecordingBackend) -> None:
    """Until the exported totals stop changing (the workflow released every trace and the
    connector flushed it)."""
    last: Any = None
    stable = 0
    while stable < 6:
        await asyncio.sleep(0.25)
        now = totals(sink)
        stable = stable + 1 if now == last and now else 0
        last = now


@contextlib.asynccontextmanager
async def tier2_gateways(
    receivers: list[str], sink: RecordingBackend, tmp: Path
) -> AsyncIterator[list[Any]]:
    async with contextlib.AsyncExitStack() as stack:
        services = []
        for i, r in enumerate(receivers):
            d = tmp / f"tier2-{i}"
            d.mkdir()
            services.append(await stack.enter_async_context(running_service(tier2(r, sink), d)))
        yield services


def component(service: Any, name: str) -> Any:
    return next(n.component for n in service.graph.nodes if type(n.component).__name__ == name)


async def one_gateway(tmp: Path) -> dict[Any, tuple]:
    (tmp / "one").mkdir()
    async with recording_backend() as sink:
        async with running_service(tier2(otlp_receiver(free_port()), sink), tmp / "one") as svc:
            await push(svc)
            await settle(sink)
        return totals(sink)


@pytest.mark.slow
async def test_loadbalancing_tier_gives_the_metrics_of_one_gateway(tmp_path: Path) -> None:
    expected = await one_gateway(tmp_path)
    assert expected, "the workload derived no metrics"
    ports = [free_port(), free_port()]
    async with recording_backend() as sink:
        async with tier2_gateways([otlp_receiver(p) for p in ports], sink, tmp_path):
            hostnames = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
            tier1 = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
exporters:
  loadbalancing:
    protocol: {{otlp: {{tls: {{insecure: true}}}}}}
    resolver: {{static: {{hostnames: [{hostnames}]}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [loadbalancing]}}
"""
            d = tmp_path / "tier1"
            d.mkdir()
            async with running_service(tier1, d) as lb:
                await push(lb)
                await settle(sink)
                outcome = component(lb, "LoadBalancingExporter")
                # both tier-2 gateways own some of the traces
                owners = {
                    outcome.ring.endpoint_for(sp.trace_id)
                    for raw in WORKLOAD
                    for sp in Traces(raw).message().resource_spans[0].scope_spans[0].spans
                }
                assert len(owners) == 2
        got = totals(sink)
    assert got == expected
    # both tier-2 gateways had a share (the counts are not all from one)
    assert sink.metrics


@pytest.mark.slow
async def test_kafka_tier_gives_the_metrics_of_one_gateway(tmp_path: Path) -> None:
    expected = await one_gateway(tmp_path)
    with broker() as b:
        b.create_topic("otlp_spans", 4)
        async with recording_backend() as sink:
            async with tier2_gateways([kafka_receiver(b.bootstrap)] * 2, sink, tmp_path) as gws:
                receivers = [component(g, "KafkaReceiver") for g in gws]
                # the group settled: each member has two of the four partitions
                await wait_until(lambda: [len(r.assigned) for r in receivers] == [2, 2], within=60)
                tier1 = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
exporters:
  kafka: {{brokers: ["{b.bootstrap}"], partition_traces_by_id: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [kafka]}}
"""
                d = tmp_path / "tier1"
                d.mkdir()
                async with running_service(tier1, d) as producer:
                    await push(producer)
                await wait_until(lambda: bool(totals(sink)), within=60)
                await settle(sink)
                assert all(r.messages > 0 for r in receivers)
            got = totals(sink)
    assert got == expected
