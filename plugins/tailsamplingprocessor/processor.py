"""The ``tail_sampling`` processor instance.

Spans are grouped by trace id and held (encoded, as their bytes) until ``decision_wait`` has
passed since the trace's first span; then the policies decide and the trace is passed on or
dropped. A payload whose traces are whole (:attr:`pipeline.Payload.whole_traces`, set by the
``workflow`` processor when it releases workflows) is decided at once: nothing is held a second
time. Decisions are remembered (the last ``num_traces`` decided traces, plus the Collector's
``decision_cache``), so late spans follow their trace's decision. ``num_traces`` bounds the held
traces: past it the oldest is decided early with what it has.
"""

from __future__ import annotations

import asyncio
import collections
import logging
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
from pipeline._wire import ShallowTraces, SkeletonTraces
from pipeline.consumer import deliver_holding
from pipeline.durability import HeldAcks
from pipeline.errors import MalformedDataError
from pipeline.tasks import supervise
from plugins._native import load
from plugins.tailsamplingprocessor import scan
from plugins.tailsamplingprocessor.config import PolicyCfg, TailSamplingConfig
from plugins.tailsamplingprocessor.policies import (
    CODES,
    ERROR_TYPE,
    SAMPLED_LIKE,
    TOOL_MARKERS,
    USAGE_MARKER,
    BudgetLog,
    Decision,
    Policy,
    RequestBytes,
    TraceData,
    build,
    compile_program,
    fact_keys,
    tool_check,
)
from plugins.tailsamplingprocessor.scan import MAX_KEYS, Facts, decide_request, trace_facts

# The request walk of the workflow processor's C accelerator (plugins/_native/_tracewire.c),
# or None: ``ingest`` groups a request's spans by trace in one pass and notes the roots and
# the spans holding a tool marker. Its Python twin here is ``_parse`` and the per-trace
# grouping of ``_consume_whole`` (the roots then read from the span skeletons).
_tracewire: Any = load("_tracewire")

# (resource bytes, resource schema url, scope bytes, scope schema url)
GroupKey = tuple[bytes, bytes, bytes, bytes]
# one trace to decide: (trace id, spans, groups, what the request's C walk noted of its spans:
# (index, flags) of the special ones, None when none is, or UNWALKED when it was not walked)
Walked = tuple[bytes, list[bytes], list[GroupKey], Any]
UNWALKED = object()


def _policy_types(policies: list[PolicyCfg]) -> set[str]:
    """The types of ``policies`` and of their sub-policies."""
    out: set[str] = set()
    for p in policies:
        out.add(p.type)
        for sub in (p.and_, p.drop, p.composite):
            if sub is not None:
                for name in ("and_sub_policy", "drop_sub_policy", "composite_sub_policy"):
                    out |= _policy_types(getattr(sub, name, None) or [])
    return out


SPAN_OVERHEAD = 120  # bytes held per span beyond its encoding (list slots, the group reference)


class _Held:
    __slots__ = ("first", "groups", "nbytes", "spans")

    def __init__(self, first: float) -> None:
        self.first = first
        self.spans: list[bytes] = []
        self.groups: list[GroupKey] = []
        self.nbytes = 0


class _LRU:
    """Trace ids with their decision, the oldest forgotten past ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: collections.OrderedDict[bytes, bool] = collections.OrderedDict()

    def put(self, key: bytes, value: bool) -> None:
        if self.size <= 0:
            return
        items = self.items
        items[key] = value
        items.move_to_end(key)
        while len(items) > self.size:
            items.popitem(last=False)

    def put_many(self, pairs: list[tuple[bytes, bool]]) -> None:
        """``put`` of each pair, in order."""
        if self.size <= 0 or not pairs:
            return
        items = self.items
        before = len(items)
        items.update(pairs)
        if len(items) != before + len(pairs):  # some were there: they become the newest
            for key, _ in pairs:
                items.move_to_end(key)
        while len(items) > self.size:
            items.popitem(last=False)

    def get(self, key: bytes) -> bool | None:
        return self.items.get(key)


def _parse(data: Payload) -> list[tuple[bytes, GroupKey, bytes]]:
    """``(trace id, group, span bytes)`` of every span, in order; raises on a corrupt payload
    before anything is changed. The trace id is read from the span's first field (encoders
    write fields in order: ``0x0a 0x10`` and 16 bytes); a span that does not start so has its
    ids parsed."""
    raw = data.to_bytes()
    try:
        shallow = ShallowTraces.FromString(raw)
    except Exception as exc:
        raise MalformedDataError(f"cannot decode traces request: {exc}") from exc
    out = []
    skeleton = None
    for i, rs in enumerate(shallow.resource_spans):
        for j, ss in enumerate(rs.scope_spans):
            group = (rs.resource, rs.schema_url, ss.scope, ss.schema_url)
            for k, span_raw in enumerate(ss.spans):
                if span_raw[:2] == b"\x0a\x10":
                    trace_id = span_raw[2:18]
                else:
                    if skeleton is None:
                        try:
                            skeleton = SkeletonTraces.FromString(raw)
                        except Exception as exc:
                            raise MalformedDataError(
                                f"cannot decode traces request: {exc}"
                            ) from exc
                    trace_id = bytes(skeleton.resource_spans[i].scope_spans[j].spans[k].trace_id)
                out.append((trace_id, group, span_raw))
    return out


def _assemble(spans: list[tuple[GroupKey, bytes]]) -> tuple[bytes, int]:
    """An encoded request of ``(group, span bytes)``, one resource/scope entry per group."""
    by_group: dict[GroupKey, list[bytes]] = {}
    for group, span_raw in spans:
        by_group.setdefault(group, []).append(span_raw)
    out = ShallowTraces()
    for (resource, resource_url, scope, scope_url), raws in by_group.items():
        rs = out.resource_spans.add(resource=resource, schema_url=resource_url)
        rs.scope_spans.add(scope=scope, schema_url=scope_url).spans.extend(raws)
    return out.SerializeToString(), len(spans)


class TailSamplingProcessor(Component):
    """See the module docstring. Never changes the payload it is given."""

    mutates_data = False

    def __init__(
        self, settings: CreateSettings, config: TailSamplingConfig, next_consumer: Consumer
    ) -> None:
        self.settings = settings
        self.config = config
        self.next = next_consumer
        self._held: collections.OrderedDict[bytes, _Held] = collections.OrderedDict()
        self._held_spans = 0
        self._held_bytes = 0
        # decided traces (no spans): the last num_traces, then the Collector's decision caches
        self._decided = _LRU(config.num_traces)
        self._sampled_cache = _LRU(config.decision_cache.sampled_cache_size)
        self._not_sampled_cache = _LRU(config.decision_cache.non_sampled_cache_size)
        self._acks: HeldAcks | None = None
        self._interned: dict[GroupKey, GroupKey] = {}  # the C walk's groups, shared
        # the third needle the C walk looks for (its "agent marker", in spans other than the
        # roots): the usage policy's, when there is one
        self._usage = "workflow_usage" in _policy_types(config.policies)
        self._marker = USAGE_MARKER if self._usage else TOOL_MARKERS[0]
        # what the one scan of a trace's spans gives the policies (compiled once): the first
        # value of these keys, status codes, times, roots, failed spans
        keys = fact_keys(config.policies)[:MAX_KEYS]  # past it: read from the spans
        self._fact_keys = {k: i for i, k in enumerate(keys)}
        self._fact_needles = tuple(k.encode() for k in keys)
        # each policy with its answer from those facts when it has one (Policy.fast)
        self.policies: list[Policy] = [build(p, keys=self._fact_keys) for p in config.policies]
        self._names = tuple(p.name for p in self.policies)
        self._fasts = tuple((p.fast, p) for p in self.policies)
        # every policy answered from the facts in one C call per release (scan.decide_request),
        # when each has an op; the traces an op cannot settle are evaluated here (without the
        # C module, the twin would walk each request in Python: the per-trace path is kept)
        self._program = (
            compile_program(config.policies, self._fact_keys)
            if scan._tailscan is not None
            else None
        )
        self._tool = tool_check(config.policies)
        self._outcomes: dict[bytes, tuple[bool, tuple[Decision, ...]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._tick = min(config.decision_wait / 10, 1.0)
        self._init_telemetry()

    # -- telemetry -------------------------------------------------------------------------------
    def _init_telemetry(self) -> None:
        service = self.settings.telemetry.service
        name = self.settings.name
        self._c_policy = service.counter(
            "otelcol_processor_tail_sampling_count_traces_sampled",
            "Traces each policy sampled or not (sampled: whether that policy sampled it).",
            ("processor", "policy", "sampled"),
        )
        self._c_policy_spans = service.counter(
            "otelcol_processor_tail_sampling_count_spans_sampled",
            "Spans of the traces each policy sampled or not.",
            ("processor", "policy", "sampled"),
        )
        self._c_global = service.counter(
            "otelcol_processor_tail_sampling_global_count_traces_sampled",
            "Traces sampled or not by the final decision.",
            ("processor", "sampled"),
        )
        self._c_when = service.counter(
            "otelcol_processor_tail_sampling_decisions",
            "Decisions by when they were taken: at once on whole traces (released), after "
            "decision_wait, early to stay within num_traces, or at shutdown.",
            ("processor", "when"),
        )
        self._c_late = service.counter(
            "otelcol_processor_tail_sampling_late_spans",
            "Spans of already decided traces, passed on or dropped by that decision.",
            ("processor", "sampled"),
        )
        self._c_new = service.counter(
            "otelcol_processor_tail_sampling_new_trace_id_received",
            "Traces seen for the first time.",
            ("processor",),
        ).labels(name)
        self._g_traces = service.gauge(
            "otelcol_processor_tail_sampling_sampling_traces_on_memory",
            "Traces held waiting for their decision.",
            ("processor",),
        ).labels(name)
        self._g_spans = service.gauge(
            "otelcol_processor_tail_sampling_sampling_spans_on_memory",
            "Spans held waiting for their trace's decision.",
            ("processor",),
        ).labels(name)
        self._g_bytes = service.gauge(
            "otelcol_processor_tail_sampling_sampling_bytes_on_memory",
            "Approximate bytes held for traces waiting for their decision.",
            ("processor",),
        ).labels(name)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._pending: dict[tuple[Decision, ...], list[int]] = {}  # by policy results
        self._pending_final: dict[tuple[bool, str], int] = {}
        self._result_keys: dict[tuple[Decision, ...], tuple[tuple[str, bool], ...]] = {}

    def _child(self, counter: Any, *labels: str) -> Any:
        key = (id(counter), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(self.settings.name, *labels)
        return child

    def _gauges(self) -> None:
        self._g_traces.set(len(self._held))
        self._g_spans.set(self._held_spans)
        self._g_bytes.set(self._held_bytes)

    # -- decisions -------------------------------------------------------------------------------
    def _known(self, trace_id: bytes) -> bool | None:
        d = self._decided.get(trace_id)
        if d is None:
            d = self._sampled_cache.get(trace_id)
            if d is None and self._not_sampled_cache.get(trace_id) is not None:
                return False
        return d

    def _evaluate(self, facts: Facts | None, entry: Walked, n: int,
                  request: RequestBytes | None) -> tuple[bool, tuple[Decision, ...]]:  # fmt: skip
        """The final decision and each policy's (in order; fewer with sample_on_first_match).
        A policy answers from the scan's ``facts`` when it can (``Policy.fast``); the trace
        (:meth:`_trace_data` of ``entry``) is made only for a policy that reads it."""
        results: list[Decision] = []
        first_match = self.config.sample_on_first_match
        sampled = False
        dropped = False
        trace: TraceData | None = None
        trace_id = entry[0]
        for fast, policy in self._fasts:
            d = None
            if fast is not None and facts is not None:
                try:
                    d = fast(facts, trace_id, n)
                except Exception:
                    d = None  # the policy says what is wrong (Decision.ERROR)
            if d is None:
                if trace is None:
                    trace = self._trace_data(entry, request, facts)
                d = policy.evaluate(trace)
            results.append(d)
            if d is Decision.SAMPLED or d is Decision.INVERT_SAMPLED:
                sampled = True
                if first_match:
                    break
            elif d is Decision.DROPPED or d is Decision.INVERT_NOT_SAMPLED:
                dropped = True
        # final_decision's rule, folded into the loop
        return sampled and not dropped, tuple(results)

    def _trace_data(self, entry: Walked, request: RequestBytes | None,
                    facts: Facts | None) -> TraceData:  # fmt: skip
        """The :class:`TraceData` of one trace to decide, with what the request's walk noted:
        the roots, the tool spans and the spans holding the usage marker (a flag 4: a span
        other than a root holding it; roots are searched here)."""
        trace_id, spans, groups, specials = entry
        roots: list[int] | None = None
        tools: list[int] | None = None
        marked: tuple[bytes, list[int]] | None = None
        if specials is not UNWALKED:
            roots, tools, found = [], [], []
            marker = self._marker
            for i, f in specials or ():
                if f & 1:
                    roots.append(i)
                if f & 2:
                    tools.append(i)
                if f & 4 or (f & 1 and marker in spans[i]):
                    found.append(i)
            marked = (marker, found) if self._usage else None
        return TraceData(
            trace_id, spans, [g[0] for g in groups], groups, request, roots, tools, marked, facts,
            self._fact_keys,
        )  # fmt: skip

    def _commit(self, decisions: list[tuple[bytes, bool, tuple[Decision, ...], int]],
                when: str) -> None:  # fmt: skip
        """Remember and count the decisions of a batch of traces."""
        self._decided.put_many([(d[0], d[1]) for d in decisions])
        self._sampled_cache.put_many([(d[0], True) for d in decisions if d[1]])
        self._not_sampled_cache.put_many([(d[0], False) for d in decisions if not d[1]])
        # counted per distinct set of results (traces of a load mostly share one): one
        # dictionary update per trace, spread over the policies when flushed
        pending = self._pending
        final = self._pending_final
        for _, sampled, results, spans in decisions:
            counts = pending.get(results)
            if counts is None:
                counts = pending[results] = [0, 0]
            counts[0] += 1
            counts[1] += spans
            final[(sampled, when)] = final.get((sampled, when), 0) + 1

    def _flush_counts(self) -> None:
        """The decisions counted since the last call, added to the counters (once per call)."""
        by_policy: dict[tuple[str, bool], list[int]] = {}
        for results, (traces, spans) in self._pending.items():
            for key in self._policy_keys(results):
                counts = by_policy.get(key)
                if counts is None:
                    counts = by_policy[key] = [0, 0]
                counts[0] += traces
                counts[1] += spans
        self._pending.clear()
        for (name, sampled), (traces, spans) in by_policy.items():
            flag = "true" if sampled else "false"
            self._child(self._c_policy, name, flag).inc(traces)
            self._child(self._c_policy_spans, name, flag).inc(spans)
        for (sampled, when), n in self._pending_final.items():
            self._child(self._c_global, "true" if sampled else "false").inc(n)
            self._child(self._c_when, when).inc(n)
        self._pending_final.clear()

    def _policy_keys(self, results: tuple[Decision, ...]) -> tuple[tuple[str, bool], ...]:
        """``(policy name, sampled)`` of each result (remembered: a load has few distinct
        sets of results)."""
        keys = self._result_keys.get(results)
        if keys is None:
            if len(self._result_keys) >= 1024:
                self._result_keys.clear()
            keys = self._result_keys[results] = tuple(
                (name, d in SAMPLED_LIKE) for name, d in zip(self._names, results, strict=False)
            )
        return keys

    def _decide(self, trace_id: bytes, spans: list[bytes], groups: list[GroupKey],
                when: str) -> tuple[bytes, bool, tuple[Decision, ...], int]:  # fmt: skip
        facts = trace_facts(spans, self._fact_needles, ERROR_TYPE)
        sampled, results = self._evaluate(facts, (trace_id, spans, groups, UNWALKED), len(spans),
                                          None)  # fmt: skip
        return trace_id, sampled, results, len(spans)

    # -- consume ---------------------------------------------------------------------------------
    def _walk_whole(self, data: Payload) -> list[Walked] | None:
        """A whole-traces request none of whose traces is held or decided, walked in C (one
        pass: its spans grouped by trace, the roots and tool spans noted); ``None`` when the
        accelerator is missing, refuses the request (the Python path then says why) or a trace
        is already known (late spans: the general path)."""
        tw = _tracewire
        if tw is None or not data.whole_traces:
            return None
        try:
            entries = tw.ingest(data.to_bytes(), self._interned, *TOOL_MARKERS, self._marker)
        except ValueError:
            return None
        held = self._held
        # a trace decided before (late spans): _known's caches, read directly
        decided = self._decided.items
        sampled = self._sampled_cache.items
        not_sampled = self._not_sampled_cache.items
        out: list[Walked] = []
        for trace_id, spans, groups, _ids, _parents, _nbytes, specials in entries:
            if (
                trace_id in held or trace_id in decided or trace_id in sampled
                or trace_id in not_sampled
            ):  # fmt: skip
                return None
            out.append((trace_id, spans, groups, specials))
        if len(self._interned) > 4096:  # bounded: groups are interned per request run
            self._interned.clear()
        return out

    def _outcome(self, codes: bytes) -> tuple[bool, tuple[Decision, ...]]:
        """The final decision and the results of a program's ``codes`` (remembered)."""
        got = self._outcomes.get(codes)
        if got is None:
            results = tuple(CODES[c] for c in codes)
            sampled = any(d in SAMPLED_LIKE for d in results) and not any(
                d is Decision.DROPPED or d is Decision.INVERT_NOT_SAMPLED for d in results
            )
            if len(self._outcomes) >= 1024:
                self._outcomes.clear()
            got = self._outcomes[codes] = (sampled, results)
        return got

    async def _consume_decided(self, data: Payload) -> bool:
        """A whole-traces request none of whose traces is held or decided, decided in one
        call (``scan.decide_request``; the traces it cannot settle evaluated as in
        :meth:`_evaluate`); False when the call does not take it or a trace is known (the
        caller then reads it as before)."""
        raw = data.to_bytes()
        assert self._program is not None
        got = decide_request(raw, self._fact_needles, ERROR_TYPE, TOOL_MARKERS,
                             self._program, self.config.sample_on_first_match,
                             self._tool)  # fmt: skip
        if got is None:
            return False
        entries, deferred = got
        held = self._held
        decided = self._decided.items
        sampled_c = self._sampled_cache.items
        not_sampled = self._not_sampled_cache.items
        for trace_id, _, _ in entries:
            if (
                trace_id in held or trace_id in decided or trace_id in sampled_c
                or trace_id in not_sampled
            ):  # fmt: skip
                return False
        if not entries:
            return True
        decisions: list[tuple[bytes, bool, tuple[Decision, ...], int]] = []
        kept_spans = total = 0
        outcome = self._outcome
        for trace_id, n, codes in entries:
            total += n
            if codes is None:
                decisions.append((trace_id, False, (), n))  # evaluated below
                continue
            sampled, results = outcome(codes)
            decisions.append((trace_id, sampled, results, n))
            if sampled:
                kept_spans += n
        request = RequestBytes(raw) if deferred else None
        with BudgetLog() as budget:
            for i, spans, groups in deferred:
                trace_id = entries[i][0]
                entry: Walked = (trace_id, spans, groups, UNWALKED)
                facts = trace_facts(spans, self._fact_needles, ERROR_TYPE)
                sampled, results = self._evaluate(facts, entry, len(spans), request)
                decisions[i] = (trace_id, sampled, results, len(spans))
                if sampled:
                    kept_spans += len(spans)
        try:
            if kept_spans == total:
                await self.next.consume(data)  # every span kept: the request goes on as it came
            elif kept_spans:
                # the kept traces' spans, trace after trace (as _consume_whole passes them on)
                by_trace: dict[bytes, list[tuple[GroupKey, bytes]]] = {
                    d[0]: [] for d in decisions if d[1]
                }
                for tid, group, span in _parse(data):
                    spans_of = by_trace.get(tid)
                    if spans_of is not None:
                        spans_of.append((group, span))
                encoded, n = _assemble(
                    [item for spans_of in by_trace.values() for item in spans_of]
                )
                payload = Traces(encoded, item_count=n)
                payload.whole_traces = True
                await self.next.consume(payload.carry_acks(data.ack_tokens))
        except BaseException:
            budget.refund()
            raise
        self._commit(decisions, "released")
        self._c_new.inc(len(decisions))
        self._flush_counts()
        return True

    async def consume(self, data: Payload) -> None:
        if self._program is not None and data.whole_traces and await self._consume_decided(data):
            return
        walked = self._walk_whole(data)
        if walked is not None:
            if walked:
                request = RequestBytes(data.to_bytes())
                await self._consume_whole([], [], 0, request, data, walked=walked)
            return
        items = _parse(data)
        if not items:
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        # 1. spans of decided traces follow the decision (late spans)
        late_out: list[tuple[GroupKey, bytes]] = []
        late_dropped = 0
        fresh: list[tuple[bytes, GroupKey, bytes]] = []
        held = self._held
        seen: dict[bytes, bool | None] = {}
        for trace_id, group, span_raw in items:
            if trace_id in seen:
                known = seen[trace_id]
            else:
                known = seen[trace_id] = None if trace_id in held else self._known(trace_id)
            if known is None:
                fresh.append((trace_id, group, span_raw))
            elif known:
                late_out.append((group, span_raw))
            else:
                late_dropped += 1
        after_out: list[tuple[GroupKey, bytes]] = []
        after_dropped = 0
        taken = False  # part of the request was passed on: it can no longer be refused
        if data.whole_traces:
            request = RequestBytes(data.to_bytes())
            # whole traces are decided at once; spans of a trace already held (rare: it also
            # came through another path) join it and wait for its decision
            whole = [item for item in fresh if item[0] not in held]
            if len(whole) == len(fresh):
                await self._consume_whole(whole, late_out, late_dropped, request, data)
                return
            rest = [item for item in fresh if item[0] in held]
            # the whole traces go on carrying the request's tokens (the rest holds them too)
            await self._consume_whole(whole, late_out, late_dropped, request, acks=data.ack_tokens)
            late_out, late_dropped = [], 0
            # while the next component took them, the held traces may have been decided
            fresh, after_out, after_dropped = self._reclassify(rest)
            taken = True
        if self.config.block_on_overflow and fresh and not taken:  # refused before anything changed
            new = len({item[0] for item in fresh if item[0] not in held})
            if len(self._held) + new > self.config.num_traces:
                raise RetryableError(
                    f"processor {self.settings.name} holds {len(self._held)} traces "
                    f"(num_traces {self.config.num_traces}); try again later",
                    retry_after=min(1.0, self.config.decision_wait),
                    resource_exhausted=True,
                )
        if late_out:
            encoded, n = _assemble(late_out)
            await self.next.consume(Traces(encoded, item_count=n).carry_acks(data.ack_tokens))
            # while the next component took them, held traces may have been decided
            fresh, after_out, after_dropped = self._reclassify(fresh)
        # 2. nothing can fail from here on: hold the rest (no await before it is held), then
        # pass on the spans of traces decided while the next component took the first part
        self._count_late(len(late_out), late_dropped)
        if not fresh:
            await self._deliver_late(after_out, after_dropped, data.ack_tokens)
            return
        held = self._held
        traces_before, spans_before = len(held), self._held_spans
        for trace_id, group, span_raw in fresh:
            trace = held.get(trace_id)
            if trace is None:
                trace = held[trace_id] = _Held(now)
                self._c_new.inc()
            trace.spans.append(span_raw)
            trace.groups.append(group)
            size = len(span_raw) + SPAN_OVERHEAD
            trace.nbytes += size
            self._held_bytes += size
            self._held_spans += 1
        acks = self._acks
        if acks is None and data.ack_tokens:
            acks = self._acks = HeldAcks([t.first for t in held.values() if t.first != now])
        if acks is not None:
            acks.arrived(
                now, data.ack_tokens, len(held) - traces_before, self._held_spans != spans_before
            )
        early = self._enforce_limit()
        self._gauges()
        if traces_before == 0:
            self._wake.set()
        await self._deliver_late(after_out, after_dropped, data.ack_tokens)
        if early:
            await deliver_holding(self.next, early, self.settings, "early decided traces")

    def _reclassify(self, fresh: list[tuple[bytes, GroupKey, bytes]]) -> tuple[
        list[tuple[bytes, GroupKey, bytes]], list[tuple[GroupKey, bytes]], int
    ]:  # fmt: skip
        """``fresh`` after an ``await``: spans of traces decided meanwhile follow the decision
        (passed on or dropped); the others are still to be held."""
        held = self._held
        if all(item[0] in held for item in fresh):
            return fresh, [], 0
        keep: list[tuple[bytes, GroupKey, bytes]] = []
        out: list[tuple[GroupKey, bytes]] = []
        dropped = 0
        for item in fresh:
            known = None if item[0] in held else self._known(item[0])
            if known is None:
                keep.append(item)
            elif known:
                out.append((item[1], item[2]))
            else:
                dropped += 1
        return keep, out, dropped

    async def _deliver_late(self, out: list[tuple[GroupKey, bytes]], dropped: int,
                            acks: tuple[object, ...]) -> None:  # fmt: skip
        """Late spans found after the request's data was taken: passed on holding them (the
        request cannot be refused any more), counted."""
        self._count_late(len(out), dropped)
        if out:
            encoded, n = _assemble(out)
            payload = Traces(encoded, item_count=n).carry_acks(acks)
            await deliver_holding(self.next, payload, self.settings, "late spans")

    def _count_late(self, passed: int, dropped: int) -> None:
        if passed:
            self._child(self._c_late, "true").inc(passed)
        if dropped:
            self._child(self._c_late, "false").inc(dropped)

    async def _consume_whole(self, fresh: list[tuple[bytes, GroupKey, bytes]],
                             late_out: list[tuple[GroupKey, bytes]], late_dropped: int,
                             request: RequestBytes | None = None,
                             data: Payload | None = None,
                             acks: tuple[object, ...] = (),
                             walked: list[Walked] | None = None) -> None:  # fmt: skip
        """Whole traces: decided at once, nothing held; the sampled ones and the late spans of
        sampled traces are passed on in one payload (it carries the input's durability tokens:
        what is dropped releases them). Decisions are remembered and counted once the next
        component took the payload (atomic: a retry decides again, the same way)."""
        if walked is None:
            by_trace: dict[bytes, tuple[list[bytes], list[GroupKey]]] = {}
            for trace_id, group, span_raw in fresh:
                entry = by_trace.get(trace_id)
                if entry is None:
                    entry = by_trace[trace_id] = ([], [])
                entry[0].append(span_raw)
                entry[1].append(group)
            walked = [(t, spans, groups, UNWALKED) for t, (spans, groups) in by_trace.items()]
            total = len(fresh)
        else:
            total = sum(len(w[1]) for w in walked)
        decisions: list[tuple[bytes, bool, tuple[Decision, ...], int]] = []
        needles = self._fact_needles
        evaluate = self._evaluate
        kept_spans = 0
        with BudgetLog() as budget:  # rate budgets given back if the payload is not taken
            for one in walked:
                spans = one[1]
                facts = trace_facts(spans, needles, ERROR_TYPE)
                n = len(spans)
                sampled, results = evaluate(facts, one, n, request)
                decisions.append((one[0], sampled, results, n))
                if sampled:
                    kept_spans += n
        try:
            if (
                (kept_spans or late_out) and data is not None and not late_dropped
                and kept_spans == total
            ):  # fmt: skip
                await self.next.consume(data)  # every span kept: the request goes on as it came
            elif kept_spans or late_out:
                out = list(late_out)
                for (_, spans, groups, *_), (_, sampled, _, _) in zip(
                    walked, decisions, strict=True
                ):
                    if sampled:
                        out.extend(zip(groups, spans, strict=True))
                encoded, n = _assemble(out)
                payload = Traces(encoded, item_count=n)
                payload.whole_traces = True
                await self.next.consume(
                    payload.carry_acks(data.ack_tokens if data is not None else acks)
                )
        except BaseException:
            budget.refund()
            raise
        self._commit(decisions, "released")
        self._c_new.inc(len(decisions))
        self._flush_counts()
        self._count_late(len(late_out), late_dropped)

    def _release_acks(self, traces: list[_Held]) -> tuple[object, ...]:
        acks = self._acks
        return acks.released([t.first for t in traces]) if acks is not None else ()

    def _enforce_limit(self) -> Traces | None:
        """Past ``num_traces``: the oldest traces are decided early, with what they have."""
        held = self._held
        if len(held) <= self.config.num_traces:
            return None
        out: list[tuple[bytes, _Held]] = []
        while len(held) > self.config.num_traces:
            out.append(held.popitem(last=False))
        return self._decide_batch(out, "num_traces")

    def _decide_batch(self, traces: list[tuple[bytes, _Held]], when: str) -> Traces | None:
        """Decides traces taken out of ``_held``; returns the payload of the sampled ones."""
        kept: list[tuple[GroupKey, bytes]] = []
        decisions = []
        for trace_id, trace in traces:
            self._held_spans -= len(trace.spans)
            self._held_bytes -= trace.nbytes
            decision = self._decide(trace_id, trace.spans, trace.groups, when)
            decisions.append(decision)
            if decision[1]:
                kept.extend(zip(trace.groups, trace.spans, strict=True))
        self._commit(decisions, when)
        self._flush_counts()
        acks = self._release_acks([t for _, t in traces])
        if not kept:
            return None
        encoded, n = _assemble(kept)
        payload = Traces(encoded, item_count=n)
        payload.whole_traces = True  # each trace decided with all it had
        return payload.carry_acks(acks)  # type: ignore[return-value]

    # -- the decision timer ----------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.config.decision_wait
        while True:
            if not self._held:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            first = next(iter(self._held.values())).first
            delay = first + wait - loop.time()
            if delay > 0:
                await asyncio.sleep(max(delay, self._tick))
                continue
            now = loop.time()
            due: list[tuple[bytes, _Held]] = []
            while self._held:
                trace_id, trace = next(iter(self._held.items()))
                if trace.first + wait > now:
                    break
                del self._held[trace_id]
                due.append((trace_id, trace))
            payload = self._decide_batch(due, "decision_wait")
            del due
            self._gauges()
            if payload is not None:
                await deliver_holding(self.next, payload, self.settings, "sampled traces")
            # no reference kept while waiting: the durability tokens go with the data
            payload = None

    async def start(self, host: Host) -> None:
        self._loop = asyncio.get_running_loop()
        if self._timer is None:
            self._timer = supervise(self.settings, host, "decide", self._timer_loop)

    async def shutdown(self) -> None:
        """Decides every held trace with what it has and passes the sampled ones on."""
        self._closing = True
        self._wake.set()
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None
        if self._held and self.config.drop_pending_traces_on_shutdown:
            due = list(self._held.items())
            self._held.clear()
            spans = sum(len(trace.spans) for _, trace in due)
            self._held_spans = self._held_bytes = 0
            self._release_acks([trace for _, trace in due])  # dropped on purpose: done
            self.settings.telemetry.dropped(Signal.TRACES, spans, "shutdown")
            self.settings.logger.warning(
                "drop_pending_traces_on_shutdown: %d undecided trace(s), %d span(s) dropped",
                len(due),
                spans,
            )
            self._gauges()
        if self._held:
            due = list(self._held.items())
            self._held.clear()
            payload = self._decide_batch(due, "shutdown")
            self._gauges()
            if payload is not None:
                try:
                    await deliver_holding(self.next, payload, self.settings, "sampled traces")
                except asyncio.CancelledError:
                    n = payload.item_count()
                    self.settings.telemetry.dropped(Signal.TRACES, n, "shutdown_deadline")
                    self.settings.log_limited(
                        logging.ERROR, "shutdown deadline: %d sampled span(s) dropped", n,
                        key="shutdown_deadline",
                    )  # fmt: skip
                    raise
