"""What the ``workflow`` processor offers the ``console``: its held traces and the workflows it
released recently, as a :class:`pipeline.status.WorkflowProvider`.

The processor calls :meth:`RecentWorkflows.released` where a trace leaves it (one hook per
release path), only while :attr:`RecentWorkflows.recording` is true: from the first call of
:meth:`recent_workflows` until ``WATCH_SECONDS`` after the last one. Recording keeps a
reference to the released trace object (Python's ``_Trace`` or the C accelerator's ``Trace``:
its spans stay encoded) in a ring bounded by count and by bytes; everything shown is decoded
only when asked for: a workflow's summary (its root span's times) when it is listed, its spans
when its waterfall is opened. So a gateway nobody watches pays one comparison per release, and
one being watched a deque append per released workflow.
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


class _Entry:
    __slots__ = ("nbytes", "reason", "released_at", "seq", "summary", "trace", "trace_id")

    def __init__(self, seq: int, trace_id: bytes, trace: Any, reason: str, nbytes: int) -> None:
        self.seq = seq
        self.trace_id = trace_id
        self.trace = trace
        self.reason = reason
        self.released_at = time.time()
        self.nbytes = nbytes
        self.summary: WorkflowSummary | None = None


class RecentWorkflows(WorkflowProvider):
    """The provider (see the module docstring). ``held`` gives the processor's held traces
    (trace id -> trace, oldest first), ``totals`` its held traces, spans and bytes, ``limits``
    its ``max_traces`` and ``max_bytes``, ``tier`` the complexity tier of a trace, ``clock``
    the clock the traces' times are on (the event loop's)."""

    def __init__(
        self,
        held: Callable[[], Mapping[bytes, Any]],
        totals: Callable[[], tuple[int, int, int]],
        limits: tuple[int, int],
        tier: Callable[[Any], str],
        clock: Callable[[], float] = time.monotonic,
        max_workflows: int = MAX_WORKFLOWS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._held = held
        self._totals = totals
        self._limits = limits
        self._tier = tier
        self._clock = clock
        self.max_workflows = max_workflows
        self.max_bytes = max_bytes
        self._entries: collections.deque[_Entry] = collections.deque()
        self._bytes = 0
        self._seq = 0
        self._watch_until = 0.0

    # -- recording (the processor's side) -----------------------------------------------------
    @property
    def recording(self) -> bool:
        """Whether released traces are to be handed to :meth:`released`."""
        return self._watch_until > 0.0 and time.monotonic() < self._watch_until

    def released(self, trace_id: bytes, trace: Any, reason: str) -> None:
        """A trace left the processor (its stamp computed): kept if it is a workflow."""
        if _values(trace) is None:
            return
        self._seq += 1
        nbytes = int(trace.nbytes)
        entries = self._entries
        entries.append(_Entry(self._seq, trace_id, trace, reason, nbytes))
        self._bytes += nbytes
        while len(entries) > self.max_workflows or (
            self._bytes > self.max_bytes and len(entries) > 1
        ):
            self._bytes -= entries.popleft().nbytes

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
        for entry in reversed(self._entries):
            if entry.seq <= after or len(out) >= limit:
                break
            if entry.summary is None:
                entry.summary = self._summary(entry)
            out.append(entry.summary)
        out.reverse()
        return out

    def workflow_spans(self, trace_id: str) -> list[SpanSummary] | None:
        self._watched()
        try:
            key = bytes.fromhex(trace_id)
        except ValueError:
            return None
        for entry in reversed(self._entries):
            if entry.trace_id == key:
                return _spans(entry.trace)
        return None

    # -- decoding on demand -------------------------------------------------------------------
    def _summary(self, entry: _Entry) -> WorkflowSummary:
        trace = entry.trace
        values = _values(trace) or ("", "", "unknown", "unknown", None)
        workflow_id, wf_type, agent, outcome, tier = values
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
        return WorkflowSummary(
            seq=entry.seq,
            trace_id=entry.trace_id.hex(),
            workflow_id=workflow_id,
            type=wf_type,
            agent=agent,
            outcome=outcome,
            tier=tier,
            spans=len(trace),
            tool_calls=int(trace.tool_calls),
            start_time=start,
            duration=duration,
            released_at=entry.released_at,
            reason=entry.reason,
        )


def _values(trace: Any) -> tuple[str, str, str, str, str | None] | None:
    """(workflow id, type, agent, outcome, tier or ``None`` to compute) of a released workflow
    trace, ``None`` when it is not one. The Python path leaves the stamp on the trace; the C
    accelerator's traces keep their root facts."""
    stamp = getattr(trace, "stamp", None)
    if stamp is not None:
        wid, wtype, agent, outcome, tier = stamp[0]
        return wid, wtype, agent, outcome, tier
    root = getattr(trace, "root", None)
    if root is None or not root[0]:
        return None
    return root[1], root[2], trace.agent_id or "unknown", root[3], None


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
