"""The ``workflow`` processor.

Spans are grouped by trace id across requests and held until ``wait_duration`` has passed since
the trace's last span (or until ``max_traces`` / ``max_bytes`` force the least recently active
trace out early). A released workflow trace has every span stamped with ``workflow.id``,
``workflow.type``, ``workflow.agent.id``, ``workflow.outcome`` and ``workflow.complexity_tier``;
failed tool calls lacking ``error.type`` get one. Released workflows are remembered (a bounded
LRU) so spans arriving after the release are stamped and passed on at once.

The parts, one file each:

* this file: the component (consume, the outbox and its sender, durable acknowledgements,
  self-telemetry, lifecycle);
* ``store.py``: the held traces behind the :class:`~plugins.workflowprocessor.store.TraceStore`
  protocol, its Python implementation, and ``native.py`` its C one (``_tracewire``);
* ``rules.py``: what spans and traces say (workflow roots, tool calls, tiers, stamps), pure;
* ``wire.py``: the OTLP wire encoding (attributes appended to encoded spans, requests
  assembled from them);
* ``timer.py``: the release timer; ``recent.py``: the console's view.

How it stays cheap: requests are parsed with the shallow/skeleton views of ``pipeline._wire``
(each span kept as its encoded bytes, only its ids parsed) or by the C accelerator; a span is
fully decoded only when it is a root, a tool call or the first to name the agent. Attributes
are added by appending encoded ``KeyValue`` fields to a span's bytes, and the output request
is assembled from bytes without re-encoding any span. The input payload is never changed (new
payloads are built), so ``mutates_data`` is false and the fan-out copies nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline import (
    Component,
    Consumer,
    CreateSettings,
    Host,
    Payload,
    RetryableError,
    Signal,
    Traces,
)
from pipeline.consumer import deliver_holding
from pipeline.durability import HeldAcks
from pipeline.tasks import in_a_task, supervise
from pipeline.telemetry import LoopValue, ReadValue, loop_value
from plugins._agentconv import AttributeNames, ErrorClassifier
from plugins._native import load as _load_native
from plugins.workflowprocessor import native as _native_store
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.recent import RecentWorkflows
from plugins.workflowprocessor.store import (
    PythonTraceStore,
    Release,
    StoreConfig,
    TraceStore,
)
from plugins.workflowprocessor.timer import ReleaseTimer

# The longest the sender passes released traces on in one loop step (seconds; see _send_loop)
SEND_SLICE = 0.005

# The C accelerator of the trace store (plugins/_native/_tracewire.c), or None: then the
# Python store, which gives the same results, is used.
_tracewire: Any = _load_native("_tracewire")


def make_store(
    config: StoreConfig,
    classifier: ErrorClassifier,
    on_classified: Callable[[], None],
    on_late: Callable[[str], None],
    native: bool | None = None,
) -> TraceStore:
    """The C store when the accelerator is there and handles the configuration (and
    ``native`` is not false), else the Python store."""
    tw = _tracewire
    if native is not False and tw is not None and _native_store.supports(config.names):
        return _native_store.NativeTraceStore(tw, config, classifier, on_classified, on_late)
    if native:
        raise RuntimeError("the C accelerator _tracewire is not available for this configuration")
    return PythonTraceStore(config, classifier, on_classified, on_late)


class WorkflowProcessor(Component):
    """Holds traces for a bounded wait, then stamps workflow attributes on their spans.
    ``native``: the C trace store (``True``: required), the Python one (``False``), or the C
    one when available (``None``, the default)."""

    mutates_data = False

    def __init__(
        self,
        settings: CreateSettings,
        config: WorkflowConfig,
        next_consumer: Consumer,
        native: bool | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.next = next_consumer
        self.names: AttributeNames = config.attributes
        self._max_bytes = config.max_bytes  # (read once a consume: not through pydantic)
        self._init_telemetry()
        # failed tool calls given an error.type since the counter was last updated: counted
        # here (one per call, ~20 a request of the agent benchmark) and added to the counter
        # once per request (_update_gauges), not through the metric's lock and checks each time
        self._classified = 0
        self.store: TraceStore = make_store(
            StoreConfig.from_config(config),
            ErrorClassifier(config.error_classification),
            self._count_classified,
            self._count_late,
            native,
        )
        # the store's limits (max_traces, max_bytes), checked here once a consume
        self._limits = (self.store.config.max_traces, self.store.config.max_bytes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: collections.deque[tuple[Payload, int, int]] = collections.deque()
        self._outbox_bytes = 0
        self._outbox_spans = 0
        self._sending_spans = 0
        self._outbox_ready = asyncio.Event()
        self._drained = asyncio.Event()
        self.timer = ReleaseTimer(
            config.wait_duration, self.store.next_deadline, self._release_expired
        )
        self._timer: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._closing = False
        self._done = False
        # durable acknowledgements: the tokens of the requests whose spans are held, released
        # onto the payloads that carry those spans on (pipeline.durability.HeldAcks); made
        # when the first payload with tokens arrives (nothing to track without durability)
        self._acks: HeldAcks | None = None
        self._consuming: tuple[object, ...] = ()  # tokens of the request being ingested
        self._released_children: dict[str, tuple[Any, Any]] = {}
        self._workflow_children: dict[str, Any] = {}
        self._late_children: dict[str, Any] = {}
        # the console's view: held traces and recent workflows (plugins/workflowprocessor/recent.py)
        store = self.store
        self.recent = RecentWorkflows(
            lambda: store.held,
            lambda: (len(store.held), store.held_spans, store.held_bytes),
            (config.max_traces, config.max_bytes),
            store.tier,
            stamp_of=store.released.get,
        )
        store.recent = self.recent
        settings.provide(self.recent)
        self._init_gauges()

    # -- self-telemetry -------------------------------------------------------------------------
    def _init_telemetry(self) -> None:
        service = self.settings.telemetry.service
        name = self.settings.name
        self._g_traces = service.gauge(
            "otelcol_processor_workflow_traces_held",
            "Traces held by the workflow processor, waiting for their last span.",
            ("processor",),
        ).labels(name)
        self._g_spans = service.gauge(
            "otelcol_processor_workflow_spans_held",
            "Spans held by the workflow processor (waiting, or released and not yet sent).",
            ("processor",),
        ).labels(name)
        self._g_bytes = service.gauge(
            "otelcol_processor_workflow_bytes_held",
            "Approximate bytes held by the workflow processor for waiting traces.",
            ("processor",),
        ).labels(name)
        self._c_traces = service.counter(
            "otelcol_processor_workflow_traces_released",
            "Traces released by the workflow processor, by reason (wait = normal; max_traces, "
            "max_bytes = released early because a limit was reached; shutdown).",
            ("processor", "reason"),
        )
        self._c_spans = service.counter(
            "otelcol_processor_workflow_spans_released",
            "Spans released by the workflow processor, by reason (as traces_released).",
            ("processor", "reason"),
        )
        self._c_late = service.counter(
            "otelcol_processor_workflow_late_spans",
            "Spans that arrived after their trace was released (enriched = stamped from the "
            "cache of recent workflows; not_workflow = the trace was not a workflow).",
            ("processor", "result"),
        )
        self._c_workflows = service.counter(
            "otelcol_processor_workflow_workflows",
            "Workflows stamped by the workflow processor, by outcome.",
            ("processor", "outcome"),
        )
        self._c_error_types = loop_value(
            service.counter(
                "otelcol_processor_workflow_error_types_added",
                "Failed tool calls given an error.type by the workflow processor.",
                ("processor",),
            ).labels(name)
        )
        self._c_refused = service.counter(
            "otelcol_processor_workflow_refused_spans",
            "Spans refused (retryable) because released data could not be sent fast enough.",
            ("processor",),
        ).labels(name)

    def _init_gauges(self) -> None:
        """The held gauges read the store when collected (a scrape), not set on every request
        and release (three ``float()`` and stores a consume)."""
        store = self.store
        self._reads = (
            ReadValue(lambda: len(store.held)),
            ReadValue(lambda: store.held_spans + self._outbox_spans + self._sending_spans),
            ReadValue(lambda: store.held_bytes),
        )
        for gauge, read in zip(self._gauges(), self._reads, strict=True):
            gauge._value = read

    def _gauges(self) -> tuple[Any, Any, Any]:
        return self._g_traces, self._g_spans, self._g_bytes

    def _freeze_gauges(self) -> None:
        """The held gauges keep their last figures, and no longer this processor (shut down:
        a reload's replacement installs its own)."""
        for gauge, read in zip(self._gauges(), self._reads, strict=True):
            if gauge._value is read:  # (not a replacement's)
                gauge._value = LoopValue(read.get())

    def _count_late(self, result: str) -> None:
        child = self._late_children.get(result)
        if child is None:
            child = self._late_children[result] = self._c_late.labels(self.settings.name, result)
        child.inc()

    def _count_classified(self) -> None:
        self._classified += 1

    def _update_gauges(self) -> None:
        """Adds the failed tool calls classified since the last call to their counter (after
        every request and release; the held gauges read the store: :meth:`_init_gauges`)."""
        if self._classified:
            self._c_error_types.value += self._classified
            self._classified = 0

    # -- consume ----------------------------------------------------------------------------------
    async def consume(self, data: Payload) -> None:
        rest = self.consume_now(data)
        if rest is not None:
            await rest

    def consume_now(self, data: Payload) -> Awaitable[None] | None:
        """:meth:`consume` without a coroutine when nothing makes it wait (the engine's
        entrance calls it: ``Component.consume_now``): ``None`` once the payload is taken, else
        what finishes it (the push-back's wait and checks; the sender's turn once something was
        released)."""
        if self._closing or self._outbox_bytes > self._max_bytes:
            return self._consume_held_back(data)
        self._take(data)
        if self._outbox:
            return asyncio.sleep(0)  # let the sender pass released traces on
        return None

    async def _wait_drained(self) -> None:
        """Until the outbox drained, at most half a second (in a task: a worker takes a
        sibling's part outside any task, and asyncio.timeout needs one)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await self._drained.wait()

    async def _consume_held_back(self, data: Payload) -> None:
        if self._closing:
            raise RetryableError(f"processor {self.settings.name} is shutting down", retry_after=1)
        if self._outbox_bytes > self.config.max_bytes:
            # Give the sender a moment to pass released traces on before pushing back.
            self._drained.clear()
            # (asyncio.timeout, not wait_for: on Python 3.11, wait_for answers the drained
            # wait instead of a cancellation that arrives in the turn the outbox drains, and
            # the cancelled consume went on and took the request)
            await in_a_task(self._wait_drained())
        if self._outbox_bytes > self.config.max_bytes:
            n = data.item_count()
            self._c_refused.inc(n)
            raise RetryableError(
                f"processor {self.settings.name} cannot pass released traces on as fast as they "
                f"arrive ({self._outbox_spans} spans waiting to be sent)",
                retry_after=1.0,
                resource_exhausted=True,
            )
        self._take(data)
        if self._outbox:
            await asyncio.sleep(0)  # let the sender pass released traces on

    def _take(self, data: Payload) -> None:
        """The payload's spans held (late ones queued at once), the limits enforced, the
        gauges and the release timer updated."""
        raw = data.to_bytes()
        if not raw:
            return
        loop = self._loop
        if loop is None:  # consume before start (tests)
            loop = self._loop = asyncio.get_running_loop()
        # (the loop is kept: asyncio.get_running_loop() costs a getpid() system call)
        now = loop.time()
        store = self.store
        held = store.held
        # a trace held before this request stays the first one (ingest adds traces behind
        # it and changes no queued_at): the timer's deadline moves only if nothing was held
        # or the limits released the first traces
        first_held = bool(held)
        acks = self._acks
        tokens = data.ack_tokens  # (a property: read once a consume)
        if acks is None and tokens:
            acks = self._acks = HeldAcks([t.queued_first for t in held.values()])
        if acks is None:
            late = store.ingest(raw, now)  # (_ingest, without its call)
            if late is not None:
                self._enqueue(late.encoded, late.spans)
        else:
            traces, spans = len(held), store.held_spans
            self._consuming = tokens  # late spans passed on at once carry them
            try:
                self._ingest(raw, now)
            finally:
                self._consuming = ()
                acks.arrived(now, tokens, len(held) - traces, store.held_spans != spans)
        max_traces, max_held_bytes = self._limits
        if len(held) > max_traces or store.held_bytes > max_held_bytes:
            releases = store.enforce_limits()  # (its check made here, without its call)
            if releases:
                self._emit(releases)
                first_held = False
        if self._classified:
            self._update_gauges()  # (its check made here, without its call)
        timer = self.timer
        if not first_held or timer.armed is None:
            timer.poke()  # the earliest deadline may have changed: the timer is set again

    def _ingest(self, raw: bytes, now: float) -> None:
        late = self.store.ingest(raw, now)
        if late is not None:
            self._enqueue(late.encoded, late.spans)

    # -- release ----------------------------------------------------------------------------------
    def _release_expired(self, now: float) -> None:
        releases = self.store.expire(now)
        if releases:
            self._emit(releases)
            self._update_gauges()

    def _release_all(self, reason: str) -> None:
        self._emit(self.store.release_all(reason))
        self._update_gauges()

    def _emit(self, releases: list[Release]) -> None:
        """Counts what the store let go of and queues it for the sender, each release with the
        durable acknowledgements its traces held."""
        if not releases:
            return
        self._flush_counts()
        acks = self._acks
        for release in releases:
            self._enqueue(
                release.encoded, release.spans, acks.released(release.created) if acks else ()
            )

    def _flush_counts(self) -> None:
        """Adds the release and outcome counts gathered since the last call to the
        self-telemetry counters (once per release, not once per trace)."""
        name = self.settings.name
        released, outcomes = self.store.take_counts()
        for reason, (traces, spans) in released.items():
            children = self._released_children.get(reason)
            if children is None:
                children = (
                    loop_value(self._c_traces.labels(name, reason)),
                    loop_value(self._c_spans.labels(name, reason)),
                )
                self._released_children[reason] = children
            children[0].value += traces
            children[1].value += spans
        for outcome, n in outcomes.items():
            child = self._workflow_children.get(outcome)
            if child is None:
                child = self._workflow_children[outcome] = loop_value(
                    self._c_workflows.labels(name, outcome)
                )
            child.value += n

    # -- sending ----------------------------------------------------------------------------------
    def _enqueue(self, encoded: bytes, count: int, acks: tuple[object, ...] = ()) -> None:
        payload = Traces(encoded, item_count=count)
        payload.whole_traces = True  # released whole: a tail_sampling after decides at once
        if acks or self._consuming:
            payload.carry_acks(acks + self._consuming)
        self._outbox.append((payload, count, len(encoded)))
        self._outbox_bytes += len(encoded)
        self._outbox_spans += count
        self._outbox_ready.set()

    async def _send_loop(self) -> None:
        # When nothing downstream suspends (a batch processor next), each send ends without a
        # loop turn and the whole outbox (a saturated release: tens of parts) would go on in
        # one step, with every other callback (a worker's reads of its siblings, the clients)
        # waiting behind it: the sender lets them run once a slice of SEND_SLICE has passed.
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            if not self._outbox:
                if self._closing and not self.store.held:
                    return
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                began = loop.time()
                continue
            payload, count, nbytes = self._outbox.popleft()
            self._outbox_bytes -= nbytes
            self._outbox_spans -= count
            if self._outbox_bytes <= self.config.max_bytes:
                self._drained.set()
            self._sending_spans = count
            await self._send(payload, count)
            del payload  # not kept (with its acknowledgement tokens) until the next release
            self._sending_spans = 0
            self._update_gauges()
            if self._outbox and loop.time() - began >= SEND_SLICE:
                await asyncio.sleep(0)  # the slice's end: what waits behind it runs
                began = loop.time()

    async def _send(self, payload: Payload, count: int) -> None:
        await deliver_holding(self.next, payload, self.settings, "released traces")

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        self._loop = asyncio.get_running_loop()
        if self._timer is None:
            self._timer = supervise(self.settings, host, "release", self.timer.run)
            self._sender = supervise(self.settings, host, "send", self._send_loop)

    async def shutdown(self) -> None:
        """Releases every held trace at once and sends it; what the deadline cuts off is
        counted as dropped (``shutdown_deadline``)."""
        if self._done:
            return
        if self._timer is None and not self.store.held and not self._outbox:
            return  # never started and holding nothing: stays startable
        self._closing = True
        self.timer.close()
        self._release_all("shutdown")
        try:
            if self._timer is not None:
                await asyncio.gather(self._timer, return_exceptions=True)
            if self._sender is not None:
                self._outbox_ready.set()
                await asyncio.shield(self._sender)
            else:
                while self._outbox:
                    payload, count, nbytes = self._outbox.popleft()
                    self._outbox_bytes -= nbytes
                    self._outbox_spans -= count
                    self._sending_spans = count
                    await self._send(payload, count)
                    self._sending_spans = 0
        except asyncio.CancelledError:
            if self._sender is not None:
                self._sender.cancel()
                await asyncio.gather(self._sender, return_exceptions=True)
            lost = self._outbox_spans + self._sending_spans
            if lost:
                self.settings.telemetry.dropped(Signal.TRACES, lost, "shutdown_deadline")
                self.settings.logger.error(
                    "shutdown deadline passed before released traces could be sent; dropping",
                    extra={"dropped_items": lost},
                )
            self._outbox.clear()
            self._outbox_spans = self._outbox_bytes = self._sending_spans = 0
            raise
        finally:
            self._done = True
            self._update_gauges()
            self._freeze_gauges()
