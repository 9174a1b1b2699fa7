"""Sends spans with the PyPI ``jaeger-client`` (UDP, compact Thrift, to an agent port) and
prints what it sent as JSON, for tests/plugins/test_jaegerreceiver.py.

Usage: python jaeger_py_client.py PORT
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from jaeger_client import Config
from opentracing import follows_from


def describe(span: Any) -> dict[str, Any]:
    return {
        "name": span.operation_name,
        "trace_id": f"{span.trace_id:032x}",
        "span_id": f"{span.span_id:016x}",
        "parent_id": f"{span.parent_id:016x}" if span.parent_id else None,
        "start_us": int(span.start_time * 1e6),
        # as jaeger_client's thrift conversion computes it
        "duration_us": int((span.end_time - span.start_time) * 1e6),
        "tags": {t.key: [t.vType, t.vStr, t.vLong, t.vDouble, t.vBool] for t in span.tags},
        "logs": [
            {"ts_us": log.timestamp, "fields": {f.key: f.vStr for f in log.fields}}
            for log in span.logs
        ],
        "references": [
            {"type": ref.type, "span_id": f"{ref.referenced_context.span_id:016x}"}
            for ref in (span.references or [])
        ],
    }


def main() -> None:
    port = int(sys.argv[1])
    config = Config(
        config={
            "sampler": {"type": "const", "param": 1},
            "local_agent": {"reporting_host": "127.0.0.1", "reporting_port": port},
            "generate_128bit_trace_id": True,
            "logging": False,
            "reporter_flush_interval": 0.1,
        },
        service_name="py-jaeger-svc",
        validate=True,
    )
    tracer = config.new_tracer()
    sent = []
    root = tracer.start_span("checkout", tags={"span.kind": "server", "http.status_code": 200})
    root.set_tag("ratio", 0.25)
    root.set_tag("cached", True)
    root.set_tag("user", "ada")
    root.log_kv({"event": "cart-loaded", "items": "3"})
    child = tracer.start_span("charge", child_of=root, tags={"span.kind": "client"})
    child.set_tag("error", True)
    time.sleep(0.002)
    child.finish()
    later = tracer.start_span("notify", references=[follows_from(root.context)])
    later.finish()
    root.finish()
    sent = [describe(s) for s in (root, child, later)]
    tracer.close()
    time.sleep(0.5)  # the reporter flushes on its own thread
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
