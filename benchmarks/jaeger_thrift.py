"""CPU cost per span of the Jaeger paths (no network): OTLP -> Jaeger Thrift (the exporter's
translate + encode, HTTP and UDP framings) and Thrift -> OTLP (the receiver's decode +
translate).

Usage: python -m benchmarks.jaeger_thrift [--spans 5000] [--repeat 5]
Prints the best of ``repeat`` runs in microseconds per span.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from plugins._jaegerthrift.model import (
    ACCELERATED,
    EmitBatchFramer,
    decode_batch,
    decode_emit_batch,
    encode_struct,
)
from plugins._jaegerthrift.translate import batch_to_request, traces_to_batches


def make_request(n: int) -> ExportTraceServiceRequest:
    """Spans shaped like an agent's: 6 attributes, one event, a parent."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "agent"
    ss = rs.scope_spans.add()
    ss.scope.name = "agent.lib"
    for i in range(n):
        span = ss.spans.add(
            trace_id=i.to_bytes(16, "big"),
            span_id=(i + 1).to_bytes(8, "big"),
            parent_span_id=b"\x01" * 8,
            name="llm.call",
            kind=3,
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_100_000_000 + i,
        )
        for k in range(5):
            span.attributes.add(key=f"gen_ai.attr{k}").value.string_value = "value-" * 3
        span.attributes.add(key="tokens").value.int_value = 812
        span.events.add(name="token", time_unix_nano=1_700_000_000_050_000_000)
    return req


def best(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.spans
    req = make_request(n)
    (batch,) = traces_to_batches(req)
    assert batch.process is not None and batch.spans is not None
    body = encode_struct(batch, "binary")
    framer = EmitBatchFramer(batch.process, "compact")
    packet = framer.packet([framer.encode_span(s) for s in batch.spans[:100]])

    results = {
        "export: translate OTLP -> Thrift structs": best(
            args.repeat, lambda: traces_to_batches(req)
        ),
        "export: encode binary (thrift_http body)": best(
            args.repeat, lambda: encode_struct(batch, "binary")
        ),
        "export: encode compact per span (thrift_compact)": best(
            args.repeat, lambda: [framer.encode_span(s) for s in batch.spans or ()]
        ),
        "receive: decode binary Batch": best(args.repeat, lambda: decode_batch(body)),
        "receive: translate Thrift -> OTLP": best(
            args.repeat, lambda: batch_to_request(decode_batch(body))
        ),
    }
    udp = best(args.repeat, lambda: decode_emit_batch(packet, "compact")) / 100
    print(f"accelerated thrift protocols: {ACCELERATED}; {n} spans, {len(body) / n:.0f} B/span")
    for name, seconds in results.items():
        print(f"{name:52s} {seconds / n * 1e6:7.2f} us/span")
    print(f"{'receive: decode compact datagram (100 spans)':52s} {udp * 1e6:7.2f} us/span")


if __name__ == "__main__":
    main()
