"""The ``workflow`` processor.

Spans are grouped by trace id across requests and held until ``wait_duration`` has passed since
the trace's last span (or until ``max_traces`` / ``max_bytes`` force the least recently active
trace out early). A released workflow trace has every span stamped with ``workflow.id``,
``workflow.type``, ``workflow.agent.id``, ``workflow.outcome`` and ``workflow.complexity_tier``;
failed tool calls lacking ``error.type`` get one. Released workflows are remembered (a bounded
LRU) so spans arriving after the release are stamped and passed on at once.

How it stays cheap: requests are parsed with the shallow/skeleton views of ``pipeline._wire``
(each span kept as its encoded bytes, only its ids parsed); a span is fully decoded only when it
is a root, a tool call or the first to name the agent (found by a substring test on its bytes).
Attributes are added by appending encoded ``KeyValue`` fields to a span's bytes: a repeated
field may be appended on the wire, so stamping a span costs one bytes concatenation, and the
output request is assembled from bytes without re-encoding any span. The input payload is never
changed (new payloads are built), so ``mutates_data`` is false and the fan-out copies nothing.
With the C accelerator (``plugins/_native/_tracewire.c``) the per-trace work is done in C too:
held traces are its ``Trace`` objects, filled by its ingest (a trace's spans copied into one
allocation per request, no Python object per span), picked by its expiry and stamped,
remembered and assembled by one release call; the Python path below gives the same results
(the held bytes each path counts differ by their constants, see ``SPAN_OVERHEAD``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

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
from pipeline._wire import ShallowTraces, SkeletonTraces
from pipeline.consumer import deliver_holding
from pipeline.durability import HeldAcks
from pipeline.tasks import supervise
from plugins._agentconv import (
    STATUS_ERROR,
    TOP_TIER,
    AttributeNames,
    ErrorClassifier,
    outcome_from,
)
from plugins._native import load as _load_native
from plugins._spanview import SpanView, cached_str, value_str
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.recent import RecentWorkflows

# The C accelerator of the per-span loops (plugins/_native/_tracewire.c), or None: then the
# pure-Python paths below, which give the same results, are used.
_tracewire: Any = _load_native("_tracewire")
_ROOT, _TOOL, _AGENT = 1, 2, 4  # its per-span flags

# What holding a trace costs beyond its spans' encodings, counted against ``max_bytes``:
# per span and per trace. The Python path: the bytes objects of a span and its two ids, four
# list slots and the group reference; the ``_Trace``, its lists, its key and entry in the held
# traces and its root facts.
SPAN_OVERHEAD = 160
TRACE_OVERHEAD = 400
# The C path (``_tracewire.Trace``): a span is a 32-byte record beside its encoding in a
# chunk, one allocation per trace and request (its 16-byte header, the allocator's overhead,
# its slot in the trace's chunk table and any new group slot: at most 64 bytes); per trace the
# 160-byte object, its key and entry in the held traces and its root facts (~600 bytes).
# ``Trace.__sizeof__`` is what the object and its chunks really take.
NATIVE_SPAN_OVERHEAD = 32
NATIVE_CHUNK_OVERHEAD = 64
NATIVE_TRACE_OVERHEAD = 600

# distinct status messages whose error.type is remembered (then the memory starts over)
ERROR_SUFFIX_CACHE = 1024

# the longest time between two releases (a tenth of wait_duration when that is shorter)
RELEASE_TICK_MAX = 0.1
# the traces due at one release go downstream in requests of about this many spans: at
# 100,000 spans/s a tick releases ~10,000; one request of 1,024 spans instead of all of them
# kept the pipeline's peak RSS ~12 MiB lower and cost no CPU (benchmarks/agent_pipeline.py)
RELEASE_MAX_SPANS = 1024


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# field headers (tag, length) for the usual lengths, by tag (larger ones are computed)
_HEADER_TABLE = 1024
_HEADERS: dict[int, list[bytes]] = {
    tag: [bytes((tag,)) + _varint(n) for n in range(_HEADER_TABLE)] for tag in (0x0A, 0x12, 0x4A)
}


def _len_field(tag: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < _HEADER_TABLE:
        return _HEADERS[tag][n] + payload
    return bytes((tag,)) + _varint(n) + payload


def _encode_attribute(key: str, value: str) -> bytes:
    """``Span.attributes`` entry (field 9) holding ``KeyValue{key, AnyValue{string_value}}``."""
    raw = value.encode()
    n = len(raw)
    if n < 120:  # the usual case: every length fits in a table
        any_value = _HEADERS[0x0A][n] + raw
        kv = _key_field(key) + _HEADERS[0x12][n + 2] + any_value
        return _len_field(0x4A, kv)
    any_value = _len_field(0x0A, raw)
    kv = _len_field(0x0A, key.encode()) + _len_field(0x12, any_value)
    return _len_field(0x4A, kv)


@functools.lru_cache(maxsize=256)
def _key_field(key: str) -> bytes:
    """``KeyValue.key`` (field 1), encoded."""
    return _len_field(0x0A, key.encode())


@functools.lru_cache(maxsize=8192)
def encode_attribute(key: str, value: str) -> bytes:
    """``Span.attributes`` entry (field 9) holding ``KeyValue{key, AnyValue{string_value}}``,
    ready to be appended to an encoded span (cached: keys and most values repeat)."""
    return _encode_attribute(key, value)


def key_marker(key: str) -> bytes:
    """The bytes a ``KeyValue`` with this key starts with (a cheap presence pre-test)."""
    raw = key.encode()
    return b"\x0a" + _varint(len(raw)) + raw


_outcome = functools.lru_cache(maxsize=4096)(outcome_from)


# ``ScopeSpans.spans`` field headers (tag 2, length) by span length (lengths repeat), filled
# as lengths are seen (up to _SPAN_HEADERS_MAX)
_SPAN_HEADERS: dict[int, bytes] = {}
_SPAN_HEADERS_MAX = 16384

GroupKey = tuple[bytes, bytes, bytes, bytes]  # resource, its schema url, scope, its schema url


# What a root span says about its workflow: (workflow, workflow_id, workflow_type, outcome,
# present), ``workflow`` false: not a workflow; ``present``: the stamp attributes already on it.
_RootFacts = tuple[bool, str, str, str, tuple[str, ...]]
_NOT_WORKFLOW: _RootFacts = (False, "", "", "", ())

# What a released workflow writes on its spans (remembered for late spans): the values of the
# five stamp attributes (in the order of ``_stamp_keys``) and their encoding, appended to spans.
_Stamp = tuple[tuple[str, str, str, str, str], bytes]


@dataclass(slots=True)
class _Trace:
    """The spans of one trace being held, and what was learned from them (the pure-Python
    path's; with the C accelerator, ``_tracewire.Trace``, which has the same attributes but
    ``stamp``, its ``spans``, ``groups``, ``ids`` and ``parents`` read-only copies: spans are
    added with its ``add(spans, groups, ids, parents)``)."""

    last_seen: float
    queued_at: float
    queued_first: float
    spans: list[bytes] = field(default_factory=list)
    groups: list[GroupKey] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)
    parents: list[bytes] = field(default_factory=list)
    nbytes: int = TRACE_OVERHEAD
    root_index: int = -1
    root_present: tuple[str, ...] = ()  # the stamp attributes the root already has
    root: _RootFacts | None = None  # what the root span says, once it arrived
    agent_id: str = ""
    tool_calls: int = 0
    stamp: _Stamp | None = None  # computed at release

    def __len__(self) -> int:
        return len(self.spans)


class WorkflowProcessor(Component):
    """Holds traces for a bounded wait, then stamps workflow attributes on their spans."""

    mutates_data = False

    def __init__(
        self, settings: CreateSettings, config: WorkflowConfig, next_consumer: Consumer
    ) -> None:
        self.settings = settings
        self.config = config
        self.next = next_consumer
        self.names: AttributeNames = config.attributes
        self.classifier = ErrorClassifier(config.error_classification)
        self._loop: asyncio.AbstractEventLoop | None = None
        # status message -> the encoded error.type of a failed tool call without events
        self._error_suffixes: dict[bytes, bytes] = {}
        self._held: collections.OrderedDict[bytes, _Trace] = collections.OrderedDict()
        self._held_bytes = 0
        self._held_spans = 0
        self._released: collections.OrderedDict[bytes, _Stamp | None] = collections.OrderedDict()
        self._outbox: collections.deque[tuple[Payload, int, int]] = collections.deque()
        self._outbox_bytes = 0
        self._outbox_spans = 0
        self._sending_spans = 0
        self._wake = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._armed: float | None = None  # the deadline the timer waits for, if any
        # releases are at least a tick apart (see _timer_loop)
        self._tick = min(self.config.wait_duration / 10, RELEASE_TICK_MAX)
        self._not_before = 0.0
        self._sender: asyncio.Task[None] | None = None
        self._closing = False
        self._done = False
        # durable acknowledgements: the tokens of the requests whose spans are held, released
        # onto the payloads that carry those spans on (pipeline.durability.HeldAcks); made
        # when the first payload with tokens arrives (nothing to track without durability)
        self._acks: HeldAcks | None = None
        self._consuming: tuple[object, ...] = ()  # tokens of the request being ingested
        names = self.names
        self._tool_markers = (names.tool_operation.encode(), names.mcp_tool_method.encode())
        self._agent_marker = key_marker(names.agent_id)
        self._stamp_keys = (
            names.workflow_id,
            names.workflow_type,
            names.workflow_agent_id,
            names.workflow_outcome,
            names.workflow_complexity_tier,
        )
        self._stamp_markers = tuple(key_marker(k) for k in self._stamp_keys)
        self._stamp_re = re.compile(b"|".join(re.escape(m) for m in self._stamp_markers))
        self._tw: Any = _tracewire  # the C accelerator, or None
        read_keys = (
            names.operation_name,
            names.mcp_method_name,
            names.agent_id,
            names.workflow_name,
            names.workflow_id,
            names.workflow_type,
            names.workflow_outcome,
        )
        compared = (names.tool_operation, names.mcp_tool_method, names.workflow_span_prefix)
        if names.error_type in read_keys or any("\ufffd" in v for v in compared):
            # the C accelerator compares encoded values and assumes an appended error.type
            # changes nothing else it read: such configurations use the Python path
            self._tw = None
        # what the C accelerator reads in the special spans: the keys (the order of its
        # K_* constants), the values a tool call is recognised by, the workflow name prefix
        self._facts_cfg = tuple(
            v.encode()
            for v in (
                names.operation_name,
                names.mcp_method_name,
                names.error_type,
                names.agent_id,
                names.workflow_name,
                names.workflow_id,
                names.workflow_type,
                names.workflow_outcome,
                *self._stamp_keys,
                *compared,
            )
        )
        # the stamp attributes a root already has, by the bit mask C reports
        self._present_by_mask = [
            tuple(k for b, k in enumerate(self._stamp_keys) if mask >> b & 1)
            for mask in range(1 << len(self._stamp_keys))
        ]
        self._released_children = {}
        self._groups: dict[GroupKey, GroupKey] = {}
        self._workflow_children: dict[str, Any] = {}
        self._pending_released: dict[str, list[int]] = {}
        self._pending_outcomes: dict[str, int] = {}
        self._stamp_tails: dict[tuple[str, ...], bytes] = {}
        self._depth_cap = max((t.max_depth for t in config.complexity_tiers), default=0) + 1
        big = 1 << 62  # the bounds, as C integers
        self._release_cfg = (
            tuple(k.encode() for k in self._stamp_keys),
            self._stamp_keys,
            tuple(
                (t.name, min(t.max_spans, big), min(t.max_tool_calls, big), min(t.max_depth, big))
                for t in config.complexity_tiers
            ),
            self._depth_cap,
            TOP_TIER,
            "unknown",
        )
        self._init_telemetry()
        # the console's view: held traces and recent workflows (plugins/workflowprocessor/recent.py)
        self.recent = RecentWorkflows(
            lambda: self._held,
            lambda: (len(self._held), self._held_spans, self._held_bytes),
            (config.max_traces, config.max_bytes),
            self._tier,
            stamp_of=self._released.get,
        )
        settings.provide(self.recent)

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
        self._c_error_types = service.counter(
            "otelcol_processor_workflow_error_types_added",
            "Failed tool calls given an error.type by the workflow processor.",
            ("processor",),
        ).labels(name)
        self._c_refused = service.counter(
            "otelcol_processor_workflow_refused_spans",
            "Spans refused (retryable) because released data could not be sent fast enough.",
            ("processor",),
        ).labels(name)

    _released_children: dict[str, tuple[Any, Any]]

    def _update_gauges(self) -> None:
        self._g_traces.set(len(self._held))
        self._g_spans.set(self._held_spans + self._outbox_spans + self._sending_spans)
        self._g_bytes.set(self._held_bytes)

    # -- consume ----------------------------------------------------------------------------------
    async def consume(self, data: Payload) -> None:
        if self._closing:
            raise RetryableError(f"processor {self.settings.name} is shutting down", retry_after=1)
        if self._outbox_bytes > self.config.max_bytes:
            # Give the sender a moment to pass released traces on before pushing back.
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout=0.5)
        if self._outbox_bytes > self.config.max_bytes:
            n = data.item_count()
            self._c_refused.inc(n)
            raise RetryableError(
                f"processor {self.settings.name} cannot pass released traces on as fast as they "
                f"arrive ({self._outbox_spans} spans waiting to be sent)",
                retry_after=1.0,
                resource_exhausted=True,
            )
        raw = data.to_bytes()
        if not raw:
            return
        loop = self._loop
        if loop is None:  # consume before start (tests)
            loop = self._loop = asyncio.get_running_loop()
        # (the loop is kept: asyncio.get_running_loop() costs a getpid() system call)
        now = loop.time()
        acks = self._acks
        if acks is None and data.ack_tokens:
            acks = self._acks = HeldAcks([t.queued_first for t in self._held.values()])
        if acks is None:
            self._ingest(raw, now)
        else:
            traces, spans = len(self._held), self._held_spans
            self._consuming = data.ack_tokens  # late spans passed on at once carry them
            try:
                self._ingest(raw, now)
            finally:
                self._consuming = ()
                acks.arrived(
                    now, data.ack_tokens, len(self._held) - traces, self._held_spans != spans
                )
        self._enforce_limits()
        self._update_gauges()
        if self._next_release() != self._armed:
            self._wake.set()  # the earliest deadline changed: the timer is set again
        if self._outbox:
            await asyncio.sleep(0)  # let the sender pass released traces on

    def _ingest(self, raw: bytes, now: float) -> None:
        if self._tw is not None:
            self._ingest_native(raw, now)
        else:
            self._ingest_python(raw, now)

    def _ingest_native(self, raw: bytes, now: float) -> None:
        """``_ingest`` with the request parsed, its spans grouped by trace and added to the held
        traces (``_tracewire.Trace``) in C, which also decides the tool calls, reads the roots
        and finds the agent: the Python work is classifying the failed tool calls lacking
        ``error.type`` (called back from C) and the traces whose special spans C leaves to the
        Python path (anything unusual)."""
        interned = self._groups
        if len(interned) > 4096:
            interned.clear()
        tool_a, tool_b = self._tool_markers
        agent_marker = self._agent_marker
        held = self._held
        apply = (
            held,
            self._released,
            now,
            _outcome,
            self._present_by_mask,
            _NOT_WORKFLOW,
            NATIVE_SPAN_OVERHEAD,
            NATIVE_CHUNK_OVERHEAD,
            NATIVE_TRACE_OVERHEAD,
            self._classify_tool_failure,
        )
        # C creates and updates the held traces (in order of first appearance), has the
        # failed tool calls lacking error.type classified, and returns the entries whose
        # special spans it leaves undecided (their traces already created and touched, their
        # spans not added)
        done = self._tw.ingest(raw, interned, tool_a, tool_b, agent_marker, self._facts_cfg, apply)
        if done is None:
            # late spans (rare): the Python path keeps their exact order in the output
            self._ingest_python(raw, now)
            return
        leftovers, added_bytes, added_spans = done
        for trace_id, spans, groups, ids, parents, nbytes, *_ in leftovers:
            trace: Any = held[trace_id]  # a _tracewire.Trace
            nbytes = self._specials_python(trace, trace_id, spans, parents, nbytes)
            trace.add(spans, groups, ids, parents)
            size = nbytes + NATIVE_SPAN_OVERHEAD * len(spans) + NATIVE_CHUNK_OVERHEAD
            trace.nbytes += size
            added_bytes += size
            added_spans += len(spans)
        self._held_bytes += added_bytes
        self._held_spans += added_spans

    def _specials_python(
        self, trace: _Trace, trace_id: bytes, spans: list[bytes], parents: list[bytes], nbytes: int
    ) -> int:
        """The special spans of one trace's spans of a request (roots, tool calls, spans naming
        the agent), read in Python: what the C accelerator leaves undecided. Returns
        ``nbytes`` updated for the failed tool calls given an ``error.type``."""
        tool_a, tool_b = self._tool_markers
        agent_marker = self._agent_marker
        base = len(trace)
        for i, (span_raw, parent) in enumerate(zip(spans, parents, strict=True)):
            flags = 0 if parent else _ROOT
            if tool_a in span_raw or tool_b in span_raw:
                flags |= _TOOL
            elif not flags and agent_marker not in span_raw:
                continue
            if flags & _TOOL:
                new_raw, tool = self._check_tool_call(span_raw)
                if tool:
                    trace.tool_calls += 1
                if new_raw is not span_raw:
                    nbytes += len(new_raw) - len(span_raw)
                    spans[i] = span_raw = new_raw
            if flags & _ROOT:
                trace.root_index = base + i
                trace.root, agent = self._root_facts(span_raw, trace_id)
                trace.root_present = trace.root[4]
                if agent:
                    trace.agent_id = agent
            elif not trace.agent_id and agent_marker in span_raw:
                agent_value = SpanView.FromString(span_raw).attributes.get(self.names.agent_id)
                if agent_value is not None:
                    trace.agent_id = cached_str(agent_value)
        return nbytes

    def _ingest_python(self, raw: bytes, now: float) -> None:
        shallow = ShallowTraces.FromString(raw)
        skeleton = SkeletonTraces.FromString(raw)
        held = self._held
        released = self._released
        tool_a, tool_b = self._tool_markers
        agent_marker = self._agent_marker
        late: dict[GroupKey, list[bytes]] = {}
        late_count = 0
        interned = self._groups
        if len(interned) > 4096:
            interned.clear()
        added_bytes = 0
        added_spans = 0
        # with the C accelerator (a request with late spans), the held traces are its Traces:
        # their spans are gathered here and added to them at the end, one chunk each
        native = self._tw is not None
        if native:
            span_overhead, trace_overhead = NATIVE_SPAN_OVERHEAD, NATIVE_TRACE_OVERHEAD
        else:
            span_overhead, trace_overhead = SPAN_OVERHEAD, TRACE_OVERHEAD
        staged: dict[bytes, tuple[Any, list[bytes], list[GroupKey], list[bytes], list[bytes]]]
        staged = {}
        for rs_sh, rs_sk in zip(shallow.resource_spans, skeleton.resource_spans, strict=True):
            resource = rs_sh.resource
            resource_url = rs_sh.schema_url
            for ss_sh, ss_sk in zip(rs_sh.scope_spans, rs_sk.scope_spans, strict=True):
                group: GroupKey = (resource, resource_url, ss_sh.scope, ss_sh.schema_url)
                # one instance per distinct resource/scope, so spans group by identity later
                group = interned.setdefault(group, group)
                for span_raw, sk in zip(ss_sh.spans, ss_sk.spans, strict=True):
                    trace_id = sk.trace_id
                    trace = held.get(trace_id)
                    tool = False
                    if tool_a in span_raw or tool_b in span_raw:
                        span_raw, tool = self._check_tool_call(span_raw)
                    if trace is None:
                        if trace_id in released:
                            late.setdefault(group, []).append(self._stamp_late(trace_id, span_raw))
                            late_count += 1
                            continue
                        trace = self._new_trace(now)
                        held[trace_id] = trace
                        added_bytes += trace_overhead
                    else:
                        # reordered lazily: the timer moves a trace that is not due yet
                        trace.last_seen = now
                    if native:
                        lists = staged.get(trace_id)
                        if lists is None:
                            lists = staged[trace_id] = (trace, [], [], [], [])
                        _, spans, groups, ids, parents = lists
                        base = len(trace)
                    else:
                        spans, groups, ids = trace.spans, trace.groups, trace.ids
                        parents = trace.parents
                        base = 0
                    if tool:
                        trace.tool_calls += 1
                    parent = sk.parent_span_id
                    if not parent:
                        trace.root_index = base + len(spans)
                        trace.root, agent = self._root_facts(span_raw, trace_id)
                        trace.root_present = trace.root[4]
                        if agent:
                            trace.agent_id = agent
                    elif not trace.agent_id and agent_marker in span_raw:
                        agent_value = SpanView.FromString(span_raw).attributes.get(
                            self.names.agent_id
                        )
                        if agent_value is not None:
                            trace.agent_id = cached_str(agent_value)
                    spans.append(span_raw)
                    groups.append(group)
                    ids.append(sk.span_id)
                    parents.append(parent)
                    size = len(span_raw) + span_overhead
                    trace.nbytes += size
                    added_bytes += size
                    added_spans += 1
        for trace, spans, groups, ids, parents in staged.values():
            trace.add(spans, groups, ids, parents)
            trace.nbytes += NATIVE_CHUNK_OVERHEAD
            added_bytes += NATIVE_CHUNK_OVERHEAD
        self._held_bytes += added_bytes
        self._held_spans += added_spans
        if late:
            self._enqueue(self._assemble_groups(late), late_count)

    def _root_facts(self, span_raw: bytes, trace_id: bytes) -> tuple[_RootFacts, str]:
        """Read a root span (attributes as a C-level map, status and events decoded only
        when needed): whether it is a workflow, its id, type and outcome, and its agent."""
        view = SpanView.FromString(span_raw)
        attrs = view.attributes
        names = self.names

        def get(key: str) -> str:
            value = attrs.get(key)
            return cached_str(value) if value is not None else ""

        agent = get(names.agent_id)
        name = view.name.decode("utf-8", "replace")
        prefix = names.workflow_span_prefix
        if not (
            name.startswith(prefix) or names.workflow_name in attrs or names.workflow_id in attrs
        ):
            return _NOT_WORKFLOW, agent
        code, message = 0, ""
        if view.status:
            status = Status.FromString(view.status)
            code, message = status.code, status.message
        error_text = get(names.error_type)
        exception = ""
        if code == STATUS_ERROR or error_text:
            for raw_event in view.events:
                event = Span.Event.FromString(raw_event)
                if event.name == "exception":
                    for kv in event.attributes:
                        if kv.key == "exception.type":
                            exception = str(kv.value.string_value)
                    break
        outcome = outcome_from(get(names.workflow_outcome), error_text, exception, code, message)
        wf_type = get(names.workflow_type) or get(names.workflow_name)
        if not wf_type:
            wf_type = (name[len(prefix) :] if name.startswith(prefix) else name) or "unknown"
        wf_id_raw = attrs.get(names.workflow_id)  # unique per workflow: not cached
        wf_id = (value_str(wf_id_raw) if wf_id_raw is not None else "") or trace_id.hex()
        present = tuple(k for k in self._stamp_keys if k in attrs)
        return (True, wf_id, wf_type, outcome, present), agent

    def _check_tool_call(self, span_raw: bytes) -> tuple[bytes, bool]:
        """Look at a span that may be a tool call (its attributes read as a C-level map); a
        failed tool call lacking ``error.type`` gets one appended. Returns the (possibly
        extended) bytes and whether it is a tool call."""
        view = SpanView.FromString(span_raw)
        attrs = view.attributes
        names = self.names
        op = attrs.get(names.operation_name)
        method = attrs.get(names.mcp_method_name)
        tool = (op is not None and cached_str(op) == names.tool_operation) or (
            method is not None and cached_str(method) == names.mcp_tool_method
        )
        if tool and names.error_type not in attrs and view.status:
            span_raw = self._classify_tool_failure(span_raw)
        return span_raw, tool

    def _classify_tool_failure(self, span_raw: bytes, message: bytes | None = None) -> bytes:
        """A tool call lacking ``error.type`` with a status: if it failed, with an
        ``error.type`` (from the classifier) appended. ``message``: the span's status message
        when it alone decides the error type (the C path passes it for a failed span without
        events); the encoded attribute is then remembered for that message."""
        if message is not None:
            suffix = self._error_suffixes.get(message)
            if suffix is not None:
                self._c_error_types.inc()
                return span_raw + suffix
        span = Span.FromString(span_raw)
        if span.status.code == STATUS_ERROR:
            error_type = self.classifier.classify(span)
            suffix = encode_attribute(self.names.error_type, error_type)
            if message is not None:
                if len(self._error_suffixes) >= ERROR_SUFFIX_CACHE:
                    self._error_suffixes.clear()
                self._error_suffixes[message] = suffix
            span_raw = span_raw + suffix
            self._c_error_types.inc()
        return span_raw

    def _stamp_late(self, trace_id: bytes, span_raw: bytes) -> bytes:
        stamp = self._released[trace_id]
        self._released.move_to_end(trace_id)
        name = self.settings.name
        if stamp is None:
            self._c_late.labels(name, "not_workflow").inc()
            return span_raw
        self._c_late.labels(name, "enriched").inc()
        return span_raw + self._suffix_for(span_raw, stamp)

    def _suffix_for(self, span_raw: bytes, stamp: _Stamp) -> bytes:
        """The stamp, without the attributes the span already has."""
        if self._stamp_re.search(span_raw) is None:
            return stamp[1]
        present = SpanView.FromString(span_raw).attributes
        return b"".join(
            encode_attribute(k, v)
            for k, v in zip(self._stamp_keys, stamp[0], strict=True)
            if k not in present
        )

    # -- limits and release ---------------------------------------------------------------------
    def _new_trace(self, now: float) -> Any:
        if self._tw is not None:
            return self._tw.Trace(now, now, now, NATIVE_TRACE_OVERHEAD)
        return _Trace(now, now, now, nbytes=TRACE_OVERHEAD)

    def _enforce_limits(self) -> None:
        cfg = self.config
        held = self._held
        if len(held) <= cfg.max_traces and self._held_bytes <= cfg.max_bytes:
            return
        if self._tw is not None:
            batch: list[tuple[bytes, Any, str]] = []
            while len(held) > cfg.max_traces:
                trace_id, trace = held.popitem(last=False)
                self._held_bytes -= trace.nbytes  # the loop below depends on it
                self._held_spans -= len(trace)
                batch.append((trace_id, trace, "max_traces"))
            while self._held_bytes > cfg.max_bytes and held:
                trace_id, trace = held.popitem(last=False)
                self._held_bytes -= trace.nbytes
                self._held_spans -= len(trace)
                batch.append((trace_id, trace, "max_bytes"))
            if batch:
                self._release_native(batch, counted=True)
            return
        early: list[_Trace] = []
        while len(held) > cfg.max_traces:
            early.append(self._pop_oldest("max_traces"))
        while self._held_bytes > cfg.max_bytes and held:
            early.append(self._pop_oldest("max_bytes"))
        if early:
            self._release(early)

    def _pop_oldest(self, reason: str) -> _Trace:
        trace_id, trace = self._held.popitem(last=False)
        self._forget(trace_id, trace, reason)
        return trace

    def _forget(self, trace_id: bytes, trace: _Trace, reason: str) -> None:
        self._held_bytes -= trace.nbytes
        self._held_spans -= len(trace.spans)
        pending = self._pending_released.get(reason)
        if pending is None:
            pending = self._pending_released[reason] = [0, 0]
        pending[0] += 1
        pending[1] += len(trace.spans)
        stamp = self._stamp_for(trace)
        if self.config.late_span_cache_size and trace.root is not None:
            self._released[trace_id] = stamp
            self._released.move_to_end(trace_id)
            while len(self._released) > self.config.late_span_cache_size:
                self._released.popitem(last=False)
        trace.stamp = stamp
        trace.root = None
        if self.recent.recording:
            self.recent.released(trace_id, trace, reason)

    def _release_expired(self, now: float) -> None:
        wait = self.config.wait_duration
        max_wait = self.config.max_wait_duration
        if self._tw is not None:
            batch = self._tw.expire(self._held, now, wait, max_wait)
            if batch:
                for part in _parts(batch, lambda entry: len(entry[1])):
                    self._release_native(part, counted=False)
                self._update_gauges()
            return
        out: list[_Trace] = []
        held = self._held
        while held:
            trace_id, trace = next(iter(held.items()))
            reason = "wait"
            if trace.last_seen + wait > now:
                if max_wait and now - trace.queued_first >= max_wait:
                    reason = "max_wait"  # still receiving spans, but held long enough
                elif trace.last_seen > trace.queued_at:
                    # spans arrived since it was queued: queue it again, behind the others
                    held.move_to_end(trace_id)
                    trace.queued_at = trace.last_seen
                    continue
                else:
                    break
            del held[trace_id]
            self._forget(trace_id, trace, reason)
            out.append(trace)
        if out:
            for part in _parts(out, lambda trace: len(trace.spans)):
                self._release(part)
            self._update_gauges()

    def _release_all(self, reason: str) -> None:
        if self._tw is not None:
            held = self._held
            batch = [(trace_id, trace, reason) for trace_id, trace in held.items()]
            held.clear()
            if batch:
                self._release_native(batch, counted=False)
            self._update_gauges()
            return
        out = []
        while self._held:
            out.append(self._pop_oldest(reason))
        if out:
            self._release(out)
        self._update_gauges()

    def _release_native(self, batch: list[tuple[bytes, Any, str]], counted: bool) -> None:
        """Releases traces taken out of ``_held`` (with ``counted``, already subtracted from
        the held bytes and spans) in one C call: release counts, stamps (with their
        complexity tiers), the late-span cache and the assembled request."""
        encoded, count, nbytes = self._tw.release(
            batch,
            self._release_cfg,
            self._stamp_tails,
            self._pending_released,
            self._pending_outcomes,
            self._released,
            self.config.late_span_cache_size,
            self._stamp_markers,
            self._suffix_for,
        )
        if not counted:
            self._held_bytes -= nbytes
            self._held_spans -= count
        if self.recent.recording:
            self.recent.released_batch(batch)
        self._flush_counts()
        acks = self._acks
        self._enqueue(
            encoded, count, acks.released([t.queued_first for _, t, _ in batch]) if acks else ()
        )

    def _release(self, traces: list[_Trace]) -> None:
        acks = self._acks
        self._release_python(
            traces, acks.released([t.queued_first for t in traces]) if acks else ()
        )

    def _release_python(self, traces: list[_Trace], acks: tuple[object, ...] = ()) -> None:
        self._flush_counts()
        by_group: dict[GroupKey, list[bytes]] = {}
        count = 0
        for trace in traces:
            stamp = trace.stamp
            spans = trace.spans
            count += len(spans)
            if stamp is None:
                for span_raw, group in zip(spans, trace.groups, strict=True):
                    by_group.setdefault(group, []).append(span_raw)
                continue
            suffix = stamp[1]
            search = self._stamp_re.search
            groups = trace.groups
            first = groups[0]
            if all(g is first for g in groups):
                # the common case: the whole trace from one resource and scope
                out = by_group.setdefault(first, [])
                if search(b"".join(spans)) is None:
                    # no span has any stamp attribute: one search for the whole trace
                    out.extend([span_raw + suffix for span_raw in spans])
                    continue
                ri = trace.root_index
                if (
                    ri >= 0
                    and search(b"".join(spans[:ri])) is None
                    and search(b"".join(spans[ri + 1 :])) is None
                ):
                    # only the root has stamp attributes (say workflow.id): known from ingest
                    stamped = [span_raw + suffix for span_raw in spans]
                    present = trace.root_present
                    stamped[ri] = spans[ri] + b"".join(
                        encode_attribute(k, v) if i else _encode_attribute(k, v)
                        for i, (k, v) in enumerate(zip(self._stamp_keys, stamp[0], strict=True))
                        if k not in present
                    )
                    out.extend(stamped)
                    continue
                for span_raw in spans:
                    if search(span_raw) is None:
                        out.append(span_raw + suffix)
                    else:
                        out.append(span_raw + self._suffix_for(span_raw, stamp))
                continue
            for span_raw, group in zip(spans, groups, strict=True):
                if search(span_raw) is None:
                    span_raw = span_raw + suffix
                else:
                    span_raw = span_raw + self._suffix_for(span_raw, stamp)
                by_group.setdefault(group, []).append(span_raw)
        self._enqueue(self._assemble_groups(by_group), count, acks)

    @staticmethod
    def _assemble_groups(by_group: dict[GroupKey, list[bytes]]) -> bytes:
        """An ``ExportTraceServiceRequest`` with one ``ResourceSpans`` / ``ScopeSpans`` per
        group, written directly on the wire (length-prefixed fields joined once: no message
        is built, each span is copied once). Empty fields are left out, as protobuf does."""
        headers = _SPAN_HEADERS
        out: list[bytes] = []
        for (resource, resource_url, scope, scope_url), spans in by_group.items():
            parts: list[bytes] = []
            if scope:
                parts += (b"\x0a", _varint(len(scope)), scope)
            for span_raw in spans:
                n = len(span_raw)
                header = headers.get(n)
                if header is None:
                    header = b"\x12" + _varint(n)
                    if n < _SPAN_HEADERS_MAX:
                        headers[n] = header
                parts += (header, span_raw)
            if scope_url:
                parts += (b"\x1a", _varint(len(scope_url)), scope_url)
            scope_spans = b"".join(parts)
            rs: list[bytes] = []
            if resource:
                rs += (b"\x0a", _varint(len(resource)), resource)
            rs += (b"\x12", _varint(len(scope_spans)), scope_spans)
            if resource_url:
                rs += (b"\x1a", _varint(len(resource_url)), resource_url)
            resource_spans = b"".join(rs)
            out += (b"\x0a", _varint(len(resource_spans)), resource_spans)
        return b"".join(out)

    def _stamp_for(self, trace: _Trace) -> _Stamp | None:
        """The workflow attributes of a trace, or ``None`` if it is not a workflow."""
        root = trace.root
        if root is None or not root[0]:
            return None
        outcome = root[3]
        values = (root[1], root[2], trace.agent_id or "unknown", outcome, self._tier(trace))
        pending = self._pending_outcomes
        pending[outcome] = pending.get(outcome, 0) + 1
        keys = self._stamp_keys
        # the workflow id is unique: encoded uncached; the other four repeat: encoded once
        tail_key = values[1:]
        tail = self._stamp_tails.get(tail_key)
        if tail is None:
            if len(self._stamp_tails) >= 4096:
                self._stamp_tails.clear()
            tail = b"".join(encode_attribute(k, v) for k, v in zip(keys[1:], tail_key, strict=True))
            self._stamp_tails[tail_key] = tail
        return values, _encode_attribute(keys[0], values[0]) + tail

    def _flush_counts(self) -> None:
        """Adds the release and outcome counts gathered since the last call to the
        self-telemetry counters (once per release, not once per trace)."""
        name = self.settings.name
        for reason, (traces, spans) in self._pending_released.items():
            children = self._released_children.get(reason)
            if children is None:
                children = (self._c_traces.labels(name, reason), self._c_spans.labels(name, reason))
                self._released_children[reason] = children
            children[0].inc(traces)
            children[1].inc(spans)
        self._pending_released.clear()
        for outcome, n in self._pending_outcomes.items():
            child = self._workflow_children.get(outcome)
            if child is None:
                child = self._workflow_children[outcome] = self._c_workflows.labels(name, outcome)
            child.inc(n)
        self._pending_outcomes.clear()

    def _tier(self, trace: _Trace) -> str:
        spans = len(trace.spans)
        tool_calls = trace.tool_calls
        depth = -1  # computed only if a tier's span and tool bounds are met
        for tier in self.config.complexity_tiers:
            if spans <= tier.max_spans and tool_calls <= tier.max_tool_calls:
                if depth < 0:
                    depth = _max_depth(trace.ids, trace.parents, self._depth_cap)
                if depth <= tier.max_depth:
                    return tier.name
        return TOP_TIER

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
        while True:
            if not self._outbox:
                if self._closing and not self._held:
                    return
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
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

    async def _send(self, payload: Payload, count: int) -> None:
        await deliver_holding(self.next, payload, self.settings, "released traces")

    def _next_release(self) -> float | None:
        """When the timer should release next: the first held trace's deadline, but not
        before a tick after the last release; ``None`` when nothing is held."""
        if not self._held:
            return None
        first = next(iter(self._held.values()))
        return max(first.queued_at + self.config.wait_duration, self._not_before)

    async def _timer_loop(self) -> None:
        """Releases the due traces when the deadline of the first held trace (``_armed``)
        passes. ``consume`` wakes it only when that deadline changed (the held traces went
        from none to some, or limits released the first): no task, no timeout per request.
        Releases are at least ``_tick`` apart (a tenth of ``wait_duration``, at most 100 ms),
        so the traces falling due within a tick go out together: one release, one request
        downstream and one pass of the connectors per tick instead of per incoming request;
        a trace is held between ``wait_duration`` and that plus the tick."""
        loop = asyncio.get_running_loop()
        wake = self._wake
        while not self._closing:
            handle: asyncio.TimerHandle | None = None
            self._armed = None
            deadline = self._next_release()
            if deadline is not None:
                now = loop.time()
                if deadline <= now:
                    self._not_before = now + self._tick
                    self._release_expired(now)
                    continue
                self._armed = deadline
                handle = loop.call_at(deadline, wake.set)
            wake.clear()
            try:
                await wake.wait()
            finally:
                if handle is not None:
                    handle.cancel()
        self._armed = None

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        self._loop = asyncio.get_running_loop()
        if self._timer is None:
            self._timer = supervise(self.settings, host, "release", self._timer_loop)
            self._sender = supervise(self.settings, host, "send", self._send_loop)

    async def shutdown(self) -> None:
        """Releases every held trace at once and sends it; what the deadline cuts off is
        counted as dropped (``shutdown_deadline``)."""
        if self._done:
            return
        if self._timer is None and not self._held and not self._outbox:
            return  # never started and holding nothing: stays startable
        self._closing = True
        self._wake.set()
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


_T = TypeVar("_T")


def _parts(items: list[_T], spans_of: Callable[[_T], int]) -> Iterator[list[_T]]:
    """``items`` (traces due for release) in consecutive parts of about ``RELEASE_MAX_SPANS``
    spans (a part ends with the trace that reaches it): each part is one request downstream,
    so what a release builds and the next components copy stays small however many traces
    fall due at once."""
    start = spans = 0
    for i, item in enumerate(items):
        spans += spans_of(item)
        if spans >= RELEASE_MAX_SPANS:
            yield items[start : i + 1]
            start, spans = i + 1, 0
    if start < len(items):
        yield items[start:]


def _max_depth(ids: list[bytes], parents: list[bytes], cap: int = 0) -> int:
    """Depth of the span tree (a root alone is depth 1), level by level from the spans whose
    parent is not in the trace; bounded even if the ids form a cycle. With ``cap``, no more
    than ``cap`` levels are walked (the result is ``min(depth, cap)``)."""
    present = set(ids)
    children: dict[bytes, list[bytes]] = {}
    level: list[bytes] = []
    for span_id, parent in zip(ids, parents, strict=True):
        if parent in present:
            children.setdefault(parent, []).append(span_id)
        else:
            level.append(span_id)
    depth = 0
    seen = 0
    total = len(ids)
    while level and seen < total and (not cap or depth < cap):
        depth += 1
        seen += len(level)
        nxt: list[bytes] = []
        for span_id in level:
            below = children.get(span_id)
            if below:
                nxt.extend(below)
        level = nxt
    return depth
