from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import ExporterHelper, ExporterHelperConfig, Kind, Payload, Signal, Traces
from pipeline.errors import PermanentError, RetryableError
from pipeline.testing import StubHost, create_settings
from tests.support import logged


def spans(n: int) -> Traces:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(n):
        ss.spans.add(name=f"s{i}")
    return Traces(req.SerializeToString())


class Backend:
    def __init__(self) -> None:
        self.failures: list[Exception] = []
        self.delivered = 0
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, data: Payload) -> None:
        self.calls += 1
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.delivered += data.item_count()


def helper(backend: Backend, **options: object) -> ExporterHelper:
    config = ExporterHelperConfig.model_validate(options)
    return ExporterHelper(
        create_settings(Kind.EXPORTER, "test"), Signal.TRACES, config, backend.send
    )


def value(h: ExporterHelper, what: str) -> float:
    return h.settings.telemetry.service.value(
        f"otelcol_exporter_{what}_spans_total", exporter="test"
    )


async def test_retries_honour_the_servers_delay_then_deliver() -> None:
    backend = Backend()
    backend.failures = [RetryableError("busy", retry_after=0.05), RetryableError("busy")]
    h = helper(backend, retry_on_failure={"initial_interval": "10ms", "max_interval": "20ms"})
    await h.start(StubHost())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await h.consume(spans(5))
    await h.shutdown()
    assert backend.delivered == 5 and backend.calls == 3
    assert loop.time() - t0 >= 0.05
    assert value(h, "sent") == 5 and value(h, "retried") == 10 and value(h, "send_failed") == 0


async def test_permanent_errors_drop_and_count() -> None:
    backend = Backend()
    backend.failures = [PermanentError("bad data")]
    h = helper(backend)
    await h.start(StubHost())
    await h.consume(spans(3))
    await h.shutdown()
    assert backend.delivered == 0 and backend.calls == 1
    assert value(h, "send_failed") == 3


async def test_retries_stop_after_max_elapsed_time() -> None:
    backend = Backend()
    backend.failures = [RetryableError("down")] * 100
    h = helper(
        backend,
        retry_on_failure={
            "initial_interval": "10ms",
            "max_interval": "10ms",
            "max_elapsed_time": "50ms",
        },
    )
    await h.start(StubHost())
    await h.consume(spans(2))
    await h.shutdown()
    assert value(h, "send_failed") == 2 and backend.delivered == 0


async def test_full_queue_refuses_with_a_retryable_error() -> None:
    backend = Backend()
    backend.gate.clear()  # the backend hangs
    h = helper(backend, sending_queue={"queue_size": 2, "num_consumers": 1})
    await h.start(StubHost())
    for _ in range(3):  # one in flight, two queued
        await h.consume(spans(1))
        await asyncio.sleep(0.01)
    with pytest.raises(RetryableError) as err:
        await h.consume(spans(4))
    assert err.value.resource_exhausted and "sending queue" in str(err.value)
    assert value(h, "enqueue_failed") == 4
    assert h.queue_size == 2
    backend.gate.set()  # the backend recovers: the queue drains on shutdown
    await h.shutdown()
    assert backend.delivered == 3 and value(h, "sent") == 3


@pytest.mark.parametrize(
    ("queue", "first", "unit"),
    [
        ({"queue_size": 2}, [1, 1], "2 batches"),
        ({"sizer": "items", "queue_size": 5}, [2, 3], "5 items"),
        ({"sizer": "bytes", "queue_size": 20}, [2, 2], "20 bytes"),
        # the batcher's pending payloads count, in the queue's sizer
        ({"queue_size": 1, "batch": {"flush_timeout": "1h"}}, [1], "1 batches"),
        ({"sizer": "items", "queue_size": 4, "batch": {"flush_timeout": "1h"}}, [3, 1], "4 items"),
    ],
    ids=["requests", "items", "bytes", "batch", "batch-items"],
)
async def test_refusal_and_admit_answer_as_consume_would(
    queue: dict[str, object], first: list[int], unit: str
) -> None:
    """``refusal()`` says whether ``consume`` would refuse a payload now, in the queue's own
    units with what the batcher holds; ``admit(items)`` refuses the same way, counted once and
    logged, and once it returned ``consume`` takes the payload (an exporter translates in
    between). Before, an exporter could only compare queued batches with ``queue_size``."""
    from tests.support import logged

    backend = Backend()
    h = helper(backend, sending_queue={**queue, "num_consumers": 1})  # not started: it holds
    assert 10 <= spans(2).nbytes < 20  # two of them fill the 20-byte queue
    for n in first[:-1]:
        assert h.refusal() is None
        await h.admit(n)
        await h.consume(spans(n))
    assert h.refusal() is None  # below queue_size: the last payload may take it above
    await h.admit(first[-1])
    await h.consume(spans(first[-1]))
    error = h.refusal()
    assert isinstance(error, RetryableError) and error.resource_exhausted
    assert f"is full ({unit})" in str(error)
    assert value(h, "enqueue_failed") == 0  # asking counts nothing
    with logged() as lines, pytest.raises(RetryableError, match=unit.replace("(", r"\(")):
        await h.admit(7)
    assert value(h, "enqueue_failed") == 7
    with pytest.raises(RetryableError, match="full"):
        await h.consume(spans(1))
    assert value(h, "enqueue_failed") == 8  # each refusal once
    warnings = [r for r in lines if r.levelname == "WARNING" and "full" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].refused_items == 7
    await h.start(StubHost())  # drains (a batch on shutdown)
    await h.shutdown()
    assert backend.delivered == sum(first) and value(h, "sent") == sum(first)
    error = h.refusal()
    assert error is not None and "shutting down" in str(error)
    with pytest.raises(RetryableError, match="shutting down"):
        await h.admit(2)
    assert value(h, "enqueue_failed") == 10


async def test_admit_waits_for_room_with_block_on_overflow() -> None:
    backend = Backend()
    backend.gate.clear()
    h = helper(
        backend,
        timeout="2s",
        sending_queue={"queue_size": 1, "num_consumers": 1, "block_on_overflow": True},
    )
    await h.start(StubHost())
    await h.consume(spans(1))
    await asyncio.sleep(0.01)  # in flight
    await h.consume(spans(1))  # queued: full
    assert h.refusal() is not None
    waiting = asyncio.create_task(h.admit(1))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    backend.gate.set()
    await asyncio.wait_for(waiting, 1)
    await h.consume(spans(1))
    await h.shutdown()
    assert backend.delivered == 3 and value(h, "enqueue_failed") == 0


async def test_without_queue_only_shutdown_refuses() -> None:
    h = helper(Backend(), sending_queue={"enabled": False})
    assert h.refusal() is None
    await h.admit(1)
    await h.shutdown()
    assert h.refusal() is not None


async def test_shutdown_deadline_counts_what_is_left() -> None:
    backend = Backend()
    backend.gate.clear()
    h = helper(backend, sending_queue={"queue_size": 10, "num_consumers": 1})
    await h.start(StubHost())
    for _ in range(3):
        await h.consume(spans(2))
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(h.shutdown(), timeout=0.1)
    assert value(h, "send_failed") == 6  # two queued batches and the one in flight
    await h.shutdown()  # safe twice


async def test_without_queue_the_caller_waits_and_sees_errors() -> None:
    backend = Backend()
    backend.failures = [PermanentError("no")]
    h = helper(backend, sending_queue={"enabled": False})
    await h.start(StubHost())
    with pytest.raises(PermanentError):
        await h.consume(spans(1))
    await h.consume(spans(1))
    assert backend.delivered == 1
    await h.shutdown()


async def test_timeout_is_retryable() -> None:
    backend = Backend()
    backend.gate.clear()
    h = helper(
        backend,
        timeout="20ms",
        sending_queue={"enabled": False},
        retry_on_failure={"enabled": False},
    )
    await h.start(StubHost())
    with logged() as records, pytest.raises(RetryableError, match="timed out"):
        await h.consume(spans(1))
    assert value(h, "send_failed") == 1
    # the error goes back to the sender, which may retry: rejected, not dropped
    messages = [r.getMessage() for r in records]
    assert any(m.startswith("export failed, rejecting data") for m in messages), messages
    assert not any("dropping" in m for m in messages), messages
    await h.shutdown()


def test_the_persistent_queue_stores_a_merged_batch_without_joining_it() -> None:
    from pipeline.exporterhelper import QueueCodec

    parts = [spans(1), Traces(b""), spans(3), spans(2)]
    merged = Traces.merge(parts)
    codec = QueueCodec(Signal.TRACES)
    body_parts = codec.encode(merged)
    assert body_parts[1:] == [p.to_bytes() for p in parts if p.to_bytes()]
    assert merged._parts is not None  # the record is written from the pieces
    body = b"".join(body_parts)
    assert codec.count(body) == 6
    back = codec.decode(body)
    assert back.to_bytes() == merged.to_bytes() and back.item_count() == 6
    empty = Traces.merge([Traces(b""), Traces(b"")])
    assert codec.encode(empty)[1:] == [b""]
    back = codec.decode(b"".join(codec.encode(empty)))
    assert back.to_bytes() == b"" and back.item_count() == 0
