"""The shared exporter helper: a bounded sending queue, retry with backoff, a timeout per send,
and counts of every item sent, retried, refused and dropped.

Options, named as in the Collector's ``exporterhelper``::

    timeout: 5s
    sending_queue: {enabled: true, num_consumers: 10, queue_size: 1000, storage: file_storage,
                    sizer: requests, block_on_overflow: false,
                    batch: {flush_timeout: 200ms, min_size: 8192, max_size: 0, sizer: items}}
    retry_on_failure: {enabled: true, initial_interval: 5s, randomization_factor: 0.5,
                       multiplier: 1.5, max_interval: 30s, max_elapsed_time: 300s}

An exporter built on it provides one coroutine, ``send(payload)``, that raises
:class:`~pipeline.errors.RetryableError` (optionally with the delay the server asked for) or
:class:`~pipeline.errors.PermanentError`. With the queue enabled, ``consume`` returns once the
payload is queued, and refuses it with a retryable error when the queue is full (counted as
``enqueue_failed`` and logged). ``refusal()`` answers whether it would refuse one now, and
``admit(items)`` refuses as ``consume`` would, for an exporter that must decide before it
translates a payload (see :meth:`ExporterHelper.admit`). A
:class:`~pipeline.errors.RequestTooLargeError` from ``send`` (the receiving side refused the
request as too large) makes the helper send the payload again in
halves, each half with its own retries, recursively down to a single item; an item still too
large is dropped and counted. With ``max_request_bytes`` the helper splits a payload whose
encoding is larger before sending it. Splits are counted in
``otelcol_exporter_split_requests_total{exporter,data_type,reason}``. Shutdown drains the
queue until the service's shutdown deadline; whatever is still queued then is counted as
``send_failed`` and logged.

With ``sending_queue.storage`` naming a storage extension (``file_storage``), the queue is
persistent, as the Collector's: ``consume`` writes the payload to the extension's log and
returns once it is there (only its record handle and item count stay in memory); a payload
that cannot be written (a full disk) is refused with a retryable error, counted as
``enqueue_failed`` and logged, as the Collector's persistent queue refuses it. Workers read
it back to send it, and its record is marked done once it was sent or dropped (counted). On
shutdown the workers finish the sends in progress and the rest stays on disk; the next start
queues it again (``otelcol_exporter_queue_recovered_<items>``), reading it in the background
one segment at a time in a thread (the start waits ``RECOVERY_START_WAIT`` at most; progress
in ``otelcol_exporter_queue_recovery_pending_bytes``; damaged entries counted in
``otelcol_exporter_queue_unreadable_batches``). A batch being sent when the
process died is sent again: the receiving side may see it twice. With ``service.durability``
on, a payload in the persistent queue releases its write-ahead log tokens.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.component import Component, ComponentID, CreateSettings, Host
from pipeline.configtypes import ComponentConfig, ConfigModel, Duration, Seconds
from pipeline.durability import carry_current
from pipeline.errors import (
    ComponentStartError,
    ConsumeError,
    PermanentError,
    RequestTooLargeError,
    RetryableError,
)
from pipeline.pdata import Payload, Signal, payload_type
from pipeline.status import ExporterState, ExporterStateProvider
from pipeline.storage import Record, Recovery, SegmentLog, StorageError, StorageExtension
from pipeline.tasks import in_a_task, supervise

SendFunc = Callable[[Payload], Awaitable[None]]
RECOVERY_START_WAIT = 1.0  # seconds a start waits for its persistent queue's recovery
# what a single item too large to send is called in the log (a metric is never split)
_SINGLE_ITEM = {Signal.TRACES: "span", Signal.LOGS: "log record"}


class QueueCodec:
    """How a persistent queue writes a payload to storage and reads it back. The default
    stores the encoded request; an exporter that queues payloads of its own (already
    translated for its protocol) passes a codec for them."""

    _HEAD = struct.Struct("<I")  # item count

    def __init__(self, signal: Signal) -> None:
        self.signal = signal

    def encode(self, data: Payload) -> list[bytes]:
        """The record body's parts (a merged payload's pieces as they are: not joined)."""
        return [self._HEAD.pack(data.item_count()), *data.encoded_parts()]

    def decode(self, body: bytes) -> Payload:
        (count,) = self._HEAD.unpack_from(body)
        return payload_type(self.signal)(body[self._HEAD.size :], item_count=count)

    def count(self, body: bytes) -> int:
        """The items of a stored payload (read when the queue is recovered)."""
        return int(self._HEAD.unpack_from(body)[0])

    def measure(self, body: bytes) -> tuple[int, int]:
        """The items and the bytes of a stored payload (its ``nbytes``, what ``sizer: bytes``
        counted when it was queued), read when the queue is recovered."""
        return self.count(body), len(body) - self._HEAD.size


class _Stored:
    """A payload in the persistent queue: where it is, and how many items it holds."""

    __slots__ = ("items", "nbytes", "record")

    def __init__(self, record: Record, items: int, nbytes: int = 0) -> None:
        self.record = record
        self.items = items
        self.nbytes = nbytes


class QueueBatchConfig(ConfigModel):
    """``sending_queue.batch``: exporter-side batching, as the Collector's exporterhelper
    does it (the place of the ``batch`` processor in current Collector configs)."""

    flush_timeout: Duration = Seconds(0.2)
    min_size: int = Field(8192, ge=0)
    """A batch is sent once it holds this much (in ``sizer`` units); 0: on the timeout only."""
    max_size: int = Field(0, ge=0)
    """Larger batches are split (0: no limit)."""
    sizer: Literal["items", "bytes", "requests"] = "items"

    @model_validator(mode="after")
    def _check(self) -> QueueBatchConfig:
        if self.max_size and self.max_size < self.min_size:
            raise ValueError(
                f"max_size ({self.max_size}) must be greater than or equal to min_size "
                f"({self.min_size})"
            )
        if self.sizer == "requests":
            raise ValueError("sizer 'requests' cannot size a batch: use items or bytes")
        return self


class QueueConfig(ConfigModel):
    """``sending_queue``."""

    enabled: bool = True
    num_consumers: int = Field(10, ge=1)
    queue_size: int = Field(1000, ge=1)
    """Capacity, in ``sizer`` units (requests by default)."""
    storage: str | None = None
    """A storage extension (``file_storage``) that makes the queue persistent."""
    sizer: Literal["requests", "items", "bytes"] = "requests"
    block_on_overflow: bool = False
    """Wait for room (bounded by ``timeout``) instead of refusing data when the queue is full."""
    wait_for_result: bool = False
    """Accepted for Collector configs: this queue answers once the data is queued."""
    batch: QueueBatchConfig | None = None

    @staticmethod
    def one_consumer(value: Any) -> Any:
        """For an exporter whose requests must arrive in order (its ``sending_queue`` defaults
        to ``QueueConfig(num_consumers=1)``), as a ``mode="before"`` validator of that field: a
        ``sending_queue`` written without ``num_consumers`` (``{batch: ...}`` or ``{storage:
        ...}`` alone) keeps the one consumer instead of taking the helper's default of 10."""
        if isinstance(value, dict) and "num_consumers" not in value:
            return {**value, "num_consumers": 1}
        return value

    @model_validator(mode="after")
    def _check_batch(self) -> QueueConfig:
        if self.batch is not None and self.storage:
            raise ValueError(
                "sending_queue.batch with a persistent queue (storage) is not supported: "
                "batch with the batch processor before the exporter"
            )
        return self


class RetryConfig(ConfigModel):
    """``retry_on_failure``."""

    enabled: bool = True
    initial_interval: Duration = Seconds(5.0)
    randomization_factor: float = Field(0.5, ge=0, le=1)
    multiplier: float = Field(1.5, ge=1)
    max_interval: Duration = Seconds(30.0)
    max_elapsed_time: Duration = Seconds(300.0)
    """0 means retry until shutdown."""

    @model_validator(mode="after")
    def _check(self) -> RetryConfig:
        if self.enabled and self.initial_interval <= 0:
            raise ValueError("initial_interval must be above 0 when retries are enabled")
        if self.max_interval < self.initial_interval:
            raise ValueError("max_interval must not be below initial_interval")
        return self


class ExporterHelperConfig(ComponentConfig):
    """Mix into an exporter's config to get ``timeout``, ``sending_queue``, ``retry_on_failure``."""

    timeout: Duration = Seconds(5.0)
    sending_queue: QueueConfig = QueueConfig()
    retry_on_failure: RetryConfig = RetryConfig()

    @model_validator(mode="after")
    def _storage_needs_the_queue(self) -> ExporterHelperConfig:
        if self.sending_queue.storage and not self.sending_queue.enabled:
            raise ValueError("sending_queue.storage needs the sending queue: enabled: true")
        return self

    def extension_references(self) -> list[tuple[str, str, str]]:
        refs = super().extension_references()
        if self.sending_queue.storage:
            refs.append(("sending_queue.storage", self.sending_queue.storage, "storage"))
        return refs


class Backoff:
    """Exponential backoff with jitter, as the Collector's (cenkalti/backoff) computes it."""

    def __init__(self, cfg: RetryConfig) -> None:
        self.cfg = cfg
        self.current = cfg.initial_interval

    def next(self) -> float:
        delta = self.cfg.randomization_factor * self.current
        delay = random.uniform(self.current - delta, self.current + delta)
        self.current = min(self.current * self.cfg.multiplier, self.cfg.max_interval)
        return delay


class ExporterHelper(Component, ExporterStateProvider):
    """Queue + retry + timeout around an exporter's ``send``. Also a consumer; offered to
    other components as an :class:`pipeline.status.ExporterStateProvider` (its queue and
    failures show in :meth:`pipeline.Host.snapshot`)."""

    mutates_data = False

    def __init__(
        self,
        settings: CreateSettings,
        signal: Signal,
        config: ExporterHelperConfig,
        send: SendFunc,
        *,
        retry_enabled: bool | None = None,
        max_request_bytes: int = 0,
        codec: QueueCodec | None = None,
    ) -> None:
        self.settings = settings
        self.signal = signal
        self.config = config
        self._send = send
        self.max_request_bytes = max_request_bytes
        self._retry = config.retry_on_failure
        if retry_enabled is not None:
            self._retry = self._retry.model_copy(update={"enabled": retry_enabled})
        self._queue: deque[Payload | _Stored] = deque()
        self._queue_items = 0
        self._queue_used = 0  # in sending_queue.sizer units
        batch = config.sending_queue.batch
        self._batcher: _Batcher | None = (
            _Batcher(self, batch) if batch is not None and config.sending_queue.enabled else None
        )
        self.codec = codec or QueueCodec(signal)
        self._storage: SegmentLog | None = None  # the persistent queue's log, once started
        self._recovering: asyncio.Future[None] | None = None  # its recovery at start
        self._host: Host | None = None
        self._reported_storage_failure = False
        self._stop_taking = False
        self._has_work = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._shutdown_done = False
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        settings.provide(self)
        tel = settings.telemetry
        self._queue_gauge = tel.service.gauge(
            "otelcol_exporter_queue_size",
            "Current size of the sending queue (in sending_queue.sizer units: batches, items "
            "or bytes; batches by default).",
            ("exporter", "data_type"),
        ).labels(settings.name, str(signal))
        self._capacity_gauge = tel.service.gauge(
            "otelcol_exporter_queue_capacity",
            "Capacity of the sending queue (in sending_queue.sizer units).",
            ("exporter", "data_type"),
        ).labels(settings.name, str(signal))
        self._split_counter = tel.service.counter(
            "otelcol_exporter_split_requests",
            "Requests sent in parts: refused by the receiving side as too large "
            "(reason too_large) or above max_request_bytes (reason max_request_bytes).",
            ("exporter", "data_type", "reason"),
        )
        self._capacity_gauge.set(
            config.sending_queue.queue_size if config.sending_queue.enabled else 0
        )

    # -- the consumer ---------------------------------------------------------------------
    @property
    def queue_size(self) -> int:
        """What the sending queue holds, in ``sending_queue.sizer`` units (batches by default;
        the Collector's queue size), to be compared with :attr:`queue_capacity`."""
        return self._queue_used

    @property
    def queue_capacity(self) -> int:
        return self.config.sending_queue.queue_size if self.config.sending_queue.enabled else 0

    def exporter_state(self) -> ExporterState:
        return ExporterState(
            str(self.signal),
            self.queue_size,
            self.queue_capacity,
            self.consecutive_failures,
            self.last_error,
            self.last_error_time,
        )

    def _failed(self, error: BaseException) -> None:
        self.consecutive_failures += 1
        self.last_error = str(error)
        self.last_error_time = time.time()

    def refusal(self) -> RetryableError | None:
        """The error :meth:`consume` would refuse a payload with now (the exporter is shutting
        down, or its sending queue is full), or ``None`` when it would take one.

        One rule for every payload, whatever its size: the queue takes a payload while what
        it holds (its batches and what ``sending_queue.batch`` holds, in ``sending_queue.sizer``
        units: requests, items or bytes) is below ``queue_size``; the payload may take it
        above. So the answer for an exporter's input is also the answer for whatever the
        exporter translates that input into. Nothing is counted (see :meth:`admit`)."""
        if self._closing:
            return RetryableError(
                f"exporter {self.settings.name} is shutting down", retry_after=1.0
            )
        queue = self.config.sending_queue
        if queue.enabled and self._is_full():
            unit = queue.sizer if queue.sizer != "requests" else "batches"
            return RetryableError(
                f"sending queue of exporter {self.settings.name} is full "
                f"({queue.queue_size} {unit})",
                retry_after=1.0,
                resource_exhausted=True,
            )
        return None

    async def admit(self, items: int) -> None:
        """Refuse now what :meth:`consume` would refuse, or return: then a payload handed to
        :meth:`consume` before this task awaits anything else is taken (a persistent queue
        may still fail to write it; without a queue, a failed send still raises).

        For an exporter that changes state while it translates a payload (running totals,
        an alert table): admit the input (its ``items``), then translate and consume the
        translation, with no ``await`` between, so that a payload refused and sent again by
        the upstream retry advanced the state once. With ``block_on_overflow`` it waits for
        room first (bounded by ``timeout``). A refusal raises :class:`RetryableError`,
        counted once (``otelcol_exporter_enqueue_failed_<items>``, ``items``) and logged
        (at most once a second)."""
        error = self.refusal()
        if error is not None and not self._closing and self.config.sending_queue.block_on_overflow:
            await self._wait_for_room()
            error = self.refusal()
        if error is not None:
            self.settings.telemetry.enqueue_failed(self.signal, items)
            self.settings.log_limited(
                logging.WARNING,
                "refusing data: %s",
                error,
                key="refused",
                extra={"refused_items": items},
            )
            raise error

    async def consume(self, data: Payload) -> None:
        n = data.item_count()
        if n == 0:
            return  # nothing to send
        await self.admit(n)
        if not self.config.sending_queue.enabled:
            await self._deliver(data, n, raise_errors=True)
            return
        if self._storage is not None:
            # its room is taken while it is written: a payload admitted meanwhile sees it
            size = self._size(data)
            self._queue_used += size
            try:
                stored = await self._store(data, n)
            except BaseException:
                # not queued: refused (counted), or cancelled
                self._queue_used = max(self._queue_used - size, 0)
                raise
            self._queue.append(stored)
        elif self._batcher is not None:
            self._batcher.add(carry_current(data))
            return
        else:
            # a payload the exporter built from its input during this call keeps the input's
            # acknowledgement tokens while it waits in memory
            self._enqueue(carry_current(data))
            return
        self._queue_gauge.set(self._queue_used)
        self._idle.clear()
        self._has_work.set()

    def _size(self, data: Payload | _Stored) -> int:
        sizer = self.config.sending_queue.sizer
        if isinstance(data, _Stored):
            return data.items if sizer == "items" else data.nbytes if sizer == "bytes" else 1
        if sizer == "items":
            return data.item_count()
        if sizer == "bytes":
            return data.nbytes
        return 1

    def _is_full(self) -> bool:
        queue = self.config.sending_queue
        used = self._queue_used + (self._batcher.pending_size(queue.sizer) if self._batcher else 0)
        return used >= queue.queue_size

    async def _wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout or 5.0)
        while self._is_full() and not self._closing and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def _enqueue(self, data: Payload) -> None:
        """Into the in-memory queue (from ``consume`` or the batcher)."""
        self._queue.append(data)
        self._queue_used += self._size(data)
        self._queue_gauge.set(self._queue_used)
        self._idle.clear()
        self._has_work.set()

    async def _store(self, data: Payload, n: int) -> _Stored:
        """Write ``data`` to the persistent queue; returns its handle."""
        assert self._storage is not None
        rec = Record()
        try:
            parts = self.codec.encode(data)
        except Exception as exc:  # a payload the codec cannot write: refused, not lost quietly
            self.settings.telemetry.enqueue_failed(self.signal, n)
            self.settings.log_limited(
                logging.ERROR,
                "cannot encode a payload for the persistent sending queue, refusing it: %s",
                f"{type(exc).__name__}: {exc}",
                key="storage_encode",
                extra={"refused_items": n},
            )
            raise PermanentError(
                f"exporter {self.settings.name} cannot encode a payload for its persistent "
                f"queue: {type(exc).__name__}: {exc}"
            ) from None
        try:
            # a sender that goes away meanwhile was not answered: the record is given up
            await self._storage.append(parts, rec, abandon_on_cancel=True)
        except StorageError as exc:
            if rec.segment is not None:
                self._storage.complete(rec)  # written but refused (fsync failed): not queued
            self.settings.telemetry.enqueue_failed(self.signal, n)
            self._storage_failed(exc)
            self.settings.log_limited(
                logging.ERROR,
                "cannot write to the persistent sending queue, refusing data: %s",
                str(exc),  # (not the error: its traceback holds the payload)
                key="storage_write",
                extra={"refused_items": n},
            )
            raise RetryableError(
                f"exporter {self.settings.name} cannot write its persistent queue: "
                f"{exc.strerror or exc}",
                retry_after=1.0,
                resource_exhausted=True,
            ) from exc
        return _Stored(rec, n, data.nbytes)

    def _storage_failed(self, exc: StorageError) -> None:
        """A write refused by a log that failed for good (an I/O error, or a bug in its
        writer): the exporter reports a permanent error (the health check answers 503) until
        it is started again (a restart or a reload opens the log again)."""
        self._failed(exc)
        log = self._storage
        if log is None or not log.stats.failed or self._reported_storage_failure:
            return
        self._reported_storage_failure = True
        if self._host is not None:
            instance = self.settings.instance or f"{self.settings.kind} {self.settings.name}"
            self._host.report_status(instance, "permanent_error", exc)

    # -- lifecycle --------------------------------------------------------------------------
    def storage_owner(self) -> str:
        """The name of this queue's log in the storage extension (as the Collector names
        the file of a component's persistent queue)."""
        cid = self.settings.id
        return f"exporter_{cid.type}_{cid.name}_{self.signal}"

    async def _open_storage(self, host: Host) -> None:
        ref = self.config.sending_queue.storage
        assert ref is not None
        ext = host.get_extension(ComponentID.parse(ref))
        if not isinstance(ext, StorageExtension):
            raise ComponentStartError(
                f"sending_queue.storage: extension {ref!r} is not running or does not provide "
                "storage"
            )
        log = ext.log(self.storage_owner())
        # only the last segment is read now; the rest is read in the background, one segment
        # at a time in a thread (a backlog of a GiB must not hold the event loop nor the start)
        recovery = await asyncio.to_thread(log.open_incremental, self.codec.measure)
        self._reported_storage_failure = False
        self._storage = log
        if recovery.segments_left:
            task = self._recovering = asyncio.ensure_future(self._recover(log, recovery))
            task.add_done_callback(self._recovery_ended)
            # a small backlog is queued before the start returns (as before); a large one goes
            # on in the background while the rest of the gateway starts
            await asyncio.wait({task}, timeout=RECOVERY_START_WAIT)

    async def _recover(self, log: SegmentLog, recovery: Recovery) -> None:
        """Queue what the persistent queue held at start, one segment at a time: each is read
        (and its batches measured) in a thread, so the loop serves meanwhile (receivers, the
        health check, the metrics endpoint) and memory holds one segment's handles at a time
        beside the queue. Progress: ``otelcol_exporter_queue_recovery_pending_bytes``, a log
        line at the start, every 30 s and at the end."""
        service = self.settings.telemetry.service
        name = self.settings.name
        pending_bytes = service.gauge(
            "otelcol_exporter_queue_recovery_pending_bytes",
            "Bytes of the persistent sending queue's files not read yet since the start (the "
            "queue is recovered in the background; 0 once it is).",
            ("exporter",),
        ).labels(name)
        recovered_items = service.counter(
            f"otelcol_exporter_queue_recovered_{self.signal.item_name}",
            "Items found in the persistent sending queue at start and sent again (one "
            "being sent when the process stopped may reach the backend twice).",
            ("exporter",),
        ).labels(name)
        unreadable = service.counter(
            "otelcol_exporter_queue_unreadable_batches",
            "Batches of a persistent sending queue that could not be read back at start "
            "(damaged on disk, or not decodable: dropped, how many items they held is "
            "unknown), each logged.",
            ("exporter",),
        ).labels(name)
        logger = self.settings.logger
        logger.info(
            "recovering the persistent sending queue in the background",
            extra={"segments": recovery.segments_left, "bytes": recovery.bytes_left},
        )
        loop = asyncio.get_running_loop()
        next_progress = loop.time() + 30.0
        corrupt_counted = 0
        batches = items = dropped = 0
        while True:
            pending_bytes.set(recovery.bytes_left)
            records = await asyncio.to_thread(recovery.next)
            corrupt = recovery.corrupt - corrupt_counted
            if corrupt > 0:  # (logged by the storage, where and why)
                corrupt_counted += corrupt
                dropped += corrupt
                unreadable.inc(corrupt)
            if records is None or self._storage is not log:
                break
            found = 0
            for rec in records:
                measured, rec.measured = rec.measured, None
                if not isinstance(measured, tuple):  # the codec could not read it
                    logger.error(
                        "a persistent queue entry cannot be read at start; dropping it: %s",
                        f"{type(measured).__name__}: {measured}",
                    )
                    unreadable.inc()
                    dropped += 1
                    log.complete(rec)
                    continue
                n, nbytes = measured
                stored = _Stored(rec, n, nbytes)
                self._queue.append(stored)
                self._queue_used += self._size(stored)
                found += n
                batches += 1
            del records
            if found:
                items += found
                recovered_items.inc(found)
                self._queue_gauge.set(self._queue_used)
                self._idle.clear()
                self._has_work.set()
            if loop.time() >= next_progress:
                next_progress = loop.time() + 30.0
                logger.info(
                    "recovering the persistent sending queue",
                    extra={
                        "batches": batches,
                        "items": items,
                        "segments_left": recovery.segments_left,
                        "bytes_left": recovery.bytes_left,
                    },
                )
        pending_bytes.set(recovery.bytes_left if self._storage is not log else 0)
        if self._storage is not log:
            logger.info(
                "persistent sending queue recovery stopped (shutdown); what it did not read "
                "stays on disk for the next start",
                extra={"batches": batches, "items": items, "segments_left": recovery.segments_left},
            )
            return
        logger.info(
            "persistent sending queue recovered",
            extra={"batches": batches, "items": items, "unreadable_batches": dropped},
        )

    def _recovery_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.settings.logger.error(
                "the persistent sending queue recovery failed; what it did not read stays on "
                "disk for the next start: %s",
                f"{type(exc).__name__}: {exc}",
            )

    async def start(self, host: Host) -> None:
        self._host = host
        if self.config.sending_queue.storage and self._storage is None:
            await self._open_storage(host)
        if self.config.sending_queue.enabled and not self._workers:
            self._workers = [
                supervise(self.settings, host, f"sender-{i}", self._worker)
                for i in range(self.config.sending_queue.num_consumers)
            ]
            if self._batcher is not None:
                self._workers.append(supervise(self.settings, host, "batch", self._batcher.run))

    async def shutdown(self) -> None:
        if self._shutdown_done:
            return
        self._closing = True
        if self._batcher is not None:
            self._batcher.flush()
        if self._storage is not None:
            await self._shutdown_persistent()
            return
        senders_gone = False
        try:
            while self._queue or self._in_flight:
                senders = self._workers[: self.config.sending_queue.num_consumers]
                alive = [w for w in senders if not w.done()]
                if senders and not alive:
                    senders_gone = True
                    # the workers were given up (their supervisor stopped restarting them):
                    # nobody drains the queue; what it holds is dropped below, counted
                    break
                self._idle.clear()
                idle = asyncio.ensure_future(self._idle.wait())
                try:
                    await asyncio.wait([idle, *alive], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    idle.cancel()
        except asyncio.CancelledError:
            self._drop_queued("the shutdown deadline passed")
            raise
        finally:
            for w in self._workers:
                w.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
            self._drop_queued(
                "its senders had stopped" if senders_gone else "the shutdown deadline passed"
            )
            self._shutdown_done = True

    async def _shutdown_persistent(self) -> None:
        """The persistent queue does not drain: the sends in progress finish (until the
        deadline), what is queued stays on disk for the next start."""
        self._stop_taking = True
        self._has_work.set()
        recovering, self._recovering = self._recovering, None
        if recovering is not None and not recovering.done():
            # (a segment being read finishes in its thread; the log closed below does not
            # take it, and what was not read stays on disk)
            recovering.cancel()
            await asyncio.gather(recovering, return_exceptions=True)
        try:
            await asyncio.gather(*self._workers, return_exceptions=True)
        finally:
            for w in self._workers:
                w.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
            left = len(self._queue)
            if left:
                self.settings.logger.info(
                    "batches stay in the persistent sending queue for the next start",
                    extra={"batches": left, "items": sum(_items(q) for q in self._queue)},
                )
            self._queue.clear()
            self._queue_used = 0
            self._queue_gauge.set(0)
            if self._storage is not None:
                await asyncio.to_thread(self._storage.close)
                self._storage = None
            self._shutdown_done = True

    def _drop_queued(self, reason: str) -> None:
        if self._batcher is not None:
            self._batcher.flush()
        dropped = sum(_items(p) for p in self._queue)
        if dropped:
            self.settings.telemetry.send_failed(self.signal, dropped)
            self.settings.logger.error(
                "dropping queued data: %s",
                reason,
                extra={"dropped_items": dropped, "batches": len(self._queue)},
            )
        self._queue.clear()
        self._queue_used = 0
        self._queue_gauge.set(0)

    # -- sending ----------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            while not self._queue or self._stop_taking:
                if self._stop_taking:
                    return
                self._has_work.clear()
                if not self._in_flight:
                    self._idle.set()
                await self._has_work.wait()
            item = self._queue.popleft()
            self._queue_used = max(self._queue_used - self._size(item), 0)
            self._queue_gauge.set(self._queue_used)
            if isinstance(item, _Stored):
                self._in_flight += 1
                try:
                    await self._send_stored(item)
                finally:
                    del item
                    self._in_flight -= 1
                    if not self._queue and not self._in_flight:
                        self._idle.set()
                continue
            data = item
            del item
            self._in_flight += 1
            try:
                await self._deliver(data, data.item_count(), raise_errors=False)
            except Exception as exc:  # the data could not even be prepared for sending
                self._fail_unexpected(data, exc)
            finally:
                # Drop the reference now: an idle worker must not keep its last batch alive
                # (with 10 workers that was 10 batches, ~25 MB at 100k spans/s).
                del data
                self._in_flight -= 1
                if not self._queue and not self._in_flight:
                    self._idle.set()

    async def _send_stored(self, item: _Stored) -> None:
        """Read a persistent queue entry back and send it; its record is done once it was
        sent or dropped (not when the send is interrupted by shutdown: it stays queued)."""
        log = self._storage
        assert log is not None
        try:
            data = self.codec.decode(log.read(item.record))
        except Exception as exc:
            self.settings.telemetry.send_failed(self.signal, item.items)
            self.settings.log_limited(
                logging.ERROR,
                "cannot read a persistent queue entry back; dropping it: %s",
                exc,
                key="storage_read",
                extra={"dropped_items": item.items},
            )
            log.complete(item.record)
            return
        try:
            await self._deliver(data, item.items, raise_errors=False, persistent=True)
        except asyncio.CancelledError:
            raise  # shutdown: the entry stays for the next start
        except Exception as exc:
            self._fail_unexpected(data, exc)
        log.complete(item.record)

    def _fail_unexpected(self, data: Payload, exc: Exception) -> None:
        try:
            n = data.item_count()
        except Exception:
            n = 1
        self.settings.telemetry.send_failed(self.signal, n)
        self.settings.log_limited(
            logging.ERROR,
            "export failed unexpectedly, dropping data: %s",
            exc,
            key=f"unexpected/{type(exc).__name__}",
            exc_info=exc,
            extra={"dropped_items": n},
        )

    async def _deliver(
        self,
        data: Payload,
        n: int,
        raise_errors: bool,
        split_depth: int = 0,
        persistent: bool = False,
    ) -> None:
        """Send with retries; count the outcome. Raises only when ``raise_errors``."""
        if asyncio.current_task() is None:
            # a worker runs a sibling's part through its pipelines at once, outside any task
            # (pipeline.workers._run_now): the send's asyncio.timeout needs one
            await in_a_task(self._deliver(data, n, raise_errors, split_depth, persistent))
            return
        if self.max_request_bytes and n > 1 and data.nbytes > self.max_request_bytes:
            pieces = -(-data.nbytes // self.max_request_bytes)
            parts = data.split(max(1, -(-n // pieces)))
            if len(parts) > 1:
                self._split_counter.labels(
                    self.settings.name, str(self.signal), "max_request_bytes"
                ).inc()
                await self._deliver_parts(parts, raise_errors, split_depth)
                return
        tel = self.settings.telemetry
        loop = asyncio.get_running_loop()
        started = loop.time()
        backoff = Backoff(self._retry)
        try:
            while True:
                try:
                    # asyncio.timeout, not asyncio.wait_for: on Python 3.11, wait_for answers
                    # the send's outcome instead of a cancellation that arrives in the turn the
                    # send ends in; the shutdown deadline's cancellation was lost and, retrying
                    # until shutdown (max_elapsed_time: 0), the sender never stopped
                    async with asyncio.timeout(self.config.timeout or None):
                        await self._send(data)
                except TimeoutError:
                    error: Exception = RetryableError(
                        f"export timed out after {self.config.timeout}s"
                    )
                except (RetryableError, PermanentError) as exc:
                    # kept across the retry's sleep: without its traceback, which would hold
                    # this frame (and the payload's acknowledgement tokens) in a cycle
                    error = exc.with_traceback(None)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug or an unexpected client error: don't retry
                    error = PermanentError(f"{type(exc).__name__}: {exc}")
                else:
                    tel.sent(self.signal, n)
                    self.consecutive_failures = 0
                    return
                if isinstance(error, RequestTooLargeError):
                    break  # sent in parts below, outside this attempt's accounting
                self._failed(error)
                if isinstance(error, PermanentError) or not self._retry.enabled:
                    tel.send_failed(self.signal, n)
                    permanent = isinstance(error, PermanentError)
                    if raise_errors and not permanent:
                        # no queue and no retries here: the error goes back to the sender,
                        # which may send the data again (as the Collector rejects it)
                        self.settings.logger.error(
                            "export failed, rejecting data (the sender may retry it; "
                            "retry_on_failure or sending_queue retry here): %s",
                            error,
                            extra={"rejected_items": n, "permanent": False},
                        )
                    else:
                        self.settings.logger.error(
                            "export failed, dropping data: %s",
                            error,
                            extra={"dropped_items": n, "permanent": permanent},
                        )
                    if raise_errors:
                        raise error
                    return
                assert isinstance(error, RetryableError)
                delay = backoff.next()
                if error.retry_after is not None:
                    delay = max(delay, error.retry_after)
                max_elapsed = self._retry.max_elapsed_time
                if max_elapsed and loop.time() - started + delay > max_elapsed:
                    tel.send_failed(self.signal, n)
                    self.settings.logger.error(
                        "export failed after retrying for %.0fs, dropping data: %s",
                        loop.time() - started,
                        error,
                        extra={"dropped_items": n},
                    )
                    if raise_errors:
                        raise PermanentError(str(error)) from error
                    return
                tel.retried(self.signal, n)
                self.settings.logger.warning(
                    "export failed, will retry in %.2fs: %s", delay, error, extra={"items": n}
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if persistent:
                self.settings.logger.warning(
                    "export interrupted by shutdown; the batch stays in the persistent queue",
                    extra={"items": n},
                )
                raise
            tel.send_failed(self.signal, n)
            self.settings.logger.error(
                "export interrupted by shutdown, dropping data", extra={"dropped_items": n}
            )
            raise
        await self._split_too_large(data, n, error, raise_errors, split_depth)

    async def _split_too_large(
        self, data: Payload, n: int, error: Exception, raise_errors: bool, split_depth: int
    ) -> None:
        """The receiving side refused ``data`` as too large: send it in halves."""
        parts = data.split(max(1, n // 2)) if n > 1 else [data]
        if len(parts) < 2:
            self._failed(error)
            self.settings.telemetry.send_failed(self.signal, n)
            self.settings.logger.error(
                "export failed, dropping data: a single %s is too large for the receiving "
                "side (%d bytes encoded): %s",
                _SINGLE_ITEM.get(self.signal, "item") if n == 1 else "item",
                data.nbytes,
                error,
                extra={"dropped_items": n, "request_bytes": data.nbytes, "permanent": True},
            )
            if raise_errors:
                raise error
            return
        self._split_counter.labels(self.settings.name, str(self.signal), "too_large").inc()
        if split_depth == 0:
            self.settings.logger.warning(
                "the receiving side refused a request of %d items (%d bytes encoded) as too "
                "large; sending it in parts (lower the batch size or set max_request_bytes to "
                "avoid this): %s",
                n,
                data.nbytes,
                error,
                extra={"items": n, "request_bytes": data.nbytes},
            )
        await self._deliver_parts(parts, raise_errors, split_depth)

    async def _deliver_parts(
        self, parts: list[Payload], raise_errors: bool, split_depth: int
    ) -> None:
        """Deliver each part in order, each with its own retries and counts."""
        first_error: ConsumeError | None = None
        delivered = False
        for part in parts:
            try:
                await self._deliver(part, part.item_count(), raise_errors, split_depth + 1)
            except ConsumeError as exc:
                first_error = first_error or exc
            else:
                delivered = True
        if first_error is not None:
            if delivered and isinstance(first_error, RetryableError):
                # Some parts went through: a retry of the whole would duplicate them.
                raise PermanentError(str(first_error)) from first_error
            raise first_error


def _items(entry: Payload | _Stored) -> int:
    return entry.items if isinstance(entry, _Stored) else entry.item_count()


class _Batcher:
    """``sending_queue.batch``: payloads admitted to the queue wait here until ``min_size``
    (items or bytes) is reached or ``flush_timeout`` passes since the first one, then go into
    the queue merged (encodings concatenated, acknowledgement tokens united) and split at
    ``max_size``."""

    def __init__(self, helper: ExporterHelper, config: QueueBatchConfig) -> None:
        self.helper = helper
        self.config = config
        self.pending: list[Payload] = []
        self.items = 0
        self.bytes = 0
        self.first_at: float | None = None
        self.wake = asyncio.Event()

    def pending_size(self, sizer: str) -> int:
        if sizer == "items":
            return self.items
        if sizer == "bytes":
            return self.bytes
        return 1 if self.pending else 0

    def _size(self) -> int:
        return self.items if self.config.sizer == "items" else self.bytes

    def add(self, data: Payload) -> None:
        self.pending.append(data)
        self.items += data.item_count()
        self.bytes += data.nbytes
        if self.first_at is None:
            self.first_at = asyncio.get_running_loop().time()
        if self.config.min_size and self._size() >= self.config.min_size:
            self.flush()
        else:
            self.wake.set()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        items = self.items
        self.items = self.bytes = 0
        self.first_at = None
        try:
            parts = self._merge(pending)
        except Exception as exc:
            # the payloads were taken (their senders were answered): dropped, counted, logged
            # (instead of raising into whoever flushed: a sender, the batch task or the shutdown)
            helper = self.helper
            helper.settings.telemetry.send_failed(helper.signal, items)
            helper.settings.log_limited(
                logging.ERROR,
                "cannot merge the batch of the sending queue, dropping it: %s",
                f"{type(exc).__name__}: {exc}",
                key="batch_merge",
                exc_info=exc,
                extra={"dropped_items": items},
            )
            return
        for part in parts:
            self.helper._enqueue(part)

    def _merge(self, pending: list[Payload]) -> list[Payload]:
        merged = type(pending[0]).merge(pending)
        max_size = self.config.max_size
        if max_size and self.config.sizer == "items" and merged.item_count() > max_size:
            return merged.split(max_size)
        if max_size and self.config.sizer == "bytes" and merged.nbytes > max_size:
            n = merged.item_count()
            pieces = -(-merged.nbytes // max_size)
            return merged.split(max(1, n // pieces))
        return [merged]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.first_at is None:
                self.wake.clear()
                await self.wake.wait()
                continue
            wait = self.first_at + self.config.flush_timeout - loop.time()
            if wait <= 0:
                self.flush()
                continue
            self.wake.clear()
            try:
                # (asyncio.timeout: wait_for on Python 3.11 loses a cancellation that arrives
                # as the event is set, and the task would not stop; see _deliver)
                async with asyncio.timeout(wait):
                    await self.wake.wait()
            except TimeoutError:
                pass


def exporter_helper_fields() -> dict[str, Any]:
    """The option names the helper adds (for docs)."""
    return dict(ExporterHelperConfig.model_fields)
