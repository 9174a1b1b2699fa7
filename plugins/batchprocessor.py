"""The ``batch`` processor, with the Collector's options and meaning.

* ``send_batch_size`` (default 8192): once this many items are waiting, a batch is sent
  (0: only ``timeout`` triggers a send);
* ``timeout`` (default 200ms): the longest an item waits for its batch to fill (0: send at once);
* ``send_batch_max_size`` (default 0, no limit): larger batches are split.

Batches are built by concatenating encoded requests (lazily: a batch keeps its requests as
parts, which an exporter that only compresses and sends never joins; ``Payload.merge``), and
split without decoding a span or log record. The ``timeout`` is one event-loop timer, set by
the consume that begins a batch: the batching task wakes once per batch (when it is due or
full), and no task or timeout object is made per batch (at 10,000 spans/s behind the
``workflow`` processor, a batch every 200 ms: three task switches and a task fewer each).

When the next consumer pushes back (an exporter's queue is full), the batch is held and retried,
and new data is refused with a retryable error once eight batches' worth of items are waiting,
so senders back off instead of data being dropped. On shutdown everything waiting is flushed;
what cannot be delivered by the shutdown deadline is counted as dropped.

Durability: waiting batches are in memory. With ``service.durability`` on they keep the
write-ahead log tokens of their requests (``Payload.merge`` unions them), so a crash replays
them; without it, a crash loses them (docs/durability.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pydantic import Field, model_validator

import pipeline
from pipeline import (
    Component,
    ComponentConfig,
    Consumer,
    CreateSettings,
    Duration,
    Host,
    Payload,
    ProcessorFactory,
    RetryableError,
    Seconds,
    Signal,
    Stability,
)
from pipeline.consumer import deliver_holding
from pipeline.tasks import supervise
from pipeline.telemetry import loop_value

BATCH_SIZE_BUCKETS = (
    10,
    25,
    50,
    75,
    100,
    250,
    500,
    750,
    1000,
    2000,
    3000,
    4000,
    5000,
    6000,
    7000,
    8000,
    9000,
    10000,
    20000,
    30000,
    50000,
    100000,
)
BACKLOG_BATCHES = 8


class BatchConfig(ComponentConfig):
    """``processors.batch``."""

    timeout: Duration = Seconds(0.2)
    send_batch_size: int = Field(8192, ge=0)
    send_batch_max_size: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> BatchConfig:
        if self.send_batch_max_size and self.send_batch_max_size < self.send_batch_size:
            raise ValueError(
                f"send_batch_max_size ({self.send_batch_max_size}) must be greater than or equal "
                f"to send_batch_size ({self.send_batch_size})"
            )
        return self


class BatchProcessor(Component):
    """Accumulates payloads and sends them in batches from one background task."""

    mutates_data = False

    def __init__(
        self,
        settings: CreateSettings,
        config: BatchConfig,
        signal: Signal,
        next_consumer: Consumer,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.signal = signal
        self.next = next_consumer
        self._pending: list[Payload] = []
        self._pending_items = 0
        self._held_items = 0  # in the batch being sent (or retried)
        self._first_arrival: float | None = None
        self._wake = asyncio.Event()
        # the timeout of the batch being gathered: a loop timer set by the first item's
        # consume, which wakes the batching task when the batch is due (the task is not woken
        # to set it, and no task or timeout object is made per batch)
        self._due: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._done = False
        size = max(config.send_batch_size, config.send_batch_max_size, 1)
        if config.send_batch_size == 0 and config.send_batch_max_size == 0:
            size = 8192
        self.backlog_limit = size * BACKLOG_BATCHES
        service = settings.telemetry.service
        self._size_hist = service.histogram(
            "otelcol_processor_batch_batch_send_size",
            "Number of items in each batch sent.",
            ("processor",),
            BATCH_SIZE_BUCKETS,
        ).labels(settings.name)
        # (counted on the event loop, once a batch: lock-free values, pipeline.telemetry)
        self._size_trigger = loop_value(
            service.counter(
                "otelcol_processor_batch_batch_size_trigger_send",
                "Batches sent because they reached send_batch_size.",
                ("processor",),
            ).labels(settings.name)
        )
        self._timeout_trigger = loop_value(
            service.counter(
                "otelcol_processor_batch_timeout_trigger_send",
                "Batches sent because the timeout passed.",
                ("processor",),
            ).labels(settings.name)
        )

    # -- consumer -----------------------------------------------------------------------------
    async def consume(self, data: Payload) -> None:
        n = data.item_count()
        if n == 0:
            return
        if self._closing:
            raise RetryableError(
                f"processor {self.settings.name} is shutting down", retry_after=1.0
            )
        if self._pending_items + self._held_items + n > self.backlog_limit and self._pending_items:
            raise RetryableError(
                f"processor {self.settings.name} cannot pass data on as fast as it arrives "
                f"({self._pending_items + self._held_items} items waiting)",
                retry_after=1.0,
                resource_exhausted=True,
            )
        self._pending.append(data)
        self._pending_items += n
        if self._first_arrival is None:
            loop = asyncio.get_running_loop()
            self._first_arrival = loop.time()
            if self.config.timeout and self._due is None:
                self._due = loop.call_at(self._first_arrival + self.config.timeout, self._on_due)
        if self.config.timeout == 0 or (
            self.config.send_batch_size and self._pending_items >= self.config.send_batch_size
        ):
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        if self._task is None:
            self._task = supervise(self.settings, host, "batch", self._run)

    async def shutdown(self) -> None:
        if self._done:
            return
        self._closing = True
        self._wake.set()
        try:
            if self._task is not None:
                await asyncio.shield(self._task)
            else:
                await self._flush_all()
        except asyncio.CancelledError:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._count_lost()
            raise
        finally:
            self._done = True

    def _on_due(self) -> None:
        self._due = None
        self._wake.set()

    def _count_lost(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        lost = self._pending_items + self._held_items
        if lost:
            self.settings.telemetry.dropped(self.signal, lost, "shutdown_deadline")
            self.settings.logger.error(
                "shutdown deadline passed before the batch could be sent; dropping data",
                extra={"dropped_items": lost},
            )
        self._pending.clear()
        self._pending_items = self._held_items = 0

    # -- the batching loop --------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        while True:
            if self._closing:
                await self._flush_all()
                return
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            size_reached = bool(cfg.send_batch_size) and self._pending_items >= cfg.send_batch_size
            assert self._first_arrival is not None
            wait = self._first_arrival + cfg.timeout - loop.time()
            if size_reached or wait <= 0:
                await self._send_pending(size_reached)
                continue
            self._wake.clear()
            if self._due is None:  # (the consume that began the batch sets it)
                self._due = loop.call_at(self._first_arrival + cfg.timeout, self._on_due)
            await self._wake.wait()

    async def _flush_all(self) -> None:
        while self._pending:
            await self._send_pending(False)

    async def _send_pending(self, size_triggered: bool) -> None:
        batch_items = self._pending
        self._pending = []
        self._held_items += self._pending_items
        self._pending_items = 0
        self._first_arrival = None
        if self._due is not None:
            self._due.cancel()
            self._due = None
        try:
            parts = cut(batch_items, self.config.send_batch_max_size)
        except Exception as exc:
            # a payload whose framing cannot be split: each payload goes on alone, and the
            # next components' isolation drops what they cannot process
            self.settings.log_limited(
                logging.WARNING,
                "cannot cut the batch at send_batch_max_size; sending its requests one by one: %s",
                exc,
                key="cut",
            )
            parts = batch_items
        (self._size_trigger if size_triggered else self._timeout_trigger).value += 1
        for part in parts:
            await self._send(part)

    async def _send(self, part: Payload) -> None:
        """Deliver one batch, holding it while the next component pushes back. If the task is
        cancelled (shutdown deadline), the batch stays counted in ``_held_items``."""
        n = part.item_count()
        if await deliver_holding(self.next, part, self.settings):
            self._size_hist.observe(n)
        self._held_items -= n


def cut(payloads: list[Payload], max_items: int) -> list[Payload]:
    """``payloads`` (in order) as batches of at most ``max_items`` items (0: one batch).

    Whole payloads are concatenated (no decoding); only a payload that straddles a batch
    boundary is split (once: its first piece tops up the open batch), so the cost of splitting
    is that of the straddling request, not of the whole batch. Metrics are split at metric
    boundaries, so their batches may hold fewer items, and a single metric with more points
    than ``max_items`` makes a batch of its own."""
    merge = type(payloads[0]).merge
    if not max_items:
        return [merge(payloads)]
    parts: list[Payload] = []
    current: list[Payload] = []
    room = max_items
    for whole in payloads:
        payload: Payload | None = whole
        n = whole.item_count()
        if n > room:
            pieces = whole.split(max_items, first=room)
            if current and pieces[0].item_count() <= room:
                current.append(pieces.pop(0))
            if current:
                parts.append(merge(current))
                current, room = [], max_items
            payload = pieces.pop() if pieces else None
            parts.extend(pieces)
            n = payload.item_count() if payload is not None else 0
        if payload is None:
            continue
        if n >= room:  # fills the batch (or a single metric larger than a batch)
            current.append(payload)
            parts.append(merge(current))
            current, room = [], max_items
            continue
        current.append(payload)
        room -= n
    if current:
        parts.append(merge(current))
    return parts


class BatchProcessorFactory(ProcessorFactory):
    type = "batch"
    config_class = BatchConfig
    description = "Groups items into batches by size and time, without decoding them."
    stability = {
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    }

    def create_traces(
        self, settings: CreateSettings, config: BatchConfig, next_consumer: Consumer
    ) -> BatchProcessor:
        return BatchProcessor(settings, config, Signal.TRACES, next_consumer)

    def create_metrics(
        self, settings: CreateSettings, config: BatchConfig, next_consumer: Consumer
    ) -> BatchProcessor:
        return BatchProcessor(settings, config, Signal.METRICS, next_consumer)

    def create_logs(
        self, settings: CreateSettings, config: BatchConfig, next_consumer: Consumer
    ) -> BatchProcessor:
        return BatchProcessor(settings, config, Signal.LOGS, next_consumer)


@pipeline.hookimpl
def register_components(registry: pipeline.Registry) -> None:
    registry.register(BatchProcessorFactory())
