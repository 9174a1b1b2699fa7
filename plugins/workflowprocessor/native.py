"""The trace store on the C accelerator (``plugins/_native/_tracewire.c``, typed in
``_tracewire.pyi``): held traces are its ``Trace`` objects, filled by its ingest (a trace's
spans copied into one allocation per request, no Python object per span), picked by its
expiry and stamped, remembered and assembled by one release call. It gives the same results
as :class:`plugins.workflowprocessor.store.PythonTraceStore` (the fuzz twin tests compare
them); the held bytes each counts differ by their constants (see below).

What C receives is configured once (:class:`NativeConfig`: the typed tuples of the C
boundary, built from the :class:`~plugins.workflowprocessor.store.StoreConfig`; ingest's part
read by C once, into an ``IngestConfig``). What C
leaves undecided (special spans it does not read: a non-string value, say) comes back and is
read with the rules in Python; a request with late spans is walked in Python, its spans staged
and added to the ``Trace`` s one chunk each.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from plugins._agentconv import TOP_TIER, AttributeNames, ErrorClassifier
from plugins.workflowprocessor.rules import (
    NOT_WORKFLOW,
    outcome,
    span_agent,
)
from plugins.workflowprocessor.store import (
    MAX_GROUPS,
    RELEASE_MAX_SPANS,
    BaseTraceStore,
    LateSpanMemory,
    Release,
    StoreConfig,
)
from plugins.workflowprocessor.wire import GroupKey

# The C store (``_tracewire.Trace``): a span is a 32-byte record beside its encoding in a
# chunk, one allocation per trace and request (its 16-byte header, the allocator's overhead,
# its slot in the trace's chunk table and any new group slot: at most 64 bytes); per trace the
# 160-byte object, its key and entry in the held traces and its root facts (~600 bytes).
# ``Trace.__sizeof__`` is what the object and its chunks really take.
NATIVE_SPAN_OVERHEAD = 32
NATIVE_CHUNK_OVERHEAD = 64
NATIVE_TRACE_OVERHEAD = 600

_ROOT, _TOOL = 1, 2  # the per-span flags of C's ingest


class FactsConfig(NamedTuple):
    """What ``_tracewire.ingest`` reads in the special spans (encoded, in the order of its
    ``K_*`` constants): the keys, the values a tool call is recognised by, the workflow
    name prefix."""

    operation_name: bytes
    mcp_method_name: bytes
    error_type: bytes
    agent_name: bytes
    agent_id: bytes
    workflow_name: bytes
    workflow_id: bytes
    workflow_type: bytes
    workflow_outcome: bytes
    stamp_id: bytes
    stamp_type: bytes
    stamp_agent: bytes
    stamp_outcome: bytes
    stamp_tier: bytes
    tool_operation: bytes
    mcp_tool_method: bytes
    workflow_span_prefix: bytes


class Tier(NamedTuple):
    name: str
    max_spans: int
    max_tool_calls: int
    max_depth: int


class StampConfig(NamedTuple):
    """What ``_tracewire.release`` stamps: the stamp keys (encoded and as strings), the
    complexity tiers (bounds as C integers), the depth cap, the top tier and the agent of
    a workflow naming none."""

    keys: tuple[bytes, ...]
    key_strs: tuple[str, ...]
    tiers: tuple[Tier, ...]
    depth_cap: int
    top_tier: str
    unknown: str


@dataclass(frozen=True)
class NativeConfig:
    """The C boundary's configuration, worked out once."""

    tool_markers: tuple[bytes, bytes]
    agent_marker: bytes
    agent_id_marker: bytes
    facts: FactsConfig
    stamp: StampConfig
    markers: tuple[bytes, ...]  # the stamp keys' markers
    exec_markers: tuple[bytes, ...]  # what an agent run or workflow holds (b"": every span)
    present_by_mask: list[tuple[str, ...]]  # the stamp attributes a root has, by C's bit mask

    @classmethod
    def from_store_config(cls, cfg: StoreConfig) -> NativeConfig:
        names = cfg.names
        keys = cfg.stamp_keys
        big = 1 << 62  # the bounds, as C integers
        return cls(
            tool_markers=(names.tool_operation.encode(), names.mcp_tool_method.encode()),
            agent_marker=cfg.agent_marker,
            agent_id_marker=cfg.agent_id_marker,
            facts=FactsConfig(
                *(
                    v.encode()
                    for v in (
                        names.operation_name,
                        names.mcp_method_name,
                        names.error_type,
                        names.agent_name,
                        names.agent_id,
                        names.workflow_name,
                        names.workflow_id,
                        names.workflow_type,
                        names.workflow_outcome,
                        *keys,
                        names.tool_operation,
                        names.mcp_tool_method,
                        names.workflow_span_prefix,
                    )
                )
            ),
            stamp=StampConfig(
                tuple(k.encode() for k in keys),
                keys,
                tuple(
                    Tier(
                        t.name,
                        min(t.max_spans, big),
                        min(t.max_tool_calls, big),
                        min(t.max_depth, big),
                    )
                    for t in cfg.tiers
                ),
                cfg.depth_cap,
                TOP_TIER,
                "unknown",
            ),
            markers=cfg.stamp_markers,
            exec_markers=(b"",) if cfg.exec_markers is None else cfg.exec_markers,
            present_by_mask=[
                tuple(k for b, k in enumerate(keys) if mask >> b & 1)
                for mask in range(1 << len(keys))
            ],
        )


def supports(names: AttributeNames) -> bool:
    """Whether the C store handles these attribute names: it compares encoded values and
    assumes an appended ``error.type`` changes nothing else it read."""
    read_keys = (
        names.operation_name,
        names.mcp_method_name,
        names.agent_name,
        names.agent_id,
        names.workflow_name,
        names.workflow_id,
        names.workflow_type,
        names.workflow_outcome,
    )
    compared = (names.tool_operation, names.mcp_tool_method, names.workflow_span_prefix)
    return names.error_type not in read_keys and not any("\ufffd" in v for v in compared)


class TracewireAPI(Protocol):
    """What the store calls in ``_tracewire`` (its stubs: ``plugins/_native/_tracewire.pyi``;
    mypy checks that the module's stubs satisfy this)."""

    def ingest(
        self,
        raw: bytes,
        interned: dict[GroupKey, GroupKey],
        config: Any,
        apply: Any,
        now: float = ...,
        /,
    ) -> Any: ...

    def LateMemory(self, size: int, /) -> LateSpanMemory: ...  # (a class)

    def expire(
        self,
        held: MutableMapping[bytes, Any],
        now: float,
        wait: float,
        max_wait: float,
        max_spans: int,
        /,
    ) -> list[list[tuple[bytes, Any, str]]]: ...

    def release(
        self,
        batch: list[tuple[bytes, Any, str]],
        cfg: tuple[Any, ...],
        tails: dict[tuple[str, ...], bytes],
        pending_released: dict[str, list[int]],
        pending_outcomes: dict[str, int],
        lru: Any,  # a LateMemory (or a dict)
        lru_size: int,
        markers: tuple[bytes, ...],
        suffix_for: Callable[[bytes, Any], bytes],
        /,
    ) -> tuple[bytes, int, int]: ...


if TYPE_CHECKING:  # the stubs satisfy the protocol
    from plugins._native import _tracewire as _stubs

    _checked: TracewireAPI = _stubs


class NativeTraceStore(BaseTraceStore):
    """The store on ``_tracewire`` (see the module docstring)."""

    def __init__(
        self,
        tracewire: ModuleType,
        config: StoreConfig,
        classifier: ErrorClassifier,
        on_classified: Callable[[], None],
        on_late: Callable[[str], None],
    ) -> None:
        self.tw = cast(TracewireAPI, tracewire)  # (before new_late_memory)
        super().__init__(config, classifier, on_classified, on_late)
        self._trace_type: Callable[[float, float, float, int], Any] = tracewire.Trace
        self.native = nc = NativeConfig.from_store_config(config)
        # what ingest reads in the special spans, read by C once (search tables built)
        self.ingest_config = tracewire.IngestConfig(
            *nc.tool_markers, nc.agent_marker, nc.facts, nc.exec_markers, nc.agent_id_marker
        )
        # read once (the module's values at creation)
        self.span_overhead = NATIVE_SPAN_OVERHEAD
        self.chunk_overhead = NATIVE_CHUNK_OVERHEAD
        self.trace_overhead = NATIVE_TRACE_OVERHEAD
        # ingest's apply tuple, built once (its now, 0.0 here, is given apart a request)
        self.apply = (
            self.held,
            self.released,
            0.0,
            outcome,
            nc.present_by_mask,
            NOT_WORKFLOW,
            self.span_overhead,
            self.chunk_overhead,
            self.trace_overhead,
            self.tools.classify_failure,
        )

    def new_trace(self, now: float) -> Any:
        return self._trace_type(now, now, now, self.trace_overhead)

    def new_late_memory(self) -> LateSpanMemory:
        # at most late_span_cache_size entries, written by the C release
        return self.tw.LateMemory(self.config.late_span_cache_size)

    # -- ingest -----------------------------------------------------------------------------------
    def ingest(self, raw: bytes, now: float) -> Release | None:
        """The request parsed, its spans grouped by trace and added to the held traces in C,
        which also decides the tool calls, reads the roots and finds the agent: the Python work
        is classifying the failed tool calls lacking ``error.type`` (called back from C) and the
        traces whose special spans C leaves to the rules in Python (anything unusual)."""
        interned = self.groups
        if len(interned) > MAX_GROUPS:  # (interned_groups(), without its call)
            interned.clear()
        # C creates and updates the held traces (in order of first appearance), has the
        # failed tool calls lacking error.type classified, and returns the entries whose
        # special spans it leaves undecided (their traces already created and touched, their
        # spans not added)
        done = self.tw.ingest(raw, interned, self.ingest_config, self.apply, now)
        if done is None:
            # late spans (rare): the walk in Python keeps their exact order in the output
            return self._walk(raw, now)
        leftovers, added_bytes, added_spans, found = done
        if found:  # (most requests find no execution: no iterator made)
            cands = self.cands
            for trace_id, index in found:
                at = cands.get(trace_id)
                if at is None:
                    cands[trace_id] = [index]
                else:
                    at.append(index)
        if not leftovers:  # (the usual request: C decided every special span)
            self.held_bytes += added_bytes
            self.held_spans += added_spans
            return None
        held = self.held
        for trace_id, spans, groups, ids, parents, nbytes, *_ in leftovers:
            trace = held[trace_id]
            nbytes = self._specials(trace, trace_id, spans, parents, nbytes)
            trace.add(spans, groups, ids, parents)
            size = nbytes + self.span_overhead * len(spans) + self.chunk_overhead
            trace.nbytes += size
            added_bytes += size
            added_spans += len(spans)
        self.held_bytes += added_bytes
        self.held_spans += added_spans
        return None

    def _specials(
        self, trace: Any, trace_id: bytes, spans: list[bytes], parents: list[bytes], nbytes: int
    ) -> int:
        """The special spans of one trace's spans of a request (roots, tool calls, spans naming
        the agent), read with the rules in Python: what C leaves undecided. Returns ``nbytes``
        updated for the failed tool calls given an ``error.type``."""
        names = self.config.names
        tool_a, tool_b = self.native.tool_markers
        agent_marker = self.native.agent_marker
        agent_id_marker = self.native.agent_id_marker
        is_execution = self.may_be_execution
        base = len(trace)
        found: list[int] = []
        for i, (span_raw, parent) in enumerate(zip(spans, parents, strict=True)):
            if is_execution(span_raw):
                found.append(base + i)
            flags = 0 if parent else _ROOT
            if tool_a in span_raw or tool_b in span_raw:
                flags |= _TOOL
            elif not flags and agent_marker not in span_raw and agent_id_marker not in span_raw:
                continue
            if flags & _TOOL:
                new_raw, tool = self.tools.check(span_raw)
                if tool:
                    trace.tool_calls += 1
                if new_raw is not span_raw:
                    nbytes += len(new_raw) - len(span_raw)
                    spans[i] = span_raw = new_raw
            if flags & _ROOT:
                agent = self.read_root(trace, span_raw, trace_id, base + i)
                if agent:
                    trace.agent_id = agent
            elif not trace.agent_id and (agent_marker in span_raw or agent_id_marker in span_raw):
                agent = span_agent(span_raw, names)
                if agent:
                    trace.agent_id = agent
        self.remember_executions(trace_id, trace, found)
        return nbytes

    def _stage(
        self, staged: dict[bytes, Any], trace_id: bytes, trace: Any
    ) -> tuple[list[bytes], list[GroupKey], list[bytes], list[bytes], int]:
        lists = staged.get(trace_id)
        if lists is None:
            lists = staged[trace_id] = (trace, [], [], [], [])
        _, spans, groups, ids, parents = lists
        return spans, groups, ids, parents, len(trace)

    def _commit_staged(self, staged: dict[bytes, Any]) -> int:
        for trace, spans, groups, ids, parents in staged.values():
            trace.add(spans, groups, ids, parents)
            trace.nbytes += self.chunk_overhead
        return self.chunk_overhead * len(staged)

    # -- release ----------------------------------------------------------------------------------
    def enforce_limits(self) -> list[Release]:
        cfg = self.config
        held = self.held
        if len(held) <= cfg.max_traces and self.held_bytes <= cfg.max_bytes:
            return []
        batch: list[tuple[bytes, Any, str]] = []
        while len(held) > cfg.max_traces:
            trace_id, trace = held.popitem(last=False)
            self.held_bytes -= trace.nbytes  # the loop below depends on it
            self.held_spans -= len(trace)
            batch.append((trace_id, trace, "max_traces"))
        while self.held_bytes > cfg.max_bytes and held:
            trace_id, trace = held.popitem(last=False)
            self.held_bytes -= trace.nbytes
            self.held_spans -= len(trace)
            batch.append((trace_id, trace, "max_bytes"))
        return [self._release(batch, counted=True)] if batch else []

    def expire(self, now: float) -> list[Release]:
        cfg = self.config
        # the due traces in parts of about RELEASE_MAX_SPANS spans (as rules.parts cuts them)
        batches = self.tw.expire(
            self.held, now, cfg.wait_duration, cfg.max_wait_duration, RELEASE_MAX_SPANS
        )
        return [self._release(part, counted=False) for part in batches]

    def release_all(self, reason: str) -> list[Release]:
        held = self.held
        batch = [(trace_id, trace, reason) for trace_id, trace in held.items()]
        held.clear()
        return [self._release(batch, counted=False)] if batch else []

    def _release(self, batch: list[tuple[bytes, Any, str]], counted: bool) -> Release:
        """Releases traces taken out of ``held`` (with ``counted``, already subtracted from
        the held bytes and spans) in one C call: release counts, stamps (with their
        complexity tiers), the late-span memory and the assembled request."""
        nc = self.native
        cands = self.cands
        for trace_id, trace, _ in batch:
            if cands:
                self.decide(trace_id, trace)
            if trace.roots > 1:
                self.mark_others(trace)
        encoded, count, nbytes = self.tw.release(
            batch,
            nc.stamp,
            self.stamp_tails,
            self.pending_released,
            self.pending_outcomes,
            self.released,
            self.config.late_span_cache_size,
            nc.markers,
            self.suffix_for,
        )
        if not counted:
            self.held_bytes -= nbytes
            self.held_spans -= count
        recent = self.recent
        if recent is not None and recent.recording:
            recent.released_batch(batch)
        return Release(encoded, count, [t.queued_first for _, t, _ in batch])
