"""Durable acknowledgements: a receiver answers success only once the request is in the
write-ahead log, and the record stays there until the pipeline is done with the data.

With ``service.durability.storage`` naming a storage extension (``file_storage``), the engine
puts a :class:`DurableEntry` between each receiver and its pipelines. For every request:

1. the payload gets an :class:`AckToken` for its record and goes into the pipelines (a
   refusal is answered at once, nothing written);
2. once the pipelines took it, the request is appended to the log (group commit: requests
   arriving meanwhile share one write, and one fsync with ``fsync: true``);
3. then the receiver acknowledges.

The token travels with the data (``Payload.merge`` unions tokens, ``split``/``copy`` share
them, a fan-out gives each branch the same payload or a copy, stateful components carry them
to what they emit). The record is done when no live payload holds its token: the exporters
delivered it (or put it into a persistent queue), or a component dropped it on purpose (and
counted it). That is reference counting by object lifetime: :meth:`AckToken.__del__` marks the
record done, so every path that lets go of the data - delivery, a filter, the engine's failure
isolation, a queue given up on - completes the record without code of its own.

On start, the records not done are replayed into the same receiver's pipelines, in the order
they were written, before any receiver starts (waiting while the pipeline pushes back). The
start waits for the replay at most :data:`REPLAY_START_WAIT` seconds: a replay whose pipeline
refuses or blocks (a backend down behind a full queue) goes on in the background while the
receivers start, logged and its progress logged (``otelcol_service_wal_replay_pending_records``:
the records still to replay). While it waits for room in a receiver's pipelines, that
receiver refuses new requests (``reason="replay_first"``), so replayed data is not overtaken
under pushback; otherwise new data may go ahead of replayed data, and each record replayed
after the receivers started is counted (``otelcol_service_wal_replayed_after_start_records``).
A shutdown stops a replay under way at once: the records it did not replay, and the one in the
pipeline when it stopped, stay in the log for the next start (acknowledged: never dropped).
Replayed items are counted in ``otelcol_receiver_replayed_<items>{receiver}``: they were
acknowledged before the crash and their delivery was not confirmed; some of them may have
reached the backend already (delivered, but the process died before the record was marked
done, or a request delivered in parts), so that count bounds the duplicates a crash causes.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import struct
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pipeline.component import ComponentID
from pipeline.errors import ConfigError, DataDroppedError, PermanentError, RetryableError
from pipeline.pdata import Payload, Signal, payload_type
from pipeline.ratelimit import LogLimiter
from pipeline.storage import Record, SegmentLog, StorageError, StorageExtension

if TYPE_CHECKING:
    from pipeline.component import Host
    from pipeline.consumer import Consumer
    from pipeline.telemetry import ComponentTelemetry, SelfTelemetry

log = logging.getLogger("pipeline.durability")

WAL_OWNER = "service_wal"
REPLAY_START_WAIT = 10.0  # seconds the start waits for the replay before the receivers start
REPLAY_PROGRESS_EVERY = 30.0  # seconds between two progress lines of a replay
_ROUTE = struct.Struct("<H")


class AckToken:
    """One acknowledged request's record in the write-ahead log. The record is done when the
    token is garbage (no payload holds it any more)."""

    __slots__ = ("_log", "_record")

    def __init__(self, wal: SegmentLog, record: Record) -> None:
        self._log = wal
        self._record = record

    def __del__(self) -> None:
        self._log.complete(self._record)

    def __repr__(self) -> str:
        return f"AckToken({self._record!r})"


class _ReplayToken(AckToken):
    """A replayed record's token. ``kept``: the replay was stopped (the shutdown) while the
    record was in the pipeline, which may let go of it without delivering it: the record
    stays in the log, replayed again at the next start (at least once, never lost)."""

    __slots__ = ("kept",)

    def __init__(self, wal: SegmentLog, record: Record) -> None:
        super().__init__(wal, record)
        self.kept = False

    def __del__(self) -> None:
        if not self.kept:
            self._log.complete(self._record)


# -- tokens of the payload a component is consuming ---------------------------------------------
# The engine's failure isolation (pipeline.consumer.IsolatedConsumer) sets this around every
# processor's, exporter's and connector's ``consume``: a payload the component builds and
# passes on during that call without tokens of its own (a stateless processor that makes a new
# payload from the one it got, an exporter that translates before queueing) gets the tokens of
# the input (``carry_current``). The holder is emptied when ``consume`` returns, so a task the
# component started meanwhile (which copied the context) keeps no token alive.
_CURRENT: contextvars.ContextVar[list[tuple[object, ...]] | None] = contextvars.ContextVar(
    "pipeline_current_acks", default=None
)


def enter_consume(data: Payload) -> tuple[list[tuple[object, ...]], contextvars.Token[Any]] | None:
    """Called by the engine before a component consumes ``data`` (tokens only)."""
    acks = data.ack_tokens
    if not acks:
        return None
    holder = [acks]
    return holder, _CURRENT.set(holder)


def leave_consume(entered: tuple[list[tuple[object, ...]], contextvars.Token[Any]]) -> None:
    holder, reset = entered
    holder.clear()
    _CURRENT.reset(reset)


def current_acks() -> tuple[object, ...]:
    """The tokens of the payload being consumed in this call path (empty if none)."""
    holder = _CURRENT.get()
    return holder[0] if holder else ()


# the holder of the tokens of the payload being consumed, or None (a C call: for the engine's
# hot path, which does what carry_current does without a Python call)
current_holder = _CURRENT.get


def carry_current(data: Payload) -> Payload:
    """Give ``data`` the tokens of the payload being consumed, if it carries none."""
    if not data.ack_tokens:
        holder = _CURRENT.get()
        if holder:
            data.carry_acks(holder[0])
    return data


class HeldAcks:
    """The tokens of the requests a stateful component holds in a form of its own (the
    workflow processor's trace store), released in arrival order with O(1) work per request.

    The component reports each request's arrival (:meth:`arrived`: its time, its tokens and
    how many new held groups - traces - it created, all stamped with that time) and, when it
    releases groups, their creation times (:meth:`released`). A request's tokens are released
    once no group created at or before its arrival is held any more (the *released watermark*
    passed it): every group holding part of that request was created at or before it, so all
    of it was released - onto the payloads the component emits, which carry the tokens on.
    """

    __slots__ = ("_entries", "_live", "_order")

    def __init__(self, held: Iterable[float] = ()) -> None:
        """``held``: the creation times of the groups already held when tracking starts
        (a component that makes its ``HeldAcks`` when the first payload with tokens arrives
        counts what it held before, so those groups hold the watermark back too)."""
        self._entries: deque[tuple[float, tuple[object, ...]]] = deque()
        self._live: dict[float, list[int]] = {}  # creation time -> [groups held]
        self._order: deque[float] = deque()  # creation times, increasing
        for t in sorted(held):
            counter = self._live.get(t)
            if counter is None:
                self._live[t] = [1]
                self._order.append(t)
            else:
                counter[0] += 1

    def arrived(self, now: float, acks: tuple[object, ...], created: int, held: bool) -> None:
        """A request consumed at ``now``: ``created`` new groups were stamped ``now``; ``held``
        says whether any of its items is held (else its tokens need not wait)."""
        if created:
            counter = self._live.get(now)
            if counter is None:
                self._live[now] = [created]
                self._order.append(now)
            else:
                counter[0] += created
        if acks and held:
            self._entries.append((now, acks))

    def released(self, created_times: list[float]) -> tuple[object, ...]:
        """Groups created at ``created_times`` were released: the tokens now free to go onto
        what the component emits for them."""
        live = self._live
        for t in created_times:
            counter = live.get(t)
            if counter is not None:
                counter[0] -= 1
        order = self._order
        while order and live[order[0]][0] <= 0:
            del live[order.popleft()]
        watermark = order[0] if order else float("inf")
        entries = self._entries
        if not entries or entries[0][0] >= watermark:
            return ()
        out: list[object] = []
        while entries and entries[0][0] < watermark:
            out.extend(entries.popleft()[1])
        return tuple(out)

    def __len__(self) -> int:
        return len(self._entries)


# -- the write-ahead log -------------------------------------------------------------------------
class WriteAheadLog:
    """The service's write-ahead log: the entries receivers push through, and the replay."""

    def __init__(self, storage: ComponentID, receivers: list[ComponentID] | None) -> None:
        self.storage = storage
        self.receivers = set(receivers) if receivers is not None else None
        self.log: SegmentLog | None = None
        self._routes: dict[str, tuple[Consumer, Signal, ComponentTelemetry]] = {}
        self._pending: list[Record] = []
        self.limiter = LogLimiter()
        self._host: Host | None = None
        self._reported: dict[str, str] = {}  # receiver instance -> error status it reports
        self._replay_task: asyncio.Task[None] | None = None
        self._replay_left = 0  # records the replay has not handled yet
        self._pending_gauge: Any = None
        # the route of the record the replay is waiting to push (its pipeline pushes back):
        # new requests of that route are refused meanwhile, so the replayed data takes the
        # room that frees first (replayed data goes ahead of new data of the same receiver)
        self.replay_waiting: str | None = None
        self._receivers_started = False  # the replay went on after the receivers started
        self._late: Any = None

    def covers(self, receiver: ComponentID) -> bool:
        return self.receivers is None or receiver in self.receivers

    def entry(
        self,
        receiver: ComponentID,
        signal: Signal,
        inner: Consumer,
        telemetry: ComponentTelemetry,
        instance: str = "",
    ) -> DurableEntry:
        """The consumer a receiver pushes ``signal`` into: ``inner`` behind the log.
        ``instance``: the receiver's instance name, whose status reports the log's failures."""
        route = f"{signal}:{receiver}"
        self._routes[route] = (inner, signal, telemetry)
        return DurableEntry(self, route, inner, instance or f"receiver {receiver}", telemetry)

    def open(self, host: Host) -> int:
        """Open the log in the storage extension; returns the records waiting for replay."""
        ext = host.get_extension(self.storage)
        if not isinstance(ext, StorageExtension):
            raise ConfigError(
                "service.durability.storage",
                f"extension {self.storage} does not provide storage (use a file_storage "
                "extension listed in service.extensions)",
            )
        self._host = host
        self.log = ext.log(WAL_OWNER)
        self._pending = self.log.open()
        if self.log.stats.corrupt:  # (each logged by the storage, where and why)
            self._count_dropped("corrupt", self.log.stats.corrupt)
        return len(self._pending)

    async def replay_at_start(
        self, telemetry: SelfTelemetry | None = None, wait: float | None = None
    ) -> None:
        """Start the replay (:meth:`replay`) and wait for it at most ``wait`` seconds
        (:data:`REPLAY_START_WAIT`): a replay that the pipeline pushes back on or blocks goes
        on in the background, and the start goes on (the receivers start). Called after
        every other component started; a shutdown stops it (:meth:`stop_replay`)."""
        if self.log is None or not self._pending:
            return
        if telemetry is not None:
            self._pending_gauge = telemetry.gauge(
                "otelcol_service_wal_replay_pending_records",
                "Write-ahead log records found at start and not replayed yet (the replay "
                "goes on in the background when the pipeline pushes back; those left when "
                "the gateway stops are replayed at the next start).",
                (),
            )
        wait = REPLAY_START_WAIT if wait is None else wait
        task = self._replay_task = asyncio.ensure_future(self.replay())
        done, _ = await asyncio.wait({task}, timeout=wait)
        if done:
            self._replay_task = None
            task.result()  # (a bug in the replay stops the start, as before)
            return
        self._receivers_started = True
        if telemetry is not None:
            self._late = telemetry.counter(
                "otelcol_service_wal_replayed_after_start_records",
                "Write-ahead log records replayed after the receivers started (the start "
                "waits for the replay at most 10 s): their items may reach the pipeline "
                "after newer items of the same trace.",
                (),
            )
        log.warning(
            "the write-ahead log replay is not done after %gs (the pipeline pushes back or is "
            "slow): the receivers start now and the replay goes on; while it waits for room "
            "the receiver whose record it holds refuses new data (replayed data first), "
            "otherwise new data may go ahead of replayed data",
            wait,
            extra={"records_left": self._replay_left},
        )
        task.add_done_callback(_replay_ended)

    async def stop_replay(self, within: float) -> None:
        """Stop a replay under way (the shutdown), waiting at most ``within`` seconds for it
        to end: what it did not replay stays in the log for the next start."""
        task, self._replay_task = self._replay_task, None
        if task is None or task.done():
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=max(within, 0.1))
        if not done:
            # a component swallowed the cancellation: nothing is marked done from now on
            # (what is delivered during this shutdown is replayed again: never lost)
            if self.log is not None:
                self.log.freeze()
            log.error(
                "the write-ahead log replay did not stop in time; left behind, the log keeps "
                "every record for the next start"
            )

    async def replay(self) -> None:
        """Push every record not done into its receiver's pipelines, waiting while they push
        back. Cancelled (the shutdown): what it did not deliver stays in the log."""
        wal = self.log
        pending, self._pending = self._pending, []
        if wal is None or not pending:
            return
        log.info("replaying the write-ahead log", extra={"records": len(pending)})
        self._set_left(len(pending))
        loop = asyncio.get_running_loop()
        next_progress = loop.time() + REPLAY_PROGRESS_EVERY
        items = 0
        for i, rec in enumerate(pending):
            self._set_left(len(pending) - i)
            if loop.time() >= next_progress:
                next_progress = loop.time() + REPLAY_PROGRESS_EVERY
                log.info(
                    "replaying the write-ahead log",
                    extra={"records": len(pending), "replayed_records": i, "items": items},
                )
            try:
                body = wal.read(rec)
            except StorageError as exc:
                self._drop_record(
                    wal, rec, "unreadable", "cannot read a write-ahead log record", exc
                )
                continue
            try:
                (n,) = _ROUTE.unpack_from(body)
                if _ROUTE.size + n > len(body):
                    raise ValueError(f"a route of {n} bytes in a record of {len(body)}")
            except (struct.error, ValueError) as exc:
                self._drop_record(
                    wal, rec, "malformed", "a write-ahead log record is malformed", exc
                )
                continue
            route = body[_ROUTE.size : _ROUTE.size + n].decode("utf-8", "replace")
            data = body[_ROUTE.size + n :]
            target = self._routes.get(route)
            if target is None:
                self._drop_record(
                    wal,
                    rec,
                    "unknown_receiver",
                    "a write-ahead log record is for a receiver no longer in the configuration",
                    route,
                )
                continue
            consumer, signal, telemetry = target
            payload = payload_type(signal)(data)
            try:
                count = payload.item_count()
            except Exception as exc:
                self._drop_record(
                    wal, rec, "malformed", "a write-ahead log record cannot be read", exc
                )
                continue
            token = _ReplayToken(wal, rec)
            payload.carry_acks((token,))
            del body, data
            try:
                delivered = await _deliver(consumer, payload, telemetry, count, self, route)
            except asyncio.CancelledError:
                token.kept = True  # (the pipeline may hold it still, or have let it go)
                left = len(pending) - i
                log.warning(
                    "the write-ahead log replay stopped (shutdown); the records it did not "
                    "replay stay in the log for the next start",
                    extra={"records_left": left, "replayed_records": i, "items": items},
                )
                raise
            if delivered:
                telemetry.replayed(signal, count)
                items += count
                if self._receivers_started and self._late is not None:
                    self._late.inc()
            del payload, token
        self._set_left(0)
        log.info(
            "write-ahead log replayed",
            extra={"records": len(pending), "items": items},
        )

    def _set_left(self, n: int) -> None:
        self._replay_left = n
        if self._pending_gauge is not None:
            self._pending_gauge.set(n)

    def _drop_record(
        self, wal: SegmentLog, rec: Record, reason: str, what: str, detail: object
    ) -> None:
        """A record replay cannot deliver: done (it would fail the same way at every start),
        counted (``otelcol_service_wal_dropped_records{reason}``) and logged."""
        # (the message, not an error: its traceback would keep the record's data)
        log.error("%s (%s); dropping it", what, str(detail), extra={"reason": reason})
        wal.complete(rec)
        self._count_dropped(reason, 1)

    def _count_dropped(self, reason: str, n: int) -> None:
        if self._routes:  # (the service's telemetry, through any receiver's)
            telemetry = next(iter(self._routes.values()))[2]
            telemetry.service.counter(
                "otelcol_service_wal_dropped_records",
                "Write-ahead log records replay could not deliver (unreadable, malformed, "
                "damaged on disk - corrupt -, or for a receiver no longer configured), by "
                "reason; each logged.",
                ("reason",),
            ).labels(reason).inc(n)

    # -- failures of the log while the gateway runs ----------------------------------------
    def refuse(self, entry: DurableEntry, exc: StorageError | None, failed: bool) -> RetryableError:
        """A request ``entry`` cannot log: counted
        (``otelcol_service_wal_refused_requests{receiver, reason}``), logged (at most once a
        second), the receiver's status reported, and the error the sender gets.

        ``failed``: the log failed for good (an I/O error, a bug in its writer): it refuses
        every write until it is restarted, which only a reload or a restart does, so the
        receiver reports ``permanent_error`` (the Collector's status for a component that
        cannot work any more without someone acting: the health check answers 503) and the
        sender gets ``UNAVAILABLE`` / 503 with a retry delay (it is not the sender's load).
        Otherwise (a full disk: the next write is tried again), ``recoverable_error`` (the
        Collector's status for a failure that may clear by itself; back to ``ok`` with the
        next request logged) and ``RESOURCE_EXHAUSTED`` / 429."""
        reason = "log_failed" if failed else "write_failed"
        detail = str(exc.strerror or exc) if exc is not None else "the log has failed"
        _refused_counter(entry).labels(entry.instance, reason).inc()
        self.limiter.log(
            log,
            logging.ERROR,
            "cannot write the write-ahead log; %s refuses the request and asks the sender to "
            "retry (%s): %s",
            entry.instance,
            "the log has failed: reload or restart the gateway once the storage works"
            if failed
            else "the write failed",
            detail,
            key=f"wal_{reason}",
        )
        status = "permanent_error" if failed else "recoverable_error"
        if self._reported.get(entry.instance) != status and self._host is not None:
            self._reported[entry.instance] = status
            self._host.report_status(
                entry.instance,
                status,
                StorageError(errno.EIO, f"the write-ahead log cannot be written: {detail}"),
            )
        return RetryableError(
            f"cannot write the write-ahead log: {detail}",
            retry_after=5.0 if failed else 1.0,
            resource_exhausted=not failed,
        )

    def refuse_for_replay(self, entry: DurableEntry) -> RetryableError:
        """A new request of the receiver whose replayed record waits for room in the
        pipeline: refused (``RESOURCE_EXHAUSTED`` / 429: the pipeline is full, which is what
        the request would meet), so the room that frees goes to the replayed data first.
        Counted (``otelcol_service_wal_refused_requests{receiver, reason="replay_first"}``)
        and logged (at most once a second); the receiver's status does not change."""
        _refused_counter(entry).labels(entry.instance, "replay_first").inc()
        self.limiter.log(
            log,
            logging.WARNING,
            "%s refuses a request while the write-ahead log replay waits for room in its "
            "pipelines (replayed data goes first; the sender retries)",
            entry.instance,
            key="wal_replay_first",
        )
        return RetryableError(
            "the pipeline is full: replaying acknowledged data first",
            retry_after=1.0,
            resource_exhausted=True,
        )

    def logged(self, entry: DurableEntry) -> None:
        """A request was logged: a receiver that reported a write failure is ``ok`` again."""
        if self._reported.get(entry.instance) == "recoverable_error":
            del self._reported[entry.instance]
            if self._host is not None:
                self._host.report_status(entry.instance, "ok")

    async def restart_if_failed(self) -> bool:
        """Called by a config reload: a log that failed takes writes again (a new segment,
        a new writer; what it holds is kept), and the receivers that reported its failure
        report ``ok``. Returns whether it had failed. Raises :class:`StorageError` if it
        cannot start again."""
        wal = self.log
        if wal is None or not await asyncio.to_thread(wal.restart_writer):
            return False
        for instance in list(self._reported):
            del self._reported[instance]
            if self._host is not None:
                self._host.report_status(instance, "ok")
        return True

    def freeze(self) -> None:
        """The shutdown deadline passed: what is dropped from now on stays in the log."""
        if self.log is not None:
            self.log.freeze()

    def close(self) -> None:
        wal = self.log
        if wal is None:
            return
        wal.close()
        left = wal.stats.live
        if left:
            log.warning(
                "requests not delivered stay in the write-ahead log and are replayed at the "
                "next start",
                extra={"records": left},
            )
        self.log = None


def _replay_ended(task: asyncio.Task[None]) -> None:
    """A replay that went on in the background ended: a failure of its own is logged."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("the write-ahead log replay failed: %s", exc, exc_info=exc)


async def _deliver(
    consumer: Consumer,
    payload: Payload,
    telemetry: ComponentTelemetry,
    count: int,
    wal: WriteAheadLog | None = None,
    route: str = "",
) -> bool:
    try:
        return await _deliver_waiting(consumer, payload, telemetry, count, wal, route)
    finally:
        if wal is not None:
            wal.replay_waiting = None


async def _deliver_waiting(
    consumer: Consumer,
    payload: Payload,
    telemetry: ComponentTelemetry,
    count: int,
    wal: WriteAheadLog | None,
    route: str,
) -> bool:
    delay = 0.05
    loop = asyncio.get_running_loop()
    began = loop.time()
    next_warning = began
    while True:
        try:
            await consumer.consume(payload)
            return True
        except RetryableError as exc:
            if wal is not None:
                wal.replay_waiting = route
            # acknowledged data is never given up, so the replay waits as long as the
            # pipeline pushes back (a backend down behind a full queue, a queue whose storage
            # failed): said at once and every 30 s while it lasts, with how long it waited
            now = loop.time()
            if now >= next_warning:
                log.warning(
                    "the pipeline pushes back during replay; waiting (acknowledged data is "
                    "not given up): %s",
                    exc,
                    extra={"waited_seconds": round(now - began, 1)},
                )
                next_warning = now + 30.0
            await asyncio.sleep(max(delay, min(exc.retry_after or 0.0, 1.0)))
            delay = min(delay * 2, 1.0)
        except DataDroppedError:
            return False  # counted where it was dropped
        except PermanentError as exc:
            telemetry.dropped(payload.signal, count, "replay_refused")
            log.error("the pipeline refused a replayed request permanently; dropped: %s", exc)
            return False
        except Exception as exc:  # a failure the engine did not isolate: never stop the start
            telemetry.dropped(payload.signal, count, "replay_failed")
            log.error("a replayed request failed in the pipeline; dropped: %s", exc, exc_info=exc)
            return False


class DurableEntry:
    """What a receiver pushes into when durability is on: pipelines first, then the log,
    then the acknowledgement."""

    mutates_data = False

    def __init__(
        self,
        wal: WriteAheadLog,
        route: str,
        inner: Consumer,
        instance: str,
        telemetry: ComponentTelemetry,
    ) -> None:
        self.wal = wal
        self.inner = inner
        self.instance = instance
        self.telemetry = telemetry
        self.route = route
        raw = route.encode()
        self.header = _ROUTE.pack(len(raw)) + raw

    async def consume(self, data: Payload) -> None:
        wal = self.wal.log
        if wal is None:
            raise RetryableError("the write-ahead log is not open yet", retry_after=1.0)
        if wal.stats.failed:
            # refused before the pipeline takes it: a log that failed refuses every write, so
            # a request passed on and then refused would reach the backend at every retry of
            # its sender (duplicates without end, while the gateway answered only errors)
            raise self.wal.refuse(self, None, failed=True)
        if self.wal.replay_waiting == self.route:
            raise self.wal.refuse_for_replay(self)
        raw = data.to_bytes()  # the request as received (a processor may change the payload)
        rec = Record()
        data.carry_acks((AckToken(wal, rec),))
        await self.inner.consume(data)
        try:
            await wal.append((self.header, raw), rec)
        except StorageError as exc:
            raise self.wal.refuse(self, exc, failed=wal.stats.failed) from exc
        self.wal.logged(self)


def _refused_counter(entry: DurableEntry) -> Any:
    """``otelcol_service_wal_refused_requests{receiver, reason}`` of ``entry``'s service."""
    return entry.telemetry.service.counter(
        "otelcol_service_wal_refused_requests",
        "Requests a receiver refused (the sender is asked to retry) because the write-ahead "
        "log could not take them, by reason (log_failed: the log failed and refuses writes "
        "until a reload or restart; write_failed: one write failed, such as a full disk; "
        "replay_first: the replay waits for room in that receiver's pipelines); each logged.",
        ("receiver", "reason"),
    )
