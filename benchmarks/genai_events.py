"""Micro-benchmark: CPU per GenAI event of the agent components' logs path, in-process, side
by side with the span path on the same inference calls.

Each call is one inference span (``chat``, model, provider, usage, workflow stamp) and one
``gen_ai.client.inference.operation.details`` event (the same attributes and usage, the
span's trace and span id, a 1 KiB content attribute as openai-v2 writes), shaped as the
OpenTelemetry SDK's openai-v2 instrumentation sends them. Requests of ``--per-request`` items.
Reported: process CPU microseconds per item (median of ``--repeat`` runs) of

* ``agentmetrics spans``: ``consume`` of the span requests alone (no logs input);
* ``agentmetrics spans (logs input)``: the same with a logs input (spans remembered for the join);
* ``agentmetrics events``: ``consume`` of the event requests (events first: each held, then
  joined to its span: the span wins);
* ``workflow logs``: the ``workflow`` processor of a logs pipeline on the event requests
  whose traces were released (each stamped at once).

    python -m benchmarks.genai_events --calls 20000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline import Kind, Logs, Payload, Traces
from pipeline.testing import create_settings
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.logs import TraceLink, WorkflowLogsProcessor


class Sink:
    mutates_data = False

    async def consume(self, data: Payload) -> None:
        pass


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def attributes() -> list[KeyValue]:
    return [
        kv("gen_ai.operation.name", "chat"),
        kv("gen_ai.provider.name", "openai"),
        kv("gen_ai.request.model", "gpt-4o-mini"),
        kv("gen_ai.response.model", "gpt-4o-mini"),
        kv("gen_ai.usage.input_tokens", 42),
        kv("gen_ai.usage.output_tokens", 17),
        kv("workflow.type", "research"),
        kv("workflow.agent.id", "planner"),
    ]


def requests(calls: int, per_request: int) -> tuple[list[bytes], list[bytes]]:
    spans, logs = [], []
    content = kv("gen_ai.output.messages", "x" * 1024)
    for start in range(0, calls, per_request):
        treq = ExportTraceServiceRequest()
        ss = treq.resource_spans.add().scope_spans.add()
        lreq = ExportLogsServiceRequest()
        sl = lreq.resource_logs.add().scope_logs.add()
        for i in range(start, min(start + per_request, calls)):
            trace_id = (i + 1).to_bytes(16, "big")
            span_id = (i + 1).to_bytes(8, "big")
            sp = ss.spans.add(
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=b"\x01" * 8,
                name="chat gpt-4o-mini",
                kind=3,
                start_time_unix_nano=1_700_000_000_000_000_000,
                end_time_unix_nano=1_700_000_000_300_000_000,
            )
            sp.attributes.extend(attributes())
            lr = sl.log_records.add(
                trace_id=trace_id,
                span_id=span_id,
                event_name="gen_ai.client.inference.operation.details",
            )
            lr.attributes.extend([*attributes(), content])
        spans.append(treq.SerializeToString())
        logs.append(lreq.SerializeToString())
    return spans, logs


def cpu() -> float:
    return time.process_time()


async def run_once(spans: list[bytes], logs: list[bytes], calls: int) -> dict[str, float]:
    out: dict[str, float] = {}
    cfg = AgentMetricsConfig.model_validate({"metrics_flush_interval": "0s"})

    def connector() -> AgentMetricsConnector:
        settings = create_settings(Kind.CONNECTOR, "agentmetrics")
        return AgentMetricsConnector(settings, cfg, Sink())

    conn = connector()
    t0 = cpu()
    for raw in spans:
        await conn.consume(Traces(raw))
    out["agentmetrics spans"] = (cpu() - t0) / calls * 1e6

    conn = connector()
    conn.accepts_logs = True
    t0 = cpu()
    for raw in spans:
        await conn.consume(Traces(raw))
    out["agentmetrics spans (logs input)"] = (cpu() - t0) / calls * 1e6

    conn = connector()
    conn.accepts_logs = True
    t0 = cpu()
    for raw in logs:
        await conn.consume(Logs(raw))
    out["agentmetrics events"] = (cpu() - t0) / calls * 1e6
    for raw in spans:  # (the join's other half: not timed)
        await conn.consume(Traces(raw))
    assert len(conn.events) == 0

    link = TraceLink()

    class Store:
        held: dict[bytes, Any] = {}
        released = {
            (i + 1).to_bytes(16, "big"): (("wf", "research", "planner", "success", "simple"), b"")
            for i in range(calls)
        }

    store = Store()
    link.held_by(store)
    proc = WorkflowLogsProcessor(
        create_settings(Kind.PROCESSOR, "workflow"), WorkflowConfig(), Sink(), link
    )
    t0 = cpu()
    for raw in logs:
        await proc.consume(Logs(raw))
    out["workflow logs"] = (cpu() - t0) / calls * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--per-request", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    spans, logs = requests(args.calls, args.per_request)
    asyncio.run(run_once(spans, logs, args.calls))  # warm-up (imports, caches): not counted
    runs = [asyncio.run(run_once(spans, logs, args.calls)) for _ in range(args.repeat)]
    print(f"{args.calls} calls, {args.per_request} per request, median of {args.repeat} runs")
    print("| path | CPU µs per item (median) | min | max |")
    print("|---|---|---|---|")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(
            f"| {key} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
        )


if __name__ == "__main__":
    main()
