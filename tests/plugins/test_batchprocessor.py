from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import Kind, Logs, Payload, PermanentError, RetryableError, Signal, Traces
from pipeline.pdata import iter_log_records
from pipeline.testing import SinkConsumer, create_settings
from plugins.batchprocessor import BatchConfig, BatchProcessor


def spans(n: int, prefix: str = "s") -> Traces:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(n):
        ss.spans.add(name=f"{prefix}{i}")
    return Traces(req.SerializeToString())


def names(payloads: list[Payload]) -> list[str]:
    return [
        s.name
        for p in payloads
        for rs in p.message().resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def make(sink: object, **options: object) -> BatchProcessor:
    config = BatchConfig.model_validate(options)
    return BatchProcessor(create_settings(Kind.PROCESSOR, "batch"), config, Signal.TRACES, sink)  # type: ignore[arg-type]


async def test_size_trigger_and_max_size_split() -> None:
    sink = SinkConsumer()
    proc = make(sink, timeout="10s", send_batch_size=10, send_batch_max_size=15)
    await proc.start(None)  # type: ignore[arg-type]
    for i in range(4):
        await proc.consume(spans(6, f"r{i}-"))
    await asyncio.sleep(0.05)
    sizes = [p.item_count() for p in sink.received]
    assert sum(sizes) >= 10 and all(s <= 15 for s in sizes)
    await proc.shutdown()
    assert sink.item_count() == 24
    assert names(sink.received) == [f"r{i}-{j}" for i in range(4) for j in range(6)]
    hist = proc.settings.telemetry.service.value(
        "otelcol_processor_batch_batch_send_size_sum", processor="batch"
    )
    assert hist == 24


async def test_timeout_trigger() -> None:
    sink = SinkConsumer()
    proc = make(sink, timeout="50ms", send_batch_size=1000)
    await proc.start(None)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await proc.consume(spans(3))
    while not sink.received:
        await asyncio.sleep(0.005)
    assert 0.04 <= loop.time() - started < 1.0
    assert sink.item_count() == 3
    await proc.shutdown()
    assert (
        proc.settings.telemetry.service.value(
            "otelcol_processor_batch_timeout_trigger_send_total", processor="batch"
        )
        == 1
    )


async def test_a_batch_wakes_its_task_once_and_makes_no_task() -> None:
    """The batch's timeout is a loop timer set by the consume that begins the batch: the
    batching task is woken once per batch (when it is due), not to set the timer, and no task
    or timeout is made per batch. Batches after the first (and one begun while the previous
    was being sent) are timed from their own first item."""
    sink = Flaky(0)
    proc = make(sink, timeout="40ms", send_batch_size=1000)
    await proc.start(None)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    wakes = 0
    set_wake = proc._wake.set

    def counting_set() -> None:
        nonlocal wakes
        wakes += 1
        set_wake()

    proc._wake.set = counting_set  # type: ignore[method-assign]
    before = asyncio.all_tasks()
    loop = asyncio.get_running_loop()
    for batch in range(3):
        started = loop.time()
        for i in range(3):
            await proc.consume(spans(2, f"b{batch}-{i}-"))
            assert asyncio.all_tasks() == before
            await asyncio.sleep(0.005)
        while len(sink.sink.received) < batch + 1:
            await asyncio.sleep(0.002)
        assert 0.04 - 0.005 <= loop.time() - started < 1.0
        assert wakes == batch + 1
    assert [p.item_count() for p in sink.sink.received] == [6, 6, 6]
    assert names(sink.sink.received) == [
        f"b{b}-{i}-{j}" for b in range(3) for i in range(3) for j in range(2)
    ]
    await proc.shutdown()
    assert proc._due is None


class Flaky:
    """Refuses the first ``failures`` batches with a retryable error."""

    mutates_data = False

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sink = SinkConsumer()

    async def consume(self, data: Payload) -> None:
        if self.failures:
            self.failures -= 1
            raise RetryableError("queue full", retry_after=0.01)
        await self.sink.consume(data)


async def test_pushback_holds_data_then_refuses_new_data() -> None:
    downstream = Flaky(failures=10**9)
    proc = make(downstream, timeout="0s", send_batch_size=10)
    await proc.start(None)  # type: ignore[arg-type]
    accepted = 0
    with pytest.raises(RetryableError) as err:
        for _ in range(1000):
            await proc.consume(spans(10))
            accepted += 10
            await asyncio.sleep(0)
    assert err.value.resource_exhausted
    assert accepted >= proc.backlog_limit - 10
    downstream.failures = 0  # downstream recovers: everything accepted is delivered
    await proc.shutdown()
    assert downstream.sink.item_count() == accepted


async def test_permanent_refusal_is_counted() -> None:
    class Refuse:
        mutates_data = False

        async def consume(self, data: Payload) -> None:
            raise PermanentError("nope")

    proc = make(Refuse(), timeout="0s")
    await proc.start(None)  # type: ignore[arg-type]
    await proc.consume(spans(4))
    await proc.shutdown()
    assert (
        proc.settings.telemetry.service.value(
            "otelcol_processor_dropped_items_total",
            processor="batch",
            otel_signal="traces",
            reason="refused_permanently",
        )
        == 4
    )


async def test_deadline_drop_is_counted() -> None:
    proc = make(Flaky(failures=10**9), timeout="0s")
    await proc.start(None)  # type: ignore[arg-type]
    await proc.consume(spans(7))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(proc.shutdown(), timeout=0.2)
    assert (
        proc.settings.telemetry.service.value(
            "otelcol_processor_dropped_items_total",
            processor="batch",
            otel_signal="traces",
            reason="shutdown_deadline",
        )
        == 7
    )


def test_config_rules() -> None:
    with pytest.raises(ValueError, match="send_batch_max_size"):
        BatchConfig.model_validate({"send_batch_size": 10, "send_batch_max_size": 5})
    cfg = BatchConfig()
    assert (cfg.timeout, cfg.send_batch_size, cfg.send_batch_max_size) == (0.2, 8192, 0)


@pytest.mark.parametrize("max_items", [1, 7, 10, 64])
def test_cut_fills_batches_exactly_and_keeps_order(max_items: int) -> None:
    import random

    from plugins.batchprocessor import cut

    rng = random.Random(max_items)
    sizes = [rng.choice([1, 3, 6, 10, 25, 130]) for _ in range(40)]
    payloads = [spans(n, f"p{i}-") for i, n in enumerate(sizes)]
    parts = cut(payloads, max_items)
    counts = [p.item_count() for p in parts]
    assert counts[:-1] == [max_items] * (len(counts) - 1)
    assert 0 < counts[-1] <= max_items and sum(counts) == sum(sizes)
    # the counts are the real ones, and every span is there once, in order
    assert [len(names([p])) for p in parts] == counts
    assert names(parts) == [f"p{i}-{j}" for i, n in enumerate(sizes) for j in range(n)]
    assert cut(payloads, 0)[0].item_count() == sum(sizes)


def test_cut_metrics_never_exceeds_a_batch_except_one_oversized_metric() -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from pipeline import Metrics
    from plugins.batchprocessor import cut

    def metrics(points: list[int], prefix: str) -> Metrics:
        req = ExportMetricsServiceRequest()
        sm = req.resource_metrics.add().scope_metrics.add()
        for i, n in enumerate(points):
            m = sm.metrics.add(name=f"{prefix}{i}")
            for v in range(n):
                m.gauge.data_points.add(as_int=v)
        return Metrics(req.SerializeToString())

    payloads = [metrics([3, 4], "a"), metrics([2, 12, 1], "b"), metrics([5, 5, 5], "c")]
    parts = cut(payloads, 10)
    counts = [p.item_count() for p in parts]
    assert sum(counts) == 37
    # the 12-point metric is alone; every other batch is within the limit
    assert [c for c in counts if c > 10] == [12]

    def metric_list(p: Payload) -> list[object]:
        return [
            m for rm in p.message().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        ]

    assert [m.name for p in parts for m in metric_list(p)] == [  # type: ignore[attr-defined]
        "a0", "a1", "b0", "b1", "b2", "c0", "c1", "c2",
    ]  # fmt: skip
    assert counts == [
        sum(len(m.gauge.data_points) for m in metric_list(p))  # type: ignore[attr-defined]
        for p in parts
    ]


def log_records(n: int, prefix: str = "l") -> Logs:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(n):
        sl.log_records.add(event_name=f"{prefix}{i}").body.string_value = f"{prefix}{i}"
    return Logs(req.SerializeToString())


async def test_logs_batched_and_split_at_max_size_in_order() -> None:
    sink = SinkConsumer()
    config = BatchConfig.model_validate(
        {"timeout": "10s", "send_batch_size": 10, "send_batch_max_size": 15}
    )
    proc = BatchProcessor(create_settings(Kind.PROCESSOR, "batch"), config, Signal.LOGS, sink)
    await proc.start(None)  # type: ignore[arg-type]
    for i in range(5):
        await proc.consume(log_records(7, f"r{i}-"))
    await proc.shutdown()
    sizes = [p.item_count() for p in sink.received]
    assert sum(sizes) == 35 and all(s <= 15 for s in sizes) and max(sizes) == 15
    assert all(isinstance(p, Logs) for p in sink.received)
    got = [
        lr.event_name
        for p in sink.received
        if isinstance(p, Logs)
        for _, _, lr in iter_log_records(p)
    ]
    assert got == [f"r{i}-{j}" for i in range(5) for j in range(7)]
