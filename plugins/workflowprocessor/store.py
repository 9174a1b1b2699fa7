"""The held traces of the ``workflow`` processor: a :class:`TraceStore` groups the spans of
incoming requests by trace id, decides what the special spans say (roots, tool calls, the
agent; :mod:`plugins.workflowprocessor.rules`), enforces ``max_traces`` / ``max_bytes``, picks
the due traces, stamps them and assembles the requests that carry them on.

Two implementations give the same results (the fuzz twin tests compare their bytes):
:class:`PythonTraceStore` here (spans kept as their encoded bytes, parsed with the
shallow/skeleton views of ``pipeline._wire``) and
:class:`plugins.workflowprocessor.native.NativeTraceStore` (the C accelerator
``plugins/_native/_tracewire.c``: no Python object per span). The processor only sees the
protocol; what a store lets go of comes back as :class:`Release` s, in order.

A store is configured once (:class:`StoreConfig`, built from the processor's options); it owns
the held traces, the late-span memory of released workflows and the release counts until the
processor takes them (:meth:`TraceStore.take_counts`).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from pipeline._wire import ShallowTraces, SkeletonTraces
from plugins._agentconv import AttributeNames, ComplexityTier, ErrorClassifier
from plugins._agentdialects import Dialects, load_dialects
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.executions import execution_markers, execution_of, outermost
from plugins.workflowprocessor.rules import (
    NOT_WORKFLOW,
    RootFacts,
    Stamp,
    ToolCalls,
    complexity_tier,
    max_depth,
    parts,
    root_facts,
    span_agent,
    stamp_keys,
    stamp_pattern,
    suffix_for,
)
from plugins.workflowprocessor.wire import (
    GroupKey,
    assemble_groups,
    encode_attribute,
    encode_attribute_uncached,
    encode_bool_attribute,
    encode_double_attribute,
    key_marker,
)

if TYPE_CHECKING:
    from plugins.workflowprocessor.recent import RecentWorkflows

# What holding a trace costs beyond its spans' encodings, counted against ``max_bytes``:
# per span and per trace. The Python store: the bytes objects of a span and its two ids, four
# list slots and the group reference; the ``PyTrace``, its lists, its key and entry in the held
# traces and its root facts. (The C store counts its own: see native.py.)
SPAN_OVERHEAD = 160
TRACE_OVERHEAD = 400

# the traces due at one release go downstream in requests of about this many spans: at
# 100,000 spans/s a tick releases ~10,000; one request of 1,024 spans instead of all of them
# kept the pipeline's peak RSS ~12 MiB lower and cost no CPU (benchmarks/agent_pipeline.py)
RELEASE_MAX_SPANS = 1024

# interned (resource, scope) groups remembered (then the memory starts over)
MAX_GROUPS = 4096


class HeldTrace(Protocol):
    """One held trace: :class:`PyTrace` or the C accelerator's ``_tracewire.Trace`` (whose
    ``spans``, ``groups``, ``ids`` and ``parents`` are read-only copies)."""

    last_seen: float
    queued_at: float
    queued_first: float
    nbytes: int
    root_index: int
    root_present: tuple[str, ...]
    root: RootFacts | None
    agent_id: str
    tool_calls: int
    root_extra: bytes
    roots: int
    others: tuple[int, ...]
    others_extra: bytes

    @property
    def spans(self) -> list[bytes]: ...
    @property
    def groups(self) -> list[GroupKey]: ...
    @property
    def ids(self) -> list[bytes]: ...
    @property
    def parents(self) -> list[bytes]: ...
    def __len__(self) -> int: ...


@dataclass(slots=True)
class PyTrace:
    """The spans of one trace being held by the Python store, and what was learned from
    them."""

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
    root: RootFacts | None = None  # what the root span says, once it arrived
    agent_id: str = ""
    tool_calls: int = 0
    # appended to the span at root_index after its stamp: the execution's duration when the
    # execution is a span below the root (see BaseTraceStore.decide)
    root_extra: bytes = b""
    roots: int = 0  # parentless spans (the one at root_index is the trace's root)
    # the other parentless spans of a workflow with several (ascending indexes), and what is
    # appended to each after its stamp: the workflow.secondary_root mark (see mark_others)
    others: tuple[int, ...] = ()
    others_extra: bytes = b""
    stamp: Stamp | None = None  # computed at release

    def __len__(self) -> int:
        return len(self.spans)


class LateSpanMemory(Protocol):
    """The late-span memory of released traces (trace id -> stamp, or ``None`` for a trace
    that is not a workflow), least recently remembered first: the Python store's
    ``OrderedDict``, the C store's ``_tracewire.LateMemory`` (written by its release)."""

    def __contains__(self, key: object, /) -> bool: ...
    def __getitem__(self, key: bytes, /) -> Stamp | None: ...
    def __len__(self) -> int: ...
    def get(self, key: bytes, /) -> Stamp | None: ...
    def move_to_end(self, key: bytes, /) -> None: ...
    def items(self) -> Any: ...


class Release(NamedTuple):
    """What a store let go of, as one request downstream: the encoded
    ``ExportTraceServiceRequest``, its span count and the ``queued_first`` times of its
    traces (whose durable acknowledgements it carries on)."""

    encoded: bytes
    spans: int
    created: list[float]


@dataclass(frozen=True)
class StoreConfig:
    """Everything a store reads from the processor's options, worked out once."""

    names: AttributeNames
    wait_duration: float
    max_wait_duration: float
    max_traces: int
    max_bytes: int
    late_span_cache_size: int
    tiers: tuple[ComplexityTier, ...]
    stamp_keys: tuple[str, str, str, str, str]
    stamp_markers: tuple[bytes, ...]
    stamp_re: re.Pattern[bytes]
    agent_marker: bytes
    agent_id_marker: bytes  # (a span naming its agent holds one of the two)
    depth_cap: int
    dialects: Dialects
    exec_markers: tuple[bytes, ...] | None  # None: every span may be an execution
    secondary_mark: bytes  # workflow.secondary_root = true, encoded (see mark_others)

    @classmethod
    def from_config(cls, config: WorkflowConfig) -> StoreConfig:
        names = config.attributes
        keys = stamp_keys(names)
        dialects = load_dialects(config.dialects, attribute_names=names)
        return cls(
            names=names,
            wait_duration=config.wait_duration,
            max_wait_duration=config.max_wait_duration,
            max_traces=config.max_traces,
            max_bytes=config.max_bytes,
            late_span_cache_size=config.late_span_cache_size,
            tiers=tuple(config.complexity_tiers),
            stamp_keys=keys,
            stamp_markers=tuple(key_marker(k) for k in keys),
            stamp_re=stamp_pattern(keys),
            agent_marker=key_marker(names.agent_name),
            agent_id_marker=key_marker(names.agent_id),
            depth_cap=max((t.max_depth for t in config.complexity_tiers), default=0) + 1,
            dialects=dialects,
            exec_markers=execution_markers(dialects),
            secondary_mark=encode_bool_attribute(names.workflow_secondary_root, True),
        )


class TraceStore(Protocol):
    """What the processor asks of its held traces (see the module docstring)."""

    config: StoreConfig
    held: collections.OrderedDict[bytes, Any]  # trace id -> HeldTrace, least recently queued first

    @property
    def released(self) -> LateSpanMemory:  # the late-span memory
        ...

    held_bytes: int
    held_spans: int
    recent: RecentWorkflows | None  # the console's hooks, once set

    def ingest(self, raw: bytes, now: float) -> Release | None:
        """Adds a request's spans to the held traces; returns the late spans (those of
        released traces), stamped, if any. A malformed request raises (the processor's
        caller then refuses the request as a whole: see pipeline/consumer.py)."""
        ...

    def enforce_limits(self) -> list[Release]:
        """Releases the least recently active traces beyond ``max_traces`` / ``max_bytes``."""
        ...

    def expire(self, now: float) -> list[Release]:
        """Releases the traces due at ``now``."""
        ...

    def release_all(self, reason: str) -> list[Release]:
        """Releases every held trace."""
        ...

    def take_counts(self) -> tuple[dict[str, list[int]], dict[str, int]]:
        """The release counts (reason -> [traces, spans]) and workflow outcomes (outcome ->
        count) gathered since the last call."""
        ...

    def tier(self, trace: Any) -> str:
        """The complexity tier of a held or released trace."""
        ...

    def next_deadline(self) -> float | None:
        """When the first held trace falls due, ``None`` when nothing is held."""
        ...


class BaseTraceStore:
    """What both stores share: the held traces, the late-span memory, the counts, the walk
    of a request in Python and the late spans."""

    span_overhead = SPAN_OVERHEAD
    trace_overhead = TRACE_OVERHEAD

    def __init__(
        self,
        config: StoreConfig,
        classifier: ErrorClassifier,
        on_classified: Callable[[], None],
        on_late: Callable[[str], None],
    ) -> None:
        self.config = config
        self.tools = ToolCalls(config.names, classifier, on_classified)
        self.on_late = on_late
        self.held: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
        self.released: LateSpanMemory = self.new_late_memory()
        self.held_bytes = 0
        self.held_spans = 0
        self.recent: RecentWorkflows | None = None
        self.pending_released: dict[str, list[int]] = {}
        self.pending_outcomes: dict[str, int] = {}
        self.groups: dict[GroupKey, GroupKey] = {}  # interned: spans group by identity later
        # (type, agent, outcome, tier) -> their encoding (the workflow id is encoded apart)
        self.stamp_tails: dict[tuple[str, ...], bytes] = {}
        # trace id -> the indexes of its spans that may be agent runs or workflows, read when
        # it is released (see executions.py); only while its root is not a workflow
        self.cands: dict[bytes, list[int]] = {}
        # trace id -> what its root carries of an execution below it, for a root arriving
        # after the trace was released (bounded as the late-span memory)
        self.late_roots: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()

    # -- executions -------------------------------------------------------------------------------
    def may_be_execution(self, span_raw: bytes) -> bool:
        """Whether a span holds what an agent run or workflow needs (a cheap pre-test)."""
        markers = self.config.exec_markers
        if markers is None:
            return True
        return any(m in span_raw for m in markers)

    def remember_executions(self, trace_id: bytes, trace: Any, found: list[int]) -> None:
        """Remembers what a request added to a trace that may be agent runs or workflows,
        unless its root is a workflow (which is then the execution)."""
        if not found:
            return
        root = trace.root
        if root is not None and root[0]:
            return
        at = self.cands.get(trace_id)
        if at is None:
            self.cands[trace_id] = found
        else:
            at.extend(found)

    def decide(self, trace_id: bytes, trace: Any) -> None:
        """At release: the trace's execution (its outermost agent run or workflow, when its
        root is no workflow) written into its root facts and agent, as a workflow root's would
        be. When the execution is a span below the root (an HTTP server span above an agent
        run), the root also carries the execution's duration (``workflow.duration``, in
        ``root_extra``): the root is where the connector and ``tail_sampling`` read a
        workflow, and its own duration is not the workflow's. Without a root yet, the
        execution takes the root's place (its index), and a root arriving late gets the
        duration then (:meth:`_stamp_late`)."""
        found = self.cands.pop(trace_id, None)
        if found is None:
            return
        root = trace.root
        if root is not None and root[0]:
            return
        cfg = self.config
        spans, groups = trace.spans, trace.groups
        executions = []
        for index in found:
            e = execution_of(
                spans[index],
                groups[index][2],
                index,
                trace_id,
                cfg.dialects,
                cfg.names,
                cfg.stamp_keys,
            )
            if e is not None:
                executions.append(e)
        ids, parents = trace.ids, trace.parents
        chosen = outermost(executions, ids, parents)
        if chosen is None:
            return
        execution, agent = chosen
        trace.root = execution.facts
        if agent:
            trace.agent_id = agent
        if trace.roots > 1:
            # several parentless spans (none a workflow, or it would be the root): the root
            # is the one the execution is in (unless its parent never came)
            top = top_of(execution.index, ids, parents)
            if top >= 0:
                trace.root_index = top
        root_index = trace.root_index  # the root's, when it arrived
        if root_index == execution.index:
            return
        duration = encode_double_attribute(
            cfg.names.workflow_duration, (execution.end - execution.start) / 1e9
        )
        if root_index >= 0:
            trace.root_extra = duration  # (root_index and root_present stay the root's)
            return
        trace.root_present = execution.facts[4]
        trace.root_index = execution.index
        cache = cfg.late_span_cache_size
        if cache:
            late = self.late_roots
            late[trace_id] = duration
            while len(late) > cache:
                late.popitem(last=False)

    def read_root(self, trace: Any, span_raw: bytes, trace_id: bytes, index: int) -> str:
        """A parentless span of a trace read (counted in ``roots``): it becomes the trace's
        root unless the trace's root is a workflow already (several parentless spans share a
        trace id when a process did not propagate the context: the first that is a workflow
        stays the root, see docs/agent-workflow.md). Returns the agent it names, or ""."""
        trace.roots += 1
        cfg = self.config
        facts, agent = root_facts(span_raw, trace_id, cfg.names, cfg.stamp_keys)
        root = trace.root
        if root is None or not root[0]:
            trace.root_index = index
            trace.root = facts
            trace.root_present = facts[4]
        return agent

    def mark_others(self, trace: Any) -> None:
        """At release, after :meth:`decide`: in a workflow with several parentless spans,
        those that are not its root (the one at ``root_index``) are marked
        ``workflow.secondary_root`` (after their stamp). The connector and ``tail_sampling``
        read a workflow on its root, and a trace is one execution: a marked root is not
        one."""
        root = trace.root
        if root is None or not root[0]:
            return
        ri = trace.root_index
        trace.others = tuple(i for i, p in enumerate(trace.parents) if not p and i != ri)
        trace.others_extra = self.config.secondary_mark

    # -- shared -----------------------------------------------------------------------------------
    def take_counts(self) -> tuple[dict[str, list[int]], dict[str, int]]:
        released, outcomes = self.pending_released, self.pending_outcomes
        self.pending_released, self.pending_outcomes = {}, {}
        return released, outcomes

    def next_deadline(self) -> float | None:
        if not self.held:
            return None
        first = next(iter(self.held.values()))
        return float(first.queued_at + self.config.wait_duration)

    def tier(self, trace: Any) -> str:
        cfg = self.config
        return complexity_tier(
            len(trace),
            trace.tool_calls,
            lambda cap: max_depth(trace.ids, trace.parents, cap),
            cfg.tiers,
            cfg.depth_cap,
        )

    def suffix_for(self, span_raw: bytes, stamp: Stamp) -> bytes:
        """The stamp, without the attributes the span already has."""
        return suffix_for(span_raw, stamp, self.config.stamp_keys, self.config.stamp_re)

    def interned_groups(self) -> dict[GroupKey, GroupKey]:
        if len(self.groups) > MAX_GROUPS:
            self.groups.clear()
        return self.groups

    def new_trace(self, now: float) -> Any:
        raise NotImplementedError

    def new_late_memory(self) -> LateSpanMemory:
        """An empty late-span memory (see :class:`LateSpanMemory`)."""
        raise NotImplementedError

    def _stage(
        self, staged: dict[bytes, Any], trace_id: bytes, trace: Any
    ) -> tuple[list[bytes], list[GroupKey], list[bytes], list[bytes], int]:
        """Where a walk in Python puts a trace's spans (and the index of the first)."""
        raise NotImplementedError

    def _commit_staged(self, staged: dict[bytes, Any]) -> int:
        """Hands what a walk staged to the traces; returns the bytes it adds."""
        raise NotImplementedError

    def _walk(self, raw: bytes, now: float) -> Release | None:
        """A request walked in Python: spans grouped by trace into the held traces (through
        :meth:`_stage`), the special spans read, late spans stamped and returned."""
        shallow = ShallowTraces.FromString(raw)
        skeleton = SkeletonTraces.FromString(raw)
        held = self.held
        released = self.released
        names = self.config.names
        tools = self.tools
        tool_a, tool_b = tools.markers
        agent_marker = self.config.agent_marker
        agent_id_marker = self.config.agent_id_marker
        late: dict[GroupKey, list[bytes]] = {}
        late_count = 0
        interned = self.interned_groups()
        added_bytes = 0
        added_spans = 0
        span_overhead, trace_overhead = self.span_overhead, self.trace_overhead
        staged: dict[bytes, Any] = {}
        exec_markers = self.config.exec_markers
        found: dict[bytes, tuple[Any, list[int]]] = {}
        for rs_sh, rs_sk in zip(shallow.resource_spans, skeleton.resource_spans, strict=True):
            resource = rs_sh.resource
            resource_url = rs_sh.schema_url
            for ss_sh, ss_sk in zip(rs_sh.scope_spans, rs_sk.scope_spans, strict=True):
                group: GroupKey = (resource, resource_url, ss_sh.scope, ss_sh.schema_url)
                group = interned.setdefault(group, group)
                for span_raw, sk in zip(ss_sh.spans, ss_sk.spans, strict=True):
                    trace_id = sk.trace_id
                    trace = held.get(trace_id)
                    tool = False
                    if tool_a in span_raw or tool_b in span_raw:
                        span_raw, tool = tools.check(span_raw)
                    if trace is None:
                        if trace_id in released:
                            stamped = self._stamp_late(trace_id, span_raw, sk.parent_span_id)
                            late.setdefault(group, []).append(stamped)
                            late_count += 1
                            continue
                        trace = self.new_trace(now)
                        held[trace_id] = trace
                        added_bytes += trace_overhead
                    else:
                        # reordered lazily: the timer moves a trace that is not due yet
                        trace.last_seen = now
                    spans, groups, ids, parents, base = self._stage(staged, trace_id, trace)
                    if exec_markers is None or any(m in span_raw for m in exec_markers):
                        at = found.get(trace_id)
                        if at is None:
                            at = found[trace_id] = (trace, [])
                        at[1].append(base + len(spans))
                    if tool:
                        trace.tool_calls += 1
                    parent = sk.parent_span_id
                    if not parent:
                        agent = self.read_root(trace, span_raw, trace_id, base + len(spans))
                        if agent:
                            trace.agent_id = agent
                    elif not trace.agent_id and (
                        agent_marker in span_raw or agent_id_marker in span_raw
                    ):
                        agent = span_agent(span_raw, names)
                        if agent:
                            trace.agent_id = agent
                    spans.append(span_raw)
                    groups.append(group)
                    ids.append(sk.span_id)
                    parents.append(parent)
                    size = len(span_raw) + span_overhead
                    trace.nbytes += size
                    added_bytes += size
                    added_spans += 1
        added_bytes += self._commit_staged(staged)
        for trace_id, (trace, indexes) in found.items():
            self.remember_executions(trace_id, trace, indexes)
        self.held_bytes += added_bytes
        self.held_spans += added_spans
        if late:
            return Release(assemble_groups(late), late_count, [])
        return None

    def _stamp_late(self, trace_id: bytes, span_raw: bytes, parent: bytes) -> bytes:
        stamp = self.released[trace_id]
        self.released.move_to_end(trace_id)
        if stamp is None:
            self.on_late("not_workflow")
            return span_raw
        self.on_late("enriched")
        extra = b""
        if not parent:
            # the root (when its trace was released without one: it carries the execution's
            # duration), else another parentless span of the workflow
            late = self.late_roots
            extra = late.pop(trace_id) if trace_id in late else self.config.secondary_mark
        return span_raw + self.suffix_for(span_raw, stamp) + extra

    def count_release(self, reason: str, spans: int) -> None:
        pending = self.pending_released.get(reason)
        if pending is None:
            pending = self.pending_released[reason] = [0, 0]
        pending[0] += 1
        pending[1] += spans


def top_of(index: int, ids: list[bytes], parents: list[bytes]) -> int:
    """The index of the parentless span above the span at ``index`` (itself when it has no
    parent), or -1 when an ancestor never arrived (or the ids form a cycle)."""
    at = {span_id: i for i, span_id in enumerate(ids)}
    for _ in range(len(ids)):
        parent = parents[index]
        if not parent:
            return index
        up = at.get(parent)
        if up is None:
            return -1
        index = up
    return -1


class PythonTraceStore(BaseTraceStore):
    """The store in pure Python (:class:`PyTrace` s in an ordered dict)."""

    released: collections.OrderedDict[bytes, Stamp | None]

    def new_trace(self, now: float) -> PyTrace:
        return PyTrace(now, now, now, nbytes=self.trace_overhead)

    def new_late_memory(self) -> collections.OrderedDict[bytes, Stamp | None]:
        return collections.OrderedDict()

    def _stage(
        self, staged: dict[bytes, Any], trace_id: bytes, trace: Any
    ) -> tuple[list[bytes], list[GroupKey], list[bytes], list[bytes], int]:
        return trace.spans, trace.groups, trace.ids, trace.parents, 0

    def _commit_staged(self, staged: dict[bytes, Any]) -> int:
        return 0

    def ingest(self, raw: bytes, now: float) -> Release | None:
        return self._walk(raw, now)

    # -- release ----------------------------------------------------------------------------------
    def enforce_limits(self) -> list[Release]:
        cfg = self.config
        held = self.held
        if len(held) <= cfg.max_traces and self.held_bytes <= cfg.max_bytes:
            return []
        early: list[PyTrace] = []
        while len(held) > cfg.max_traces:
            early.append(self._pop_oldest("max_traces"))
        while self.held_bytes > cfg.max_bytes and held:
            early.append(self._pop_oldest("max_bytes"))
        return [self._release(early)] if early else []

    def expire(self, now: float) -> list[Release]:
        wait = self.config.wait_duration
        max_wait = self.config.max_wait_duration
        out: list[PyTrace] = []
        held = self.held
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
        return [self._release(part) for part in parts(out, len, RELEASE_MAX_SPANS)]

    def release_all(self, reason: str) -> list[Release]:
        out = []
        while self.held:
            out.append(self._pop_oldest(reason))
        return [self._release(out)] if out else []

    def _pop_oldest(self, reason: str) -> PyTrace:
        trace_id, trace = self.held.popitem(last=False)
        self._forget(trace_id, trace, reason)
        return trace

    def _forget(self, trace_id: bytes, trace: PyTrace, reason: str) -> None:
        self.decide(trace_id, trace)
        if trace.roots > 1:
            self.mark_others(trace)
        self.held_bytes -= trace.nbytes
        self.held_spans -= len(trace.spans)
        self.count_release(reason, len(trace.spans))
        stamp = self._stamp_for(trace)
        cache = self.config.late_span_cache_size
        if cache and trace.root is not None:
            self.released[trace_id] = stamp
            self.released.move_to_end(trace_id)
            while len(self.released) > cache:
                self.released.popitem(last=False)
        trace.stamp = stamp
        trace.root = None
        recent = self.recent
        if recent is not None and recent.recording:
            recent.released(trace_id, trace, reason)

    def _stamp_for(self, trace: PyTrace) -> Stamp | None:
        """The workflow attributes of a trace, or ``None`` if it is not a workflow."""
        root = trace.root
        if root is None or not root[0]:
            return None
        outcome = root[3]
        values = (root[1], root[2], trace.agent_id or "unknown", outcome, self.tier(trace))
        pending = self.pending_outcomes
        pending[outcome] = pending.get(outcome, 0) + 1
        keys = self.config.stamp_keys
        # the workflow id is unique: encoded uncached; the other four repeat: encoded once
        tail_key = values[1:]
        tail = self.stamp_tails.get(tail_key)
        if tail is None:
            if len(self.stamp_tails) >= 4096:
                self.stamp_tails.clear()
            tail = b"".join(encode_attribute(k, v) for k, v in zip(keys[1:], tail_key, strict=True))
            self.stamp_tails[tail_key] = tail
        return values, encode_attribute_uncached(keys[0], values[0]) + tail

    def _release(self, traces: Sequence[PyTrace]) -> Release:
        by_group: dict[GroupKey, list[bytes]] = {}
        count = 0
        keys = self.config.stamp_keys
        search = self.config.stamp_re.search
        for trace in traces:
            stamp = trace.stamp
            spans = trace.spans
            count += len(spans)
            if stamp is None:
                for span_raw, group in zip(spans, trace.groups, strict=True):
                    by_group.setdefault(group, []).append(span_raw)
                continue
            suffix = stamp[1]
            groups = trace.groups
            first = groups[0]
            extra = trace.root_extra
            others = trace.others
            if not extra and not others and all(g is first for g in groups):
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
                        encode_attribute(k, v) if i else encode_attribute_uncached(k, v)
                        for i, (k, v) in enumerate(zip(keys, stamp[0], strict=True))
                        if k not in present
                    )
                    out.extend(stamped)
                    continue
                for span_raw in spans:
                    if search(span_raw) is None:
                        out.append(span_raw + suffix)
                    else:
                        out.append(span_raw + self.suffix_for(span_raw, stamp))
                continue
            ri = trace.root_index if extra else -1
            marked = frozenset(others)
            for i, (span_raw, group) in enumerate(zip(spans, groups, strict=True)):
                if search(span_raw) is None:
                    span_raw = span_raw + suffix
                else:
                    span_raw = span_raw + self.suffix_for(span_raw, stamp)
                if i == ri:
                    span_raw += extra  # the root's stamp, then its execution's duration
                if i in marked:
                    span_raw += trace.others_extra  # another root's stamp, then the mark
                by_group.setdefault(group, []).append(span_raw)
        return Release(assemble_groups(by_group), count, [t.queued_first for t in traces])


__all__ = [
    "NOT_WORKFLOW",
    "BaseTraceStore",
    "HeldTrace",
    "LateSpanMemory",
    "PyTrace",
    "PythonTraceStore",
    "Release",
    "StoreConfig",
    "TraceStore",
]
