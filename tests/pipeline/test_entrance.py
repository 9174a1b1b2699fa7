"""The engine's entrance of a pipeline's processors without a coroutine where none suspends
(``admit`` / ``consume_now``): the agent pipeline's memory_limiter -> workflow, as a worker's
part enters it (``Graph.pipeline_consumer``)."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import RetryableError, Traces
from pipeline.config import load_config
from pipeline.errors import DataDroppedError
from pipeline.registry import Registry
from pipeline.service import Service
from pipeline.telemetry import SelfTelemetry
from tests.pipeline.test_service import registry  # noqa: F401  (the fixture)
from tests.support import write_config

CONFIG = """
receivers:
  inject:
processors:
  memory_limiter: {check_interval: 1s, limit_mib: 100000}
  workflow: {wait_duration: 30s}
exporters:
  record:
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    traces:
      receivers: [inject]
      processors: [memory_limiter, workflow]
      exporters: [record]
"""


def payload(n: int, first: int = 1) -> Traces:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add()
    for i in range(first, first + n):
        span = spans.spans.add()
        span.name = f"s{i}"
        span.trace_id = i.to_bytes(16, "big")
        span.span_id = i.to_bytes(8, "big")
    return Traces(req.SerializeToString())


@pytest.fixture
async def service(tmp_path: Path, registry: Registry) -> Any:  # noqa: F811
    path = write_config(tmp_path, CONFIG)
    svc = Service(load_config([str(path)], registry), SelfTelemetry())
    await svc.start()
    yield svc
    await svc.shutdown()


def coroutines_started(run: Any) -> list[str]:
    """The coroutine frames run while ``run()`` runs."""
    started: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_flags & inspect.CO_COROUTINE:
            started.append(frame.f_code.co_qualname)  # (none suspends: no resumption)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return started


def step(coro: Any) -> None:
    """One step of ``coro``, which must finish in it."""
    with pytest.raises(StopIteration):
        coro.send(None)


async def test_the_entrance_is_one_coroutine_a_consume(service: Service) -> None:
    entry = service.graph.pipeline_consumer("traces")
    step(entry.consume(payload(3)))  # warm: the counters' series made
    started = coroutines_started(lambda: step(entry.consume(payload(2, first=10))))
    # before: the two entrances, the memory limiter's consume, the count of what it passes
    # on, the workflow processor's consume (five)
    assert started == ["_ProcessorEntry.consume"]
    workflow = next(n.component for n in service.graph.nodes if n.id.type == "workflow")
    assert len(workflow.store.held) == 5 and workflow.store.held_spans == 5
    tel = service.telemetry
    for processor in ("memory_limiter", "workflow"):
        assert (
            tel.value(
                "otelcol_processor_incoming_items_total", processor=processor, otel_signal="traces"
            )
            == 5
        )
    assert (
        tel.value(
            "otelcol_processor_outgoing_items_total",
            processor="memory_limiter",
            otel_signal="traces",
        )
        == 5
    )


async def test_a_refusal_and_a_failure_behave_as_through_consume(service: Service) -> None:
    entry = service.graph.pipeline_consumer("traces")
    nodes = {n.id.type: n.component for n in service.graph.nodes}
    limiter, workflow = nodes["memory_limiter"].limiter, nodes["workflow"]
    limiter.refusing = True
    with pytest.raises(RetryableError) as refused:
        await entry.consume(payload(4))
    assert refused.value.resource_exhausted
    assert not workflow.store.held
    tel = service.telemetry
    assert tel.value("otelcol_processor_refused_spans_total", processor="memory_limiter") == 4
    limiter.refusing = False

    def broken(raw: bytes, now: float) -> Iterator[Any]:
        raise KeyError("broken store")

    workflow.store.ingest = broken  # not a ConsumeError: the engine's isolation drops it
    with pytest.raises(DataDroppedError):
        await entry.consume(payload(1))
    assert (
        tel.value(
            "otelcol_processor_dropped_items_total",
            processor="workflow",
            otel_signal="traces",
            reason="component_error",
        )
        == 1
    )
