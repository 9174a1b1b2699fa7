"""Pre-encoded OTLP trace requests for the benchmarks: 1,000 spans per request, 8 string
attributes per span, about 260 bytes per span."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

SPANS_PER_REQUEST = 1000
ATTRIBUTES = (
    ("agent.name", "planner"),
    ("agent.step", "tool"),
    ("tool.name", "web.search"),
    ("llm.model", "gpt-4o"),
    ("http.method", "POST"),
    ("net.peer", "10.0.4.1"),
    ("session.id", "s-8f3a"),
    ("outcome", "success"),
)


def build_request(seed: int, spans: int = SPANS_PER_REQUEST, health_every: int = 0) -> bytes:
    """One encoded ``ExportTraceServiceRequest`` with random IDs; with ``health_every`` N,
    every Nth span is named ``health-check`` (what a filter drops)."""
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value="bench-agent"))
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    start = 1_700_000_000_000_000_000 + seed * 1_000_000_000
    trace_id = rnd.randbytes(16)
    for i in range(spans):
        if i % 10 == 0:
            trace_id = rnd.randbytes(16)
        span = ss.spans.add(
            trace_id=trace_id,
            span_id=rnd.randbytes(8),
            parent_span_id=rnd.randbytes(8),
            name="health-check" if health_every and i % health_every == 0 else f"step-{i % 50}",
            kind=3,
            start_time_unix_nano=start + i * 1000,
            end_time_unix_nano=start + i * 1000 + 250_000,
        )
        for key, value in ATTRIBUTES:
            span.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    return req.SerializeToString()


def request_pool(count: int = 32, health_every: int = 0) -> list[bytes]:
    """Distinct pre-encoded requests to cycle through."""
    return [build_request(seed, health_every=health_every) for seed in range(count)]
