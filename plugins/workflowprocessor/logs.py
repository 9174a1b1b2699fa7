"""The ``workflow`` processor in a logs pipeline: log records (GenAI events, an agent's logs)
stamped with their workflow's attributes, as its spans are.

A log record emitted in a span's context carries the span's trace id. The processor of a logs
pipeline reads the trace hold of the ``workflow`` processor with the same ID in a traces
pipeline (one :class:`TraceLink` per config, filled by the factory): it never holds traces of
its own and never decides what a workflow is.

- A record of a trace **released** as a workflow (in the late-span memory of released
  workflows, ``late_span_cache_size``) is stamped at once with ``workflow.id``,
  ``workflow.type``, ``workflow.agent.id``, ``workflow.outcome`` and
  ``workflow.complexity_tier`` (attributes the record already has are kept).
- A record of a trace still **held**, or of a trace not seen yet (its spans may come later), is
  held, and checked every tick: stamped and passed on once the trace is released as a
  workflow; passed on as it is when the trace was released and is not a workflow, or when no
  span of its trace arrived within ``wait_duration`` of the record.
- A record without a trace id is passed on at once.

Bounds: at most ``MAX_RECORDS`` records and ``MAX_BYTES`` bytes are held; beyond, the oldest
trace's records are passed on unstamped (counted: ``overflow``). At shutdown everything held is
passed on (stamped when its workflow is known by then). Held records keep the durable
acknowledgement tokens of the request they came in (:meth:`pipeline.Payload.carry_acks`).
Self-telemetry: ``otelcol_processor_workflow_log_records_total{processor, result}`` with
result ``stamped``, ``not_workflow``, ``no_trace``, ``unknown_trace``, ``overflow``, and
``otelcol_processor_workflow_log_records_held{processor}``. A request is read whole before
anything changes (a corrupt one is refused with nothing held).
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from pipeline import Component, Consumer, CreateSettings, Host, Logs, Payload, RetryableError
from pipeline.consumer import deliver_holding
from pipeline.pdata import union_acks
from pipeline.tasks import supervise
from plugins._agentconv import AttributeNames
from plugins.workflowprocessor.config import WorkflowConfig

MAX_RECORDS = 100_000
MAX_BYTES = 64 * 1024 * 1024
TICK_MIN, TICK_MAX = 0.01, 1.0


class TraceLink:
    """The trace hold of the traces processor of the same ID (``store``: its ``held`` and
    ``released`` mappings by trace id), for the processor of a logs pipeline; ``None`` until a
    traces pipeline made one, or once it is gone (held weakly)."""

    __slots__ = ("_store",)

    def __init__(self) -> None:
        self._store: Any = None

    def held_by(self, store: Any) -> None:
        self._store = weakref.ref(store)

    @property
    def store(self) -> Any:
        return self._store() if self._store is not None else None


def stamp_keys(names: AttributeNames) -> tuple[str, str, str, str, str]:
    """The stamp attributes, in the order of the stamp values the trace store remembers."""
    return (
        names.workflow_id,
        names.workflow_type,
        names.workflow_agent_id,
        names.workflow_outcome,
        names.workflow_complexity_tier,
    )


class _Held:
    """The records of one trace waiting for its release."""

    __slots__ = ("acks", "arrived", "nbytes", "records")

    def __init__(self, arrived: float) -> None:
        self.arrived = arrived
        self.records: list[tuple[ResourceLogs, ScopeLogs, LogRecord]] = []
        self.acks: tuple[object, ...] = ()
        self.nbytes = 0


class WorkflowLogsProcessor(Component):
    """Stamps log records of workflow traces (see the module docstring)."""

    mutates_data = False

    def __init__(
        self,
        settings: CreateSettings,
        config: WorkflowConfig,
        next_consumer: Consumer,
        link: TraceLink,
        max_records: int = MAX_RECORDS,
        max_bytes: int = MAX_BYTES,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._on_stop = on_stop
        self.settings = settings
        self.config = config
        self.next = next_consumer
        self.link = link
        self.keys = stamp_keys(config.attributes)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.wait = config.wait_duration
        self.tick = min(max(self.wait / 4, TICK_MIN), TICK_MAX)
        self.held: collections.OrderedDict[bytes, _Held] = collections.OrderedDict()
        self.held_records = 0
        self.held_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closing = False
        service = settings.telemetry.service
        self._counter = service.counter(
            "otelcol_processor_workflow_log_records",
            "Log records by what the workflow processor did with them: stamped with their "
            "workflow (stamped), passed on as they were because their trace is not a workflow "
            "(not_workflow), has no trace id (no_trace), had no span within wait_duration "
            "(unknown_trace), or because too many were held (overflow).",
            ("processor", "result"),
        )
        self._gauge = service.gauge(
            "otelcol_processor_workflow_log_records_held",
            "Log records held by the workflow processor until their trace is released.",
            ("processor",),
        ).labels(settings.name)

    def _count(self, result: str, n: int) -> None:
        if n:
            self._counter.labels(self.settings.name, result).inc(n)

    # -- consume ----------------------------------------------------------------------------------
    async def consume(self, data: Payload) -> None:
        if self._closing:
            raise RetryableError(f"processor {self.settings.name} is shutting down", retry_after=1)
        raw = data.to_bytes()
        if not raw:
            return
        request = ExportLogsServiceRequest.FromString(raw)  # whole, before anything changes
        now = asyncio.get_running_loop().time()
        store = self.link.store
        released = store.released if store is not None else {}
        out: list[tuple[ResourceLogs, ScopeLogs, LogRecord]] = []
        hold: list[tuple[bytes, tuple[ResourceLogs, ScopeLogs, LogRecord], int]] = []
        stamped = no_trace = not_workflow = 0
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    trace_id = bytes(lr.trace_id)
                    if not trace_id.strip(b"\0"):
                        out.append((rl, sl, lr))
                        no_trace += 1
                    elif trace_id in released:
                        stamp = released[trace_id]
                        if stamp is not None and self._stamp(lr, stamp[0]):
                            stamped += 1
                        else:
                            not_workflow += 1
                        out.append((rl, sl, lr))
                    else:
                        hold.append((trace_id, (rl, sl, lr), lr.ByteSize()))
        self._count("stamped", stamped)
        self._count("no_trace", no_trace)
        self._count("not_workflow", not_workflow)
        if not hold and not stamped:
            await self.next.consume(data)  # nothing changed: passed on as it came
            return
        acks = data.ack_tokens
        if out:  # first: a refusal here leaves nothing held (the request is retried whole)
            await self.next.consume(self._payload(out, acks))
        for trace_id, item, nbytes in hold:
            entry = self.held.get(trace_id)
            if entry is None:
                entry = self.held[trace_id] = _Held(now)
            entry.records.append(item)
            entry.nbytes += nbytes
            if acks and entry.acks is not acks:
                entry.acks = acks if not entry.acks else union_acks((entry.acks, acks))
            self.held_records += 1
            self.held_bytes += nbytes
        overflow, overflow_acks = self._enforce_limits()
        self._gauge.set(self.held_records)
        if overflow:  # records of earlier requests: held on while the next one pushes back
            payload = self._payload(overflow, overflow_acks)
            await deliver_holding(self.next, payload, self.settings, "log records")

    def _stamp(self, record: LogRecord, values: tuple[str, ...]) -> bool:
        """Adds the stamp attributes the record lacks; whether it has a workflow stamp."""
        present = {kv.key for kv in record.attributes}
        if not values or (not values[0] and not values[1]):
            return False
        for key, value in zip(self.keys, values, strict=False):
            if value and key not in present:
                record.attributes.add(key=key).value.string_value = value
        return True

    def _enforce_limits(
        self,
    ) -> tuple[list[tuple[ResourceLogs, ScopeLogs, LogRecord]], tuple[object, ...]]:
        out: list[tuple[ResourceLogs, ScopeLogs, LogRecord]] = []
        acks: list[object] = []
        while self.held and (
            self.held_records > self.max_records or self.held_bytes > self.max_bytes
        ):
            _, entry = self.held.popitem(last=False)
            self._forget(entry)
            out.extend(entry.records)
            acks.extend(entry.acks)
            self._count("overflow", len(entry.records))
        return out, union_acks((tuple(acks),))

    def _forget(self, entry: _Held) -> None:
        self.held_records -= len(entry.records)
        self.held_bytes -= entry.nbytes

    @staticmethod
    def _payload(
        items: list[tuple[ResourceLogs, ScopeLogs, LogRecord]], acks: tuple[object, ...]
    ) -> Payload:
        """A request of ``items``, grouped by their resource and scope as they came."""
        request = ExportLogsServiceRequest()
        resources: dict[int, ResourceLogs] = {}
        scopes: dict[int, ScopeLogs] = {}
        for rl, sl, lr in items:
            out_rl = resources.get(id(rl))
            if out_rl is None:
                out_rl = resources[id(rl)] = request.resource_logs.add(schema_url=rl.schema_url)
                out_rl.resource.CopyFrom(rl.resource)
            out_sl = scopes.get(id(sl))
            if out_sl is None:
                out_sl = scopes[id(sl)] = out_rl.scope_logs.add(schema_url=sl.schema_url)
                out_sl.scope.CopyFrom(sl.scope)
            out_sl.log_records.append(lr)
        payload = Logs.from_message(request)
        if acks:
            payload.carry_acks(acks)
        return payload

    # -- release ----------------------------------------------------------------------------------
    def release(self, now: float, everything: bool = False) -> Payload | None:
        """Passes on the records whose trace was released (stamped when it is a workflow),
        or that waited ``wait_duration`` without a span of their trace; all of them when
        ``everything``."""
        store = self.link.store
        held_traces = store.held if store is not None else {}
        released = store.released if store is not None else {}
        out: list[tuple[ResourceLogs, ScopeLogs, LogRecord]] = []
        acks: list[object] = []
        stamped = not_workflow = unknown = 0
        for trace_id in list(self.held):
            entry = self.held[trace_id]
            if trace_id in released:
                stamp = released[trace_id]
                for _, _, lr in entry.records:
                    if stamp is not None and self._stamp(lr, stamp[0]):
                        stamped += 1
                    else:
                        not_workflow += 1
            elif trace_id in held_traces and not everything:
                continue
            elif trace_id in held_traces:
                not_workflow += len(entry.records)  # shutdown: its workflow is not known
            elif everything or now - entry.arrived >= self.wait:
                unknown += len(entry.records)
            else:
                continue
            del self.held[trace_id]
            self._forget(entry)
            out.extend(entry.records)
            acks.extend(entry.acks)
        self._count("stamped", stamped)
        self._count("not_workflow", not_workflow)
        self._count("unknown_trace", unknown)
        self._gauge.set(self.held_records)
        return self._payload(out, union_acks((tuple(acks),))) if out else None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.tick):
                    await self._stop.wait()
            except TimeoutError:
                pass
            if self.held:
                payload = self.release(loop.time())
                if payload is not None:
                    await deliver_holding(self.next, payload, self.settings, "log records")

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        if self._task is None:
            self._task = supervise(self.settings, host, "release", self._run)

    async def shutdown(self) -> None:
        """Passes on everything held (stamped when its workflow is known by then)."""
        self._closing = True
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        payload = self.release(asyncio.get_running_loop().time(), everything=True)
        if payload is not None:
            await deliver_holding(self.next, payload, self.settings, "log records")
        if self._on_stop is not None:
            self._on_stop()
