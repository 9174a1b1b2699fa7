from __future__ import annotations

import asyncio
import gc
import os
import weakref
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import (
    ComponentID,
    ExporterHelper,
    ExporterHelperConfig,
    Kind,
    Logs,
    Payload,
    Signal,
    Traces,
)
from pipeline.errors import PermanentError, RetryableError
from pipeline.exporterhelper import QueueCodec
from pipeline.testing import StubHost, create_settings
from tests.pipeline.test_prepared import Lines, LinesCodec
from tests.support import logged, wait_until


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


# -- the persistent queue on a real file_storage -------------------------------------------------
class StorageHost(StubHost):
    """A host whose ``file_storage`` extension is a real one, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        from plugins.filestorageextension import FileStorageConfig, FileStorageExtensionFactory

        self.storage = FileStorageExtensionFactory().create(
            create_settings(Kind.EXTENSION, "file_storage"),
            FileStorageConfig(directory=str(directory)),
        )

    def get_extension(self, component_id: ComponentID) -> Any | None:
        return self.storage if component_id.type == "file_storage" else None


async def persistent(
    directory: Path, codec: QueueCodec | None = None, **queue: object
) -> tuple[StorageHost, Backend, ExporterHelper]:
    """A logs exporter's helper started with a persistent queue in a real ``file_storage`` in
    ``directory``, and its backend, holding every send until its gate opens."""
    host = StorageHost(directory)
    await host.storage.start(host)
    backend = Backend()
    backend.gate.clear()
    config = ExporterHelperConfig.model_validate(
        {"sending_queue": {"storage": "file_storage", "num_consumers": 1, **queue}}
    )
    h = ExporterHelper(
        create_settings(Kind.EXPORTER, "test"), Signal.LOGS, config, backend.send, codec=codec
    )
    await h.start(host)
    return host, backend, h


def logs_value(h: ExporterHelper, what: str) -> float:
    return h.settings.telemetry.service.value(
        f"otelcol_exporter_{what}_log_records_total", exporter="test"
    )


def queue_gauge(h: ExporterHelper) -> float:
    return h.settings.telemetry.service.value(
        "otelcol_exporter_queue_size", exporter="test", data_type="logs"
    )


def open_on(path: str) -> int:
    """This process's descriptors open on ``path``."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == path)


class Token:
    """An acknowledgement token whose lifetime the test watches."""


async def test_a_persistent_queue_that_cannot_write_refuses_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    """The disk is full (every new segment file of the queue's log is on ``/dev/full``, which
    answers each write with ENOSPC): a translated payload is refused with a retryable error
    (resource exhausted), counted as ``enqueue_failed`` and logged; nothing is left half-done:
    its room in the queue is given back (a payload the size of the queue is taken once the
    disk has room), the log holds no record, no descriptor or empty segment file stays behind
    for each failed write, and the payload (its acknowledgement tokens) is released at once,
    without waiting for the cyclic garbage collector."""
    host, backend, h = await persistent(
        tmp_path, LinesCodec(Signal.LOGS), sizer="bytes", queue_size=150
    )
    log = host.storage.logs[h.storage_owner()]
    full = [log.directory / f"{seq:012d}.seg" for seq in range(4)]
    for path in full:
        path.symlink_to("/dev/full")
    gc.disable()
    try:
        with logged() as records:
            for _ in range(3):
                payload = Lines([b"x" * 100, b"y" * 50], 3, [2, 1])  # 150 bytes: the queue
                token = Token()
                released = weakref.ref(token)
                payload.carry_acks([token])
                del token
                with pytest.raises(RetryableError, match="No space left") as refused:
                    await h.consume(payload)
                assert refused.value.resource_exhausted
                del payload, refused
                # nothing keeps the translated payload (the log's writer lets go of the
                # write it failed at its next turn)
                await wait_until(lambda ref=released: ref() is None, within=2)
    finally:
        gc.enable()
    assert logs_value(h, "enqueue_failed") == 9
    lines = [r for r in records if "persistent sending queue" in r.getMessage()]
    assert [(r.levelname, r.refused_items) for r in lines] == [("ERROR", 3)], lines
    assert h.queue_size == 0 and queue_gauge(h) == 0
    assert log.describe()["records_not_done"] == 0
    assert open_on("/dev/full") == 0
    assert sorted(log.directory.glob("*.seg")) == full[3:]  # the one not tried yet
    full[3].unlink()  # the disk has room again: the next payload is queued, then sent
    await h.consume(Lines([b"x" * 100, b"y" * 50], 3, [2, 1]))
    backend.gate.set()
    await wait_until(lambda: logs_value(h, "sent") == 3)
    await h.shutdown()
    await host.storage.shutdown()
    assert backend.delivered == 3 and logs_value(h, "enqueue_failed") == 9


async def test_a_payload_being_written_holds_its_room_in_the_persistent_queue(
    tmp_path: Path,
) -> None:
    """Two payloads offered to a queue with room for one while the first is being written:
    the second is refused (as the Collector's queue reserves the room before writing); before,
    both were taken, the queue holding more than its capacity."""
    host, backend, h = await persistent(tmp_path, queue_size=1)
    outcomes = await asyncio.gather(
        h.consume(Logs(b"", item_count=1)),
        h.consume(Logs(b"", item_count=1)),
        return_exceptions=True,
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], RetryableError) and "full" in str(outcomes[1])
    assert logs_value(h, "enqueue_failed") == 1
    backend.gate.set()
    await wait_until(lambda: backend.delivered == 1 and h.queue_size == 0)
    await h.shutdown()
    await host.storage.shutdown()


@pytest.mark.parametrize("prepared", [False, True], ids=["otlp", "prepared"])
async def test_entries_recovered_after_a_restart_count_their_bytes(
    tmp_path: Path, prepared: bool
) -> None:
    """``sizer: bytes``: the entries a restart finds in the persistent queue count their real
    size (the payload's bytes, as when they were queued; OTLP or translated payloads), so the
    queue is as full after the restart as before it (``queue_size``, the
    ``otelcol_exporter_queue_size`` gauge, a refusal when full) and is empty again, exactly,
    once they are sent. Before, a recovered entry counted 0 bytes."""
    codec = LinesCodec(Signal.LOGS) if prepared else None

    def payload(i: int) -> Payload:
        if prepared:
            return Lines([b"x" * (40 + i), b"y" * 10], 2, [1, 1])
        return Logs(b"z" * (50 + i), item_count=2)

    payloads = [payload(i) for i in range(3)]
    total = sum(p.nbytes for p in payloads)
    assert total == 153
    # the first run: the backend is down; at the shutdown deadline every entry stays
    host, _, first = await persistent(tmp_path, codec, sizer="bytes", queue_size=total)
    for p in payloads:
        await first.consume(p)
    with pytest.raises(TimeoutError):  # a send in progress: cancelled at the deadline
        await asyncio.wait_for(first.shutdown(), 0.3)
    await host.storage.shutdown()
    # the second run, over the same storage
    host, backend, second = await persistent(tmp_path, codec, sizer="bytes", queue_size=total)
    assert second.queue_size == total and queue_gauge(second) == total
    assert second.exporter_state().queue_size == total
    assert second.refusal() is not None  # full, as before the restart
    assert logs_value(second, "queue_recovered") == 6
    backend.gate.set()
    await wait_until(lambda: logs_value(second, "sent") == 6)
    assert second.queue_size == 0 and queue_gauge(second) == 0
    await second.consume(payload(3))  # room for one more again
    await wait_until(lambda: logs_value(second, "sent") == 8)
    assert second.queue_size == 0 and queue_gauge(second) == 0
    await second.shutdown()
    await host.storage.shutdown()
    assert backend.delivered == 8


async def test_a_payload_whose_sender_went_away_while_it_was_written_is_not_left_behind(
    tmp_path: Path,
) -> None:
    """The sender's call is cancelled (it went away, or its deadline passed) while its payload
    is being written to the persistent queue: the payload is not queued (its room given back)
    and its record, written all the same, is marked done, not left on disk to be sent after
    the next start (the sender, never answered, sends it again). Before, the record stayed:
    nothing sent it in this run, the next start did."""
    host, _, h = await persistent(tmp_path, sizer="bytes", queue_size=1000)
    log = host.storage.logs[h.storage_owner()]
    sending = asyncio.ensure_future(h.consume(Logs(b"z" * 50, item_count=2)))
    await asyncio.sleep(0)  # being written
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert h.queue_size == 0
    await wait_until(lambda: log.stats.records_written == 1)
    await wait_until(lambda: log.describe()["records_not_done"] == 0)
    await h.shutdown()
    await host.storage.shutdown()
    host, _, h = await persistent(tmp_path, sizer="bytes", queue_size=1000)
    assert h.queue_size == 0 and logs_value(h, "queue_recovered") == 0
    await h.shutdown()
    await host.storage.shutdown()


class DownBackend:
    """A backend that is down: each send waits for ``gate``, then fails (retryable)."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()

    async def send(self, data: Payload) -> None:
        self.calls += 1
        await self.gate.wait()
        raise RetryableError("connection refused")


async def test_a_send_that_fails_as_the_shutdown_deadline_cancels_it_does_not_retry_forever(
    tmp_path: Path,
) -> None:
    """The backend is down and retries never end (``max_elapsed_time: 0s``): the shutdown
    deadline cancels the send in progress in the loop turn in which that send fails. The
    cancellation wins: the shutdown ends, nothing is retried after it, and the entry stays in
    the persistent queue for the next start. Before, ``asyncio.wait_for`` (Python 3.11)
    answered the send's error instead of the cancellation: the sender retried forever and
    the shutdown never ended (a gateway that kept its ports until the process was killed)."""
    host = StorageHost(tmp_path)
    await host.storage.start(host)
    backend = DownBackend()
    config = ExporterHelperConfig.model_validate(
        {
            "sending_queue": {"storage": "file_storage", "num_consumers": 1},
            "retry_on_failure": {
                "initial_interval": "10ms",
                "max_interval": "10ms",
                "max_elapsed_time": "0s",
            },
        }
    )
    h = ExporterHelper(create_settings(Kind.EXPORTER, "test"), Signal.LOGS, config, backend.send)
    await h.start(host)
    await h.consume(Logs(b"z" * 10, item_count=2))
    await wait_until(lambda: backend.calls == 1)  # being sent
    shutdown = asyncio.ensure_future(h.shutdown())
    await asyncio.sleep(0)  # the shutdown waits for the send in progress
    backend.gate.set()  # the send fails ...
    shutdown.cancel()  # ... in the turn in which the deadline cancels the shutdown
    try:
        # a guard against the hang only
        done, _ = await asyncio.wait({shutdown}, timeout=10)
        assert done, f"the shutdown did not end; the send was tried {backend.calls} times"
    finally:
        for w in h._workers:  # (the old code's sender: stopped, so that the test ends)
            w.cancel()
        await asyncio.gather(shutdown, return_exceptions=True)
        await host.storage.shutdown()
    assert shutdown.cancelled()
    assert backend.calls == 1 and logs_value(h, "retried") == 0
    host, backend2, h = await persistent(tmp_path)
    assert logs_value(h, "queue_recovered") == 2  # kept for the next start
    backend2.gate.set()
    await wait_until(lambda: logs_value(h, "sent") == 2)
    await h.shutdown()
    await host.storage.shutdown()


# -- failures of the helper's own machinery: nobody waits for what is gone, every drop counted ----
def _injected(*args: object, **kwargs: object) -> Any:
    raise ValueError("injected: a bug")


async def test_a_persistent_queue_whose_storage_writer_fails_refuses_and_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue's log writer fails with a ValueError (injected into its own write code): the
    payload being written is refused with a retryable error at once (not left waiting),
    counted as ``enqueue_failed``, logged; the exporter reports a permanent error and the
    storage's own metrics say the log failed; the batch queued before is still sent; after a
    restart the queue works again."""
    from pipeline.storage import SegmentLog

    host, backend, h = await persistent(tmp_path, LinesCodec(Signal.LOGS))
    await h.consume(Lines([b"before"], 2, [2]))  # queued (acknowledged) before the failure
    await wait_until(lambda: backend.calls == 1)  # being sent (the backend holds it)
    monkeypatch.setattr(SegmentLog, "_flush", _injected)
    with logged() as records:
        with pytest.raises(RetryableError, match="ValueError") as refused:
            await asyncio.wait_for(h.consume(Lines([b"during"], 3, [3])), timeout=30)
        assert refused.value.resource_exhausted
    monkeypatch.undo()
    assert logs_value(h, "enqueue_failed") == 3
    assert any(r.levelname == "ERROR" and "ValueError" in r.getMessage() for r in records), [
        r.getMessage() for r in records
    ]
    status, error = host.statuses["exporter test"]
    assert status == "permanent_error" and isinstance(error, Exception)
    storage_metrics = host.storage.settings.telemetry.service
    labels = {"storage": "file_storage", "client": h.storage_owner()}
    assert storage_metrics.value("otelcol_storage_failed", **labels) == 1
    assert storage_metrics.value("otelcol_storage_errors_total", **labels) >= 1
    assert h.queue_size == 0  # the refused payload gave its room back
    backend.gate.set()
    await wait_until(lambda: logs_value(h, "sent") == 2)
    await h.shutdown()
    await host.storage.shutdown()
    # started again: the log opens again and works
    host, backend, h = await persistent(tmp_path, LinesCodec(Signal.LOGS))
    backend.gate.set()
    await h.consume(Lines([b"after"], 4, [4]))
    await wait_until(lambda: logs_value(h, "sent") == 4)
    await h.shutdown()
    await host.storage.shutdown()


async def test_a_payload_the_queue_codec_cannot_encode_is_refused_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = LinesCodec(Signal.LOGS)
    host, _backend, h = await persistent(tmp_path, codec)
    monkeypatch.setattr(codec, "encode", _injected)
    with logged() as records, pytest.raises(PermanentError, match="cannot encode"):
        await h.consume(Lines([b"x"], 2, [2]))
    assert logs_value(h, "enqueue_failed") == 2
    assert any("cannot encode" in r.getMessage() for r in records)
    assert h.queue_size == 0
    await h.shutdown()
    await host.storage.shutdown()


async def test_shutdown_does_not_wait_for_senders_that_are_gone() -> None:
    """The queue's senders were given up (here: their tasks ended, as a supervisor that stops
    restarting them leaves them): shutdown drops what is queued, counted and logged, instead
    of waiting forever for a queue nobody drains."""
    backend = Backend()
    h = helper(backend, sending_queue={"num_consumers": 2})
    await h.start(StubHost())
    for w in h._workers:
        w.cancel()
    await asyncio.gather(*h._workers, return_exceptions=True)
    await h.consume(spans(5))
    with logged() as records:
        await asyncio.wait_for(h.shutdown(), timeout=30)  # a guard against the hang only
    assert value(h, "send_failed") == 5
    assert any("senders had stopped" in r.getMessage() for r in records)
    assert backend.delivered == 0


async def test_the_batch_task_stops_when_cancelled_as_a_payload_wakes_it() -> None:
    """``sending_queue.batch``: the batch task is cancelled (shutdown) in the loop turn in
    which a payload wakes it. It stops. Before, ``asyncio.wait_for`` (Python 3.11) answered
    the wake-up instead of the cancellation: the task went on, and a shutdown waiting for it
    never ended."""
    backend = Backend()
    h = helper(backend, sending_queue={"batch": {"min_size": 100, "flush_timeout": "1h"}})
    await h.start(StubHost())
    await h.consume(spans(1))  # the batch task now waits for more, or its flush_timeout
    batch_task = h._workers[-1]
    await asyncio.sleep(0)
    # consume does not suspend while the queue has room: run it to its end in this turn
    consuming = h.consume(spans(1))
    with pytest.raises(StopIteration):
        consuming.send(None)
    batch_task.cancel()  # in the turn in which the payload woke the batch task
    try:
        done, _ = await asyncio.wait({batch_task}, timeout=10)  # a guard against the hang only
        assert done, "the batch task did not stop"
    finally:
        batch_task.cancel()  # (the old code's: cancelled again, so that the test ends)
        await asyncio.wait_for(h.shutdown(), timeout=30)
    assert batch_task.cancelled()
    assert backend.delivered == 2  # the shutdown flushed the pending batch


async def test_a_batch_that_cannot_be_merged_is_dropped_counted_and_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = Backend()
    h = helper(backend, sending_queue={"batch": {"min_size": 100, "flush_timeout": "10ms"}})
    await h.start(StubHost())
    monkeypatch.setattr(Traces, "merge", classmethod(_injected))
    with logged() as records:
        await h.consume(spans(3))
        await h.consume(spans(4))
        await wait_until(lambda: value(h, "send_failed") == 7)
    assert any("cannot merge" in r.getMessage() for r in records)
    monkeypatch.undo()
    await h.consume(spans(2))  # the batch task goes on
    await wait_until(lambda: backend.delivered == 2)
    await h.shutdown()


async def test_an_unreadable_persistent_queue_entry_is_dropped_counted_at_start(
    tmp_path: Path,
) -> None:
    """An entry of the queue's log that does not decode (written by a bug, or a codec that
    changed): the start drops it, counts it and logs it, and sends the good ones."""
    from pipeline.storage import SegmentLog

    host, backend, h = await persistent(tmp_path, LinesCodec(Signal.LOGS))
    await h.consume(Lines([b"kept"], 2, [2]))
    owner = h.storage_owner()
    await h.shutdown()  # the batch stays on disk (the backend held it)
    await host.storage.shutdown()
    raw = SegmentLog(host.storage.logs[owner].directory)
    raw.open()
    await raw.append([b"\x01"])
    raw.close()
    with logged() as records:
        host, backend, h = await persistent(tmp_path, LinesCodec(Signal.LOGS))
    unreadable = h.settings.telemetry.service.value(
        "otelcol_exporter_queue_unreadable_batches_total", exporter="test"
    )
    assert unreadable == 1
    assert any("cannot be read at start" in r.getMessage() for r in records)
    backend.gate.set()
    await wait_until(lambda: logs_value(h, "sent") == 2)
    await h.shutdown()
    await host.storage.shutdown()
