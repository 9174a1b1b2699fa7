"""``tail_sampling`` in the shipped config ``configs/agent-gateway-sampled.yaml``, fed by the
OpenTelemetry Python SDK: 1,000 workflows (5 % failed, 3 % over their SLA, 2 % with a failed
tool call they recovered from, token usage on every model call). Every failed, slow and
tool-failed workflow is kept, exactly the probabilistic share of the rest the Collector's hash
selects, the derived metrics count all 1,000, late spans follow their trace's decision, and
the traces are held once (by the workflow processor; tail_sampling decides at once)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from plugins.tailsamplingprocessor.policies import fnv1a_64, probabilistic_threshold
from tests.otlp_support import recording_backend
from tests.support import ROOT, free_port, running_service, wait_until

WORKFLOWS = 1000
SPANS = 4  # root, agent, tool call, chat
BASE = 1_700_000_000_000_000_000


def kind_of(i: int) -> str:
    if i % 20 == 0:
        return "failed"  # 50
    if i % 100 in (1, 2, 3):
        return "slow"  # 30
    if i % 100 in (5, 6):
        return "tool_failed"  # 20
    return "ok"


def send_workflows(port: int) -> dict[int, bytes]:
    provider = TracerProvider(resource=Resource.create({"service.name": "agents"}))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True),
            max_queue_size=10_000,
            max_export_batch_size=512,
        )
    )
    tracer = provider.get_tracer("workload")
    ids: dict[int, bytes] = {}
    for i in range(WORKFLOWS):
        kind = kind_of(i)
        start = BASE + i * 1_000_000_000
        duration = 40_000_000_000 if kind == "slow" else 2_000_000_000
        root = tracer.start_span(
            "workflow.support",
            start_time=start,
            attributes={"workflow.id": f"wf-{i}", "gen_ai.agent.id": f"agent-{i % 3}"},
        )
        ids[i] = root.get_span_context().trace_id.to_bytes(16, "big")
        ctx = trace_api.set_span_in_context(root)
        agent = tracer.start_span(
            "invoke_agent support", context=ctx, start_time=start + 1000,
            attributes={"gen_ai.operation.name": "invoke_agent"},
        )  # fmt: skip
        actx = trace_api.set_span_in_context(agent)
        tool = tracer.start_span(
            "execute_tool search", context=actx, kind=SpanKind.CLIENT, start_time=start + 2000,
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
        )  # fmt: skip
        if kind in ("failed", "tool_failed"):
            tool.set_status(Status(StatusCode.ERROR, "connection refused"))
            tool.set_attribute("error.type", "ConnectionRefusedError")
        tool.end(end_time=start + 500_000_000)
        chat = tracer.start_span(
            "chat gpt-4o", context=actx, kind=SpanKind.CLIENT, start_time=start + 600_000_000,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                        "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300},
        )  # fmt: skip
        chat.end(end_time=start + 1_500_000_000)
        agent.end(end_time=start + duration - 1000)
        if kind == "failed":
            root.set_status(Status(StatusCode.ERROR, "tool failed"))
        root.end(end_time=start + duration)
    provider.shutdown()
    return ids


def send_late(port: int, trace_ids: list[bytes]) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "agents"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
    )
    tracer = provider.get_tracer("workload")
    for tid in trace_ids:
        parent = NonRecordingSpan(
            SpanContext(int.from_bytes(tid, "big"), 0x1234, True, TraceFlags(TraceFlags.SAMPLED))
        )
        with tracer.start_as_current_span(
            "late callback", context=trace_api.set_span_in_context(parent)
        ):
            pass
    provider.shutdown()


def metric_total(requests: list[Any], name: str) -> float:
    """The sum over series of the last value of a cumulative sum named ``name``."""
    last: dict[tuple[Any, ...], float] = {}
    for req in requests:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != name:
                        continue
                    for dp in m.sum.data_points:
                        key = tuple(sorted((kv.key, str(kv.value)) for kv in dp.attributes))
                        last[key] = dp.as_int or dp.as_double
    return sum(last.values())


@pytest.fixture
def sampled_config(monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    port = free_port()
    monkeypatch.setenv("OTLP_GRPC_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv("WORKFLOW_WAIT", "300ms")
    monkeypatch.setenv("AGENT_METRICS_FLUSH", "200ms")
    monkeypatch.setenv("PIPELINE_TELEMETRY_ADDRESS", f"127.0.0.1:{free_port()}")
    return (ROOT / "configs" / "agent-gateway-sampled.yaml").read_text(), port


async def test_known_mix_one_hold_metrics_before_sampling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sampled_config: tuple[str, int]
) -> None:
    text, port = sampled_config
    async with recording_backend() as backend:
        monkeypatch.setenv("OTLP_EXPORTER_ENDPOINT", f"127.0.0.1:{backend.grpc_port}")
        async with running_service(text, tmp_path) as service:
            tel = service.telemetry
            held_max = 0.0

            async def watch() -> None:
                nonlocal held_max
                while True:
                    held_max = max(
                        held_max,
                        tel.value(
                            "otelcol_processor_tail_sampling_sampling_spans_on_memory",
                            processor="tail_sampling",
                        ),
                    )
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch())
            ids = await asyncio.to_thread(send_workflows, port)
            threshold = probabilistic_threshold(0.10)
            salt = b"default-hash-seed"
            must = {i for i in ids if kind_of(i) != "ok"}
            shared = {i for i in ids if i not in must and fnv1a_64(salt + ids[i]) <= threshold}
            expected = {ids[i] for i in must | shared}
            await wait_until(
                lambda: tel.value(
                    "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
                    processor="tail_sampling", sampled="false",
                ) + tel.value(
                    "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
                    processor="tail_sampling", sampled="true",
                ) >= WORKFLOWS,
                within=30,
            )  # fmt: skip
            await wait_until(lambda: backend.span_count() >= len(expected) * SPANS, within=15)
            await wait_until(
                lambda: metric_total(backend.metrics, "agent_workflow_executions") >= WORKFLOWS,
                within=15,
            )
            # late spans: one for a kept trace, one for a dropped one
            dropped_id = next(ids[i] for i in ids if ids[i] not in expected)
            kept_id = ids[0]
            await asyncio.to_thread(send_late, port, [kept_id, dropped_id])
            await wait_until(lambda: backend.span_count() >= len(expected) * SPANS + 1, within=15)
            await wait_until(
                lambda: tel.value(
                    "otelcol_processor_tail_sampling_late_spans_total",
                    processor="tail_sampling", sampled="false",
                ) >= 1
            )  # fmt: skip
            watcher.cancel()
            counts = {
                when: tel.value(
                    "otelcol_processor_tail_sampling_decisions_total",
                    processor="tail_sampling",
                    when=when,
                )
                for when in ("released", "decision_wait", "num_traces")
            }
            per_policy = {
                name: tel.value(
                    "otelcol_processor_tail_sampling_count_traces_sampled_total",
                    processor="tail_sampling",
                    policy=name,
                    sampled="true",
                )
                for name in ("failed-workflows", "over-sla", "tool-call-failed", "expensive")
            }
    kept = {bytes(s.trace_id) for s in backend.spans}
    assert kept == expected
    late = [s for s in backend.spans if s.name == "late callback"]
    assert [bytes(s.trace_id) for s in late] == [kept_id]
    assert backend.span_count() == len(expected) * SPANS + 1
    # the share of the rest: 10 % of 900 within 5 sigma
    assert abs(len(shared) - 90) < 5 * (900 * 0.1 * 0.9) ** 0.5
    # the metrics derived before sampling count every workflow
    assert metric_total(backend.metrics, "agent_workflow_executions") == WORKFLOWS
    # one hold: every trace came whole from the workflow processor and was decided at once
    assert counts == {"released": WORKFLOWS, "decision_wait": 0, "num_traces": 0}
    assert held_max == 0
    assert per_policy == {
        "failed-workflows": 50,
        "over-sla": 30,
        "tool-call-failed": 70,
        "expensive": 0,
    }
