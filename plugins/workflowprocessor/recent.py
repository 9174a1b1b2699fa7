"""What the ``workflow`` processor offers the ``console``: its held traces and the workflows it
released recently, as a :class:`pipeline.status.WorkflowProvider`.

The processor hands over what a release let go of (:meth:`RecentWorkflows.released_batch`,
one hook per release path), only while :attr:`RecentWorkflows.recording` is true: from the
first call of :meth:`recent_workflows` until ``WATCH_SECONDS`` after the last one. Recording
keeps the release's list of trace objects (Python's ``_Trace`` or the C accelerator's
``Trace``: their spans stay encoded) in a ring bounded by count and by bytes; everything shown
is worked out only when asked for: which traces are workflows and their summaries (the root
span's times) when they are listed, the spans when a waterfall is opened. So a gateway nobody
watches pays one comparison per release, and one being watched a list append per release.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline.status import (
    HeldTrace,
    HeldTraces,
    SpanSummary,
    WorkflowProvider,
    WorkflowSummary,
)
from plugins._agentconv import duration_of

MAX_WORKFLOWS = 1000  # released workflows kept for the console
MAX_BYTES = 32 * 1024 * 1024  # ... and the bytes their traces may hold at most
MAX_ATTRIBUTES = 40  # attributes shown per span
MAX_VALUE = 200  # characters of an attribute value shown

_KINDS = {
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
_STATUSES = {
    Status.STATUS_CODE_UNSET: "unset",
    Status.STATUS_CODE_OK: "ok",
    Status.STATUS_CODE_ERROR: "error",
}


class _Batch:
    """The traces one release let go of (the last ``max_workflows`` of them at most)."""

    __slots__ = ("first_seq", "items", "nbytes", "released_at", "summaries")

    def __init__(self, first_seq: int, items: list[tuple[bytes, Any, str]], nbytes: int) -> None:
        self.first_seq = first_seq
        self.items = items
        self.nbytes = nbytes
        self.released_at = time.time()
        self.summaries: dict[int, WorkflowSummary | None] = {}


class RecentWorkflows(WorkflowProvider):
    """The provider (see the module docstring). ``held`` gives the processor's held traces
    (trace id -> trace, oldest first), ``totals`` its held traces, spans and bytes, ``limits``
    its ``max_traces`` and ``max_bytes``, ``tier`` the complexity tier of a trace, ``clock``
    the clock the traces' times are on (the event loop's), ``stamp_of`` the stamp it remembers
    for a released trace id (its late-span cache), if any.

    What a release hands over is kept as it is (one list per release, no work per trace):
    which traces are workflows, their summaries and spans are worked out when asked for."""

    def __init__(
        self,
        held: Callable[[], Mapping[bytes, Any]],
        totals: Callable[[], tuple[int, int, int]],
        limits: tuple[int, int],
        tier: Callable[[Any], str],
        clock: Callable[[], float] = time.monotonic,
        max_workflows: int = MAX_WORKFLOWS,
        max_bytes: int = MAX_BYTES,
        stamp_of: Callable[[bytes], Any] | None = None,
    ) -> None:
        self._stamp_of = stamp_of  # the stamp remembered for late spans, when still there
        self._held = held
        self._totals = totals
        self._limits = limits
        self._tier = tier
        self._clock = clock
        self.max_workflows = max_workflows
        self.max_bytes = max_bytes
        self._batches: collections.deque[_Batch] = collections.deque()
        self._traces = 0
        self._bytes = 0
        self._seq = 0
        self._watch_until = 0.0

    # -- recording (the processor's side) -----------------------------------------------------
    @property
    def recording(self) -> bool:
        """Whether released traces are to be handed to :meth:`released_batch`."""
        return self._watch_until > 0.0 and time.monotonic() < self._watch_until

    def released_batch(self, items: list[tuple[bytes, Any, str]]) -> None:
        """Traces a release let go of (their stamps computed): ``(trace id, trace, reason)``
        (the list is kept as it is: the caller must not change it afterwards)."""
        if len(items) > self.max_workflows:
            items = items[-self.max_workflows :]
        nbytes = sum(trace.nbytes for _, trace, _ in items)
        self._batches.append(_Batch(self._seq + 1, items, nbytes))
        self._seq += len(items)
        self._traces += len(items)
        self._bytes += nbytes
        batches = self._batches
        while len(batches) > 1 and (
            self._traces - len(batches[0].items) >= self.max_workflows
            or self._bytes > self.max_bytes
        ):
            old = batches.popleft()
            self._traces -= len(old.items)
            self._bytes -= old.nbytes

    def released(self, trace_id: bytes, trace: Any, reason: str) -> None:
        """One trace (the Python path releases them one at a time)."""
        self.released_batch([(trace_id, trace, reason)])

    # -- the provider ---------------------------------------------------------------------------
    def _watched(self) -> None:
        self._watch_until = time.monotonic() + self.WATCH_SECONDS

    def held_traces(self, limit: int = 10) -> HeldTraces:
        traces, spans, nbytes = self._totals()
        now = self._clock()
        oldest: list[HeldTrace] = []
        for trace_id, trace in self._held().items():
            if len(oldest) >= limit:
                break
            root = trace.root
            wf_type = root[2] if root is not None and root[0] else None
            oldest.append(
                HeldTrace(trace_id.hex(), max(now - trace.queued_first, 0.0), len(trace), wf_type)
            )
        oldest.sort(key=lambda h: -h.age)
        max_traces, max_bytes = self._limits
        return HeldTraces(traces, spans, nbytes, max_traces, max_bytes, tuple(oldest))

    def recent_workflows(self, after: int = 0, limit: int = 100) -> list[WorkflowSummary]:
        self._watched()
        out: list[WorkflowSummary] = []
        for batch in reversed(self._batches):
            if batch.first_seq + len(batch.items) - 1 <= after:
                break
            for i in range(len(batch.items) - 1, -1, -1):
                seq = batch.first_seq + i
                if seq <= after or len(out) >= limit:
                    break
                if seq in batch.summaries:
                    summary = batch.summaries[seq]
                else:
                    summary = batch.summaries[seq] = self._summary(batch, i)
                if summary is not None:
                    out.append(summary)
            if len(out) >= limit:
                break
        out.reverse()
        return out

    def workflow_spans(self, trace_id: str) -> list[SpanSummary] | None:
        self._watched()
        try:
            key = bytes.fromhex(trace_id)
        except ValueError:
            return None
        for batch in reversed(self._batches):
            for tid, trace, _ in reversed(batch.items):
                if tid == key and _values(trace) is not None:
                    return _spans(trace)
        return None

    # -- decoding on demand -------------------------------------------------------------------
    def _summary(self, batch: _Batch, i: int) -> WorkflowSummary | None:
        trace_id, trace, reason = batch.items[i]
        values = _values(trace)
        if values is None:
            return None
        workflow_id, wf_type, agent, outcome, tier = values
        if tier is None and self._stamp_of is not None:
            stamp = self._stamp_of(trace_id)
            if stamp is not None:
                tier = stamp[0][4]
        if tier is None:
            tier = self._tier(trace)
        start: float | None = None
        duration: float | None = None
        index = trace.root_index
        if index >= 0:
            try:
                root = Span.FromString(trace.spans[index])
            except Exception:
                root = None
            if root is not None and root.start_time_unix_nano:
                start = root.start_time_unix_nano / 1e9
                if root.end_time_unix_nano >= root.start_time_unix_nano:
                    duration = (root.end_time_unix_nano - root.start_time_unix_nano) / 1e9
            if trace.root_extra:  # the execution's duration, below the root
                for kv in Span.FromString(trace.root_extra).attributes:
                    duration = duration_of(kv.value)
        return WorkflowSummary(
            seq=batch.first_seq + i,
            trace_id=trace_id.hex(),
            workflow_id=workflow_id,
            type=wf_type,
            agent=agent,
            outcome=outcome,
            tier=tier,
            spans=len(trace),
            tool_calls=int(trace.tool_calls),
            start_time=start,
            duration=duration,
            released_at=batch.released_at,
            reason=reason,
        )


def _values(trace: Any) -> tuple[str, str, str, str, str | None] | None:
    """(workflow id, type, agent, outcome, tier or ``None`` to compute) of a released workflow
    trace, ``None`` when it is not one. The Python path leaves the stamp on the trace; the C
    accelerator's traces keep their root facts."""
    root = trace.root
    if root is not None:  # the C accelerator's trace
        if not root[0]:
            return None
        return root[1], root[2], trace.agent_id or "unknown", root[3], None
    stamp = getattr(trace, "stamp", None)  # the Python path's (its root facts are dropped)
    if stamp is None:
        return None
    wid, wtype, agent, outcome, tier = stamp[0]
    return wid, wtype, agent, outcome, tier


def _spans(trace: Any) -> list[SpanSummary]:
    services: dict[bytes, str] = {}
    out = []
    for span_raw, group in zip(trace.spans, trace.groups, strict=False):
        resource = group[0]
        service = services.get(resource)
        if service is None:
            service = ""
            try:
                for kv in Resource.FromString(resource).attributes:
                    if kv.key == "service.name":
                        service = kv.value.string_value
                        break
            except Exception:
                pass
            services[resource] = service
        try:
            span = Span.FromString(span_raw)
        except Exception:
            continue
        attributes: dict[str, str] = {}
        for kv in span.attributes[:MAX_ATTRIBUTES]:
            attributes[kv.key] = _short(kv.value)
        out.append(
            SpanSummary(
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                name=span.name,
                kind=_KINDS.get(span.kind, "unspecified"),
                start_time=span.start_time_unix_nano / 1e9,
                end_time=max(span.end_time_unix_nano, span.start_time_unix_nano) / 1e9,
                status=_STATUSES.get(span.status.code, "unset"),
                status_message=span.status.message[:MAX_VALUE],
                service=service,
                attributes=attributes,
            )
        )
    out.sort(key=lambda s: s.start_time)
    return out


def _short(value: Any) -> str:
    which = value.WhichOneof("value")
    if which is None:
        return ""
    v = getattr(value, which)
    if which == "string_value":
        text = v
    elif which in ("int_value", "double_value", "bool_value"):
        text = str(v).lower() if which == "bool_value" else str(v)
    elif which == "bytes_value":
        text = v.hex()
    else:
        text = str(v).replace("\n", " ")
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "\u2026"
