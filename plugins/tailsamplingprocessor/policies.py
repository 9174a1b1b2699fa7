"""Policy evaluators of the ``tail_sampling`` processor: the Collector's, with its decision
semantics, and the workflow-aware ones.

A policy looks at a whole trace (:class:`TraceData`) and answers a :class:`Decision`. The final
decision of the processor is the Collector's: a ``drop`` policy that matched, or an inverted
match, drops the trace; otherwise any policy that sampled keeps it.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline._wire import _CLASSES
from plugins._agentconv import (
    STATUS_ERROR,
    AttributeNames,
    attr_str,
    duration_of,
    is_tool_call,
    is_workflow_root,
    workflow_duration,
    workflow_outcome,
    workflow_type,
)
from plugins.tailsamplingprocessor import scan
from plugins.tailsamplingprocessor.config import PolicyCfg
from plugins.tailsamplingprocessor.scan import Facts

SpanSkeleton: Any = _CLASSES["SpanSkeleton"]  # a span with its attributes left encoded
NAMES = AttributeNames()
_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
_MODEL_OPERATIONS = {"chat", "text_completion", "generate_content", "embeddings"}


class Decision(enum.Enum):
    SAMPLED = "sampled"
    NOT_SAMPLED = "not_sampled"
    INVERT_SAMPLED = "invert_sampled"
    INVERT_NOT_SAMPLED = "invert_not_sampled"
    DROPPED = "dropped"
    ERROR = "error"

    # members are singletons compared by identity: hashed by identity too, in C (Enum's own
    # __hash__ is Python code; a trace's tuple of decisions is a dictionary key per trace)
    __hash__ = object.__hash__


SAMPLED_LIKE = (Decision.SAMPLED, Decision.INVERT_SAMPLED)
DROP_LIKE = (Decision.DROPPED, Decision.INVERT_NOT_SAMPLED)  # these drop the trace


class RequestBytes:
    """The encoded request the spans of a batch of traces came from: a needle it does not
    contain is in none of their spans, so each needle is searched in it once, not once per
    trace."""

    __slots__ = ("_found", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._found: dict[bytes, bool] = {}

    def has(self, needle: bytes) -> bool:
        found = self._found.get(needle)
        if found is None:
            found = self._found[needle] = needle in self.raw
        return found


class AttrView(Mapping[str, Any]):
    """``{key: AnyValue}`` of a decoded span's attributes, answering as the dict of them
    would (a repeated key has its last value) without building it: the keys are read once,
    a value only when asked for (reading every value of a decoded span is what costs)."""

    __slots__ = ("_attrs", "_keys")

    def __init__(self, attributes: Any) -> None:
        self._attrs = attributes
        self._keys: list[str] = [kv.key for kv in attributes]

    def _index(self, key: object) -> int:
        keys = self._keys
        try:
            i = keys.index(key)  # type: ignore[arg-type]
        except ValueError:
            return -1
        if keys.count(key) > 1:  # type: ignore[arg-type]
            i = len(keys) - 1 - keys[::-1].index(key)  # type: ignore[arg-type]
        return i

    def first(self, key: str) -> Any:
        """The value of the first attribute ``key`` (None without one)."""
        try:
            return self._attrs[self._keys.index(key)].value
        except ValueError:
            return None

    def get(self, key: str, default: Any = None) -> Any:
        i = self._index(key)
        return default if i < 0 else self._attrs[i].value

    def __getitem__(self, key: str) -> Any:
        i = self._index(key)
        if i < 0:
            raise KeyError(key)
        return self._attrs[i].value

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(self._keys))

    def __len__(self) -> int:
        return len(set(self._keys))


class TraceData:
    """The spans of one trace as held (encoded), decoded as little as each policy needs: the
    span skeletons (ids, times, status; attributes left encoded) for structure, and a span in
    full only when its bytes contain what a policy looks for (an attribute key, a value)."""

    def __init__(
        self,
        trace_id: bytes,
        spans: list[bytes],
        resources: list[bytes],
        groups: list[tuple[bytes, bytes, bytes, bytes]] | None = None,
        request: RequestBytes | None = None,
        roots: list[int] | None = None,
        tools: list[int] | None = None,
        marked: tuple[bytes, list[int]] | None = None,
        facts: Facts | None = None,
        fact_keys: Mapping[str, int] | None = None,
    ) -> None:
        self.trace_id = trace_id
        # what the C scan of the trace's spans found (scan.trace_facts), with the index of each
        # attribute key it looked for in ``facts.values``; None: read from the spans when asked
        self.facts = facts
        self._fact_keys = fact_keys or {}
        # what the request's walk already found (``_tracewire.ingest``): the root spans and
        # the spans holding a tool marker, by index; None: found here when asked
        self._roots = roots
        self._tools = tools
        self._marked = marked  # (needle, the indices of the spans holding it, in order)
        self.request = request  # the request holding every span of the trace, when known
        self.groups = groups  # (resource, its schema url, scope, its schema url) per span
        self._raw = spans
        self._raw_resources = resources  # one per span (the same bytes object shared)
        self._decoded: list[Any] = [None] * len(spans)
        self._attrs: list[AttrView | None] = [None] * len(spans)
        self._skeletons: list[Any] | None = None
        self._resources: list[dict[str, Any]] | None = None
        self._root: Any = None
        self._root_attrs: Mapping[str, Any] = {}
        self._root_done = False
        self._joined: bytes | None = None
        self._contains: dict[bytes, bool] = {}

    @property
    def span_count(self) -> int:
        return len(self._raw)

    def raw(self, i: int) -> bytes:
        """The encoding of span ``i``."""
        return self._raw[i]

    def span(self, i: int) -> Any:
        s = self._decoded[i]
        if s is None:
            s = self._decoded[i] = Span.FromString(self._raw[i])
        return s

    def attrs(self, i: int) -> AttrView:
        """The attributes of span ``i`` (decoded), as :class:`AttrView`."""
        a = self._attrs[i]
        if a is None:
            a = self._attrs[i] = AttrView(self.span(i).attributes)
        return a

    @property
    def spans(self) -> list[Any]:
        return [self.span(i) for i in range(len(self._raw))]

    def spans_containing(self, *needles: bytes) -> list[Any]:
        """The decoded spans whose encoding contains any of ``needles`` (an attribute key or
        value): the others cannot match and are not decoded."""
        return [self.span(i) for i in self.indices_containing(*needles)]

    def indices_containing(self, *needles: bytes) -> list[int]:
        """The indices of the spans whose encoding contains any of ``needles``."""
        marked = self._marked
        if marked is not None and marked[0] in needles:  # found by the request's walk
            others = tuple(n for n in needles if n != marked[0])
            if not others:
                return marked[1]
            return sorted({*marked[1], *self._indices(others)})
        return self._indices(needles)

    def _indices(self, needles: tuple[bytes, ...]) -> list[int]:
        request = self.request
        if request is not None:
            needles = tuple(n for n in needles if request.has(n))
            if not needles:
                return []
        joined = self._joined
        if joined is None:
            joined = self._joined = b"".join(self._raw)
        present = [n for n in needles if n in joined]
        if not present:
            return []
        if len(present) == 1:
            needle = present[0]
            return [i for i, raw in enumerate(self._raw) if needle in raw]
        return [i for i, raw in enumerate(self._raw) if any(n in raw for n in present)]

    @property
    def skeletons(self) -> list[Any]:
        if self._skeletons is None:
            self._skeletons = [SpanSkeleton.FromString(raw) for raw in self._raw]
        return self._skeletons

    def status_codes(self) -> set[int]:
        codes = set()
        for sk in self.skeletons:
            codes.add(Status.FromString(sk.status).code if sk.status else 0)
        return codes

    def has_status(self, codes: set[int] | frozenset[int]) -> bool:
        """Whether a span's status code is in ``codes`` (from the scan's facts, else read from
        the span skeletons)."""
        facts = self.facts
        if facts is not None and codes <= _KNOWN_CODES:
            mask = facts.status_mask
            return any(mask >> c & 1 for c in codes)
        return bool(self.status_codes() & codes)

    def root_indices(self) -> list[int]:
        """The indices of the spans without a parent, in order: as the request's walk found
        them (``roots``, given by the processor), else from the span skeletons."""
        if self._roots is not None:
            return self._roots
        if self.facts is not None:
            return [r[0] for r in self.facts.roots]
        return [i for i, sk in enumerate(self.skeletons) if not sk.parent_span_id]

    def tool_indices(self) -> list[int]:
        """The indices of the spans holding a tool-call marker (``gen_ai.operation.name``
        ``execute_tool`` or the MCP ``tools/call`` method, as bytes anywhere in the span)."""
        if self._tools is not None:
            return self._tools
        return self.indices_containing(TOOL_MARKERS[0], TOOL_MARKERS[1])

    @property
    def resources(self) -> list[dict[str, Any]]:
        """Resource attributes (``{key: AnyValue}``), one per span."""
        if self._resources is None:
            decoded: dict[int, dict[str, Any]] = {}
            out = []
            for raw in self._raw_resources:
                attrs = decoded.get(id(raw))
                if attrs is None:
                    attrs = {kv.key: kv.value for kv in Resource.FromString(raw).attributes}
                    decoded[id(raw)] = attrs
                out.append(attrs)
            self._resources = out
        return self._resources

    def duration_ns(self) -> int:
        facts = self.facts
        if facts is not None:
            return max(0, facts.end_max - facts.start_min)
        sks = self.skeletons
        start = min(s.start_time_unix_nano for s in sks)
        end = max(s.end_time_unix_nano for s in sks)
        return max(0, end - start)

    def values(self, key: str) -> list[Any]:
        """Every value of attribute ``key`` on the trace's resources and spans."""
        out = []
        seen: set[int] = set()
        for attrs in self.resources:
            if id(attrs) in seen:
                continue
            seen.add(id(attrs))
            v = attrs.get(key)
            if v is not None:
                out.append(v)
        for span in self.spans_containing(key.encode()):
            for kv in span.attributes:
                if kv.key == key:
                    out.append(kv.value)
        return out

    def span_value(self, span: Any, key: str) -> Any:
        for kv in span.attributes:
            if kv.key == key:
                return kv.value
        return None

    @property
    def root(self) -> Any:
        """The workflow root span (a root that is a workflow), else the first root span."""
        if not self._root_done:
            self._root_done = True
            roots = self.root_indices()
            for i in roots:
                s, attrs = self.span(i), self.attrs(i)
                if is_workflow_root(s, attrs, NAMES):
                    self._root, self._root_attrs = s, attrs
                    break
            else:
                if roots:
                    self._root = self.span(roots[0])
                    self._root_attrs = self.attrs(roots[0])
        return self._root

    @property
    def root_attrs(self) -> Mapping[str, Any]:
        """``{key: AnyValue}`` of :attr:`root` (empty without a root)."""
        _ = self.root
        return self._root_attrs

    def workflow_attr(self, key: str) -> str:
        """A workflow attribute as the ``workflow`` processor stamps it on every span: the
        first span holding the key is decoded, no other (none when the scan's facts have it)."""
        k = self._fact_keys.get(key)
        if k is not None and self.facts is not None:
            return value_str(self.facts.values[k])
        needle = key.encode()
        for i, raw in enumerate(self._raw):
            if needle in raw:
                v = self.attrs(i).first(key)
                if v is not None:
                    return attr_str(v)
        return ""

    def fact_value(self, key: str) -> bytes | None:
        """The encoded ``AnyValue`` of ``key``'s first attribute in the trace, from the scan's
        facts (``None`` when absent or when the facts do not list the key)."""
        k = self._fact_keys.get(key)
        if k is None or self.facts is None:
            return None
        return self.facts.values[k]

    def contains(self, needle: bytes) -> bool:
        """Whether any span's encoding contains ``needle`` (remembered: several policies ask
        for the same bytes)."""
        found = self._contains.get(needle)
        if found is None:
            found = self._contains[needle] = self._search(needle)
        return found

    def _search(self, needle: bytes) -> bool:
        request = self.request
        if request is not None and not request.has(needle):
            return False
        joined = self._joined
        if joined is None:
            joined = self._joined = b"".join(self._raw)
        if needle not in joined:
            return False
        # found in the joined encodings: in one span, not across the end of one and the start
        # of the next
        return any(needle in raw for raw in self._raw)


_KNOWN_CODES = frozenset((0, 1, 2))


def value_str(encoded: bytes | None) -> str:
    """``attr_str`` of an encoded ``AnyValue`` (``""`` for None): a string read from its
    bytes when it is encoded as one string field, else the value decoded."""
    if not encoded:
        return ""
    n = len(encoded)
    if encoded[0] == 0x0A and n >= 2 and encoded[1] == n - 2 and encoded[1] < 0x80:
        try:
            return encoded[2:].decode()
        except UnicodeDecodeError:
            pass
    return attr_str(AnyValue.FromString(encoded))


# Every encoding of ``Status.code`` (field 3, a varint) equal to 1 or 2 holds one of these: its
# tag in the shortest form (0x18) then the value's first byte (the code, or the code with the
# continuation bit when the value is written longer), or the tag written longer than needed
# (0x98, then 0x80 ... 0x00): protobuf accepts all of them, so a trace holding none of these
# bytes has no span with that code. Encoders write the shortest forms (0x18 0x02 for ERROR).
STATUS_BYTES = {
    code: (bytes((0x18, code)), bytes((0x18, code | 0x80)), b"\x98\x80", b"\x98\x00")
    for code in (1, 2)
}


Evaluate = Callable[[TraceData], Decision]
# A policy's decision from the scan's facts of a trace (``scan.trace_facts``), its trace id and
# its span count alone, without a :class:`TraceData`; ``None`` when the facts do not settle it
# (the policy then reads the trace). Never stateful: it may be called and its answer dropped.
Fast = Callable[[Facts, bytes, int], "Decision | None"]


class Policy:
    """A named evaluator; ``evaluate`` never raises (an error is ``Decision.ERROR``).
    ``fast``, when given, answers as ``evaluate`` would on the trace the facts were read from,
    or ``None`` (see :data:`Fast`); it may raise (the caller then evaluates)."""

    def __init__(self, name: str, run: Evaluate, fast: Fast | None = None) -> None:
        self.name = name
        self._run = run
        self.fast = fast

    def evaluate(self, trace: TraceData) -> Decision:
        try:
            return self._run(trace)
        except Exception:
            return Decision.ERROR


def _number(v: Any) -> float | None:
    kind = v.WhichOneof("value")
    if kind == "int_value":
        return float(v.int_value)
    if kind == "double_value":
        return float(v.double_value)
    return None


def fnv1a_64(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    """FNV-1a (64 bit) of ``data``, continuing from the state ``h`` (the offset basis)."""
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def probabilistic_threshold(ratio: float) -> int:
    """The Collector's ``calculateThreshold``: ``MaxUint64 * ratio`` rounded to a 64-bit
    mantissa (``big.Float``, round half to even), then truncated to an integer."""
    if ratio <= 0:
        return 0
    exact = Fraction(2**64 - 1) * Fraction(ratio)
    if exact < 1:
        return 0
    scale = 64 - int(exact).bit_length()  # fraction bits the 64-bit mantissa keeps
    return min(round(exact * (1 << scale)) >> scale, 2**64 - 1)  # round(): half to even


class BudgetLog:
    """The spans rate budgets (``rate_limiting``, ``composite``) gave while a batch of traces
    was decided, to be given back when the decisions are not kept (the next component did not
    take the payload: a retry of the request decides again and must not count twice).
    Decisions are taken synchronously inside ``with BudgetLog() as log:``; budgets note what
    they gave in the log that is open, if any."""

    current: BudgetLog | None = None

    def __init__(self) -> None:
        self.refunds: list[Callable[[], None]] = []

    def __enter__(self) -> BudgetLog:
        BudgetLog.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        BudgetLog.current = None

    def refund(self) -> None:
        """Gives back everything noted (the newest first)."""
        while self.refunds:
            self.refunds.pop()()


class _PerSecond:
    """Spans counted in the current wall-clock second."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.second = -1
        self.spans = 0

    def room(self, n: int, limit: int) -> bool:
        now = int(self.clock())
        if now != self.second:
            self.second, self.spans = now, 0
        if self.spans + n > limit:
            return False
        self.spans += n
        log = BudgetLog.current
        if log is not None:
            log.refunds.append(lambda: self._refund(now, n))
        return True

    def _refund(self, second: int, n: int) -> None:
        if self.second == second:
            self.spans = max(0, self.spans - n)


class _TokenBucket:
    """The Collector's rate limiter (``golang.org/x/time/rate``): tokens (spans) refill at
    ``rate`` a second up to ``burst``, the bucket starts full; a trace passes when its spans
    fit in the tokens left."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock()

    def allow(self, n: int) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if n > self.tokens:
            return False
        self.tokens -= n
        log = BudgetLog.current
        if log is not None:
            log.refunds.append(lambda: self._refund(n))
        return True

    def _refund(self, n: int) -> None:
        self.tokens = min(float(self.burst), self.tokens + n)


def build(
    cfg: PolicyCfg,
    clock: Callable[[], float] = time.time,
    keys: Mapping[str, int] | None = None,
) -> Policy:
    """The evaluator of one policy config. ``keys``: the index of each attribute key in the
    facts' ``values`` (the keys :func:`fact_keys` gives, in the order the scan is given them),
    for the policies' :data:`Fast` answers; without it, only the policies that read no
    attribute answer from the facts."""
    kind = cfg.type
    if kind == "always_sample":
        return Policy(cfg.name, lambda t: Decision.SAMPLED, lambda f, tid, n: Decision.SAMPLED)
    if kind == "latency":
        assert cfg.latency is not None
        lo = cfg.latency.threshold_ms * 1_000_000
        hi = cfg.latency.upper_threshold_ms * 1_000_000

        def latency(t: TraceData) -> Decision:
            d = t.duration_ns()
            ok = d >= lo if not hi else lo <= d <= hi
            return Decision.SAMPLED if ok else Decision.NOT_SAMPLED

        def latency_fast(f: Facts, tid: bytes, n: int) -> Decision:
            d = max(0, f.end_max - f.start_min)
            ok = d >= lo if not hi else lo <= d <= hi
            return Decision.SAMPLED if ok else Decision.NOT_SAMPLED

        return Policy(cfg.name, latency, latency_fast)
    if kind == "numeric_attribute":
        nc = cfg.numeric_attribute
        assert nc is not None
        lo_v = nc.min_value if nc.min_value is not None else float("-inf")
        hi_v = nc.max_value if nc.max_value is not None else float("inf")

        def numeric(t: TraceData) -> Decision:
            hit = any((n := _number(v)) is not None and lo_v <= n <= hi_v for v in t.values(nc.key))
            return _maybe_invert(hit, nc.invert_match)

        def numeric_hit(v: Any) -> bool:
            return (n := _number(v)) is not None and lo_v <= n <= hi_v

        return Policy(
            cfg.name, numeric, _first_value_hit(keys, nc.key, numeric_hit, nc.invert_match)
        )
    if kind == "probabilistic":
        pc = cfg.probabilistic
        assert pc is not None
        salt = (pc.hash_salt or "default-hash-seed").encode()
        threshold = probabilistic_threshold(min(pc.sampling_percentage, 100.0) / 100)

        salted = fnv1a_64(salt)  # the state after the salt, the same for every trace

        def probabilistic(t: TraceData) -> Decision:
            ok = fnv1a_64(t.trace_id, salted) <= threshold and threshold > 0
            return Decision.SAMPLED if ok else Decision.NOT_SAMPLED

        def probabilistic_fast(f: Facts, tid: bytes, n: int) -> Decision:
            ok = fnv1a_64(tid, salted) <= threshold and threshold > 0
            return Decision.SAMPLED if ok else Decision.NOT_SAMPLED

        if threshold == 2**64 - 1:  # every hash is at most that: no need to compute it
            return Policy(cfg.name, lambda t: Decision.SAMPLED, lambda f, tid, n: Decision.SAMPLED)
        return Policy(cfg.name, probabilistic, probabilistic_fast)
    if kind == "status_code":
        assert cfg.status_code is not None
        codes = {_STATUS[c] for c in cfg.status_code.status_codes}
        bits = sum(1 << c for c in codes)  # of the scan's status mask

        def status(t: TraceData) -> Decision:
            facts = t.facts
            hit = facts.status_mask & bits if facts is not None else t.has_status(codes)
            return Decision.SAMPLED if hit else Decision.NOT_SAMPLED

        return Policy(
            cfg.name,
            status,
            lambda f, tid, n: Decision.SAMPLED if f.status_mask & bits else Decision.NOT_SAMPLED,
        )
    if kind == "string_attribute":
        sc = cfg.string_attribute
        assert sc is not None
        if sc.enabled_regex_matching:
            patterns = [re.compile(v) for v in sc.values]

            def matches(value: str) -> bool:
                return any(p.search(value) for p in patterns)
        else:
            wanted = set(sc.values)

            def matches(value: str) -> bool:
                return value in wanted

        def string_hit(v: Any) -> bool:
            return v.WhichOneof("value") == "string_value" and matches(v.string_value)

        def string_attr(t: TraceData) -> Decision:
            hit = any(string_hit(v) for v in t.values(sc.key))
            return _maybe_invert(hit, sc.invert_match)

        return Policy(
            cfg.name, string_attr, _first_value_hit(keys, sc.key, string_hit, sc.invert_match)
        )
    if kind == "rate_limiting":
        assert cfg.rate_limiting is not None
        rl = cfg.rate_limiting
        burst = rl.burst_capacity or 2 * rl.spans_per_second
        bucket = _TokenBucket(rl.spans_per_second, burst, clock)
        return Policy(
            cfg.name,
            lambda t: Decision.SAMPLED if bucket.allow(t.span_count) else Decision.NOT_SAMPLED,
        )
    if kind == "span_count":
        assert cfg.span_count is not None
        mn, mx = cfg.span_count.min_spans, cfg.span_count.max_spans

        def count_fast(f: Facts, tid: bytes, n: int) -> Decision:
            return Decision.SAMPLED if n >= mn and (not mx or n <= mx) else Decision.NOT_SAMPLED

        return Policy(
            cfg.name,
            lambda t: (
                Decision.SAMPLED
                if t.span_count >= mn and (not mx or t.span_count <= mx)
                else Decision.NOT_SAMPLED
            ),
            count_fast,
        )
    if kind == "boolean_attribute":
        bc = cfg.boolean_attribute
        assert bc is not None

        def boolean_hit(v: Any) -> bool:
            return v.WhichOneof("value") == "bool_value" and v.bool_value == bc.value

        def boolean(t: TraceData) -> Decision:
            hit = any(boolean_hit(v) for v in t.values(bc.key))
            return _maybe_invert(hit, bc.invert_match)

        return Policy(
            cfg.name, boolean, _first_value_hit(keys, bc.key, boolean_hit, bc.invert_match)
        )
    if kind == "trace_state":
        tc = cfg.trace_state
        assert tc is not None
        members = {f"{tc.key}={v}" for v in tc.values}

        def trace_state(t: TraceData) -> Decision:
            for sk in t.skeletons:
                state = sk.trace_state.decode("utf-8", "replace")
                if any(m.strip() in members for m in state.split(",")):
                    return Decision.SAMPLED
            return Decision.NOT_SAMPLED

        return Policy(cfg.name, trace_state)
    if kind == "and":
        assert cfg.and_ is not None
        subs = [build(p, clock, keys) for p in cfg.and_.and_sub_policy]

        def and_(t: TraceData) -> Decision:
            for p in subs:
                if p.evaluate(t) not in SAMPLED_LIKE:
                    return Decision.NOT_SAMPLED
            return Decision.SAMPLED

        return Policy(cfg.name, and_, _all_fast(subs, Decision.SAMPLED))
    if kind == "drop":
        assert cfg.drop is not None
        subs = [build(p, clock, keys) for p in cfg.drop.drop_sub_policy]

        def drop(t: TraceData) -> Decision:
            for p in subs:
                if p.evaluate(t) not in SAMPLED_LIKE:
                    return Decision.NOT_SAMPLED
            return Decision.DROPPED

        return Policy(cfg.name, drop, _all_fast(subs, Decision.DROPPED))
    if kind == "composite":
        return _composite(cfg, clock)
    if kind == "ottl_condition":
        return _ottl(cfg)
    return _workflow_policy(cfg, keys or {})


def _all_fast(subs: list[Policy], hit: Decision) -> Fast | None:
    """The :data:`Fast` answer of ``and`` / ``drop`` (``hit`` when every sub-policy samples),
    when every sub-policy has one."""
    fasts = [p.fast for p in subs]
    if any(f is None for f in fasts):
        return None
    ready: list[Fast] = fasts  # type: ignore[assignment]

    def fast(f: Facts, tid: bytes, n: int) -> Decision | None:
        for sub in ready:
            d = sub(f, tid, n)
            if d is None:
                return None
            if d not in SAMPLED_LIKE:
                return Decision.NOT_SAMPLED
        return hit

    return fast


def _first_value_hit(
    keys: Mapping[str, int] | None, key: str, hit: Callable[[Any], bool], invert: bool
) -> Fast | None:
    """The :data:`Fast` answer of an attribute policy (``hit`` of any value of ``key`` on the
    trace's resources and spans): the first span value of the key (the scan's facts) settles
    it when it hits; otherwise the policy reads the trace (other spans, the resources)."""
    k = None if keys is None else keys.get(key)
    if k is None:
        return None
    answer = _maybe_invert(True, invert)

    def fast(f: Facts, tid: bytes, n: int) -> Decision | None:
        encoded = f.values[k]
        if encoded is None or not hit(AnyValue.FromString(encoded)):
            return None
        return answer

    return fast


def _maybe_invert(hit: bool, invert: bool) -> Decision:
    if invert:
        return Decision.INVERT_NOT_SAMPLED if hit else Decision.INVERT_SAMPLED
    return Decision.SAMPLED if hit else Decision.NOT_SAMPLED


def _composite(cfg: PolicyCfg, clock: Callable[[], float]) -> Policy:
    cc = cfg.composite
    assert cc is not None
    by_name = {p.name: build(p, clock) for p in cc.composite_sub_policy}
    order = list(cc.policy_order) + [n for n in by_name if n not in cc.policy_order]
    allocated = {
        r.policy: cc.max_total_spans_per_second * r.percent // 100 for r in cc.rate_allocation
    }
    default = cc.max_total_spans_per_second // len(by_name)
    budgets = [(by_name[n], allocated.get(n, default), _PerSecond(clock)) for n in order]

    def composite(t: TraceData) -> Decision:
        for policy, budget, window in budgets:
            if policy.evaluate(t) in SAMPLED_LIKE and window.room(t.span_count, budget):
                return Decision.SAMPLED
        return Decision.NOT_SAMPLED

    return Policy(cfg.name, composite)


def _ottl(cfg: PolicyCfg) -> Policy:
    """OTTL conditions run as the ``filter`` processor runs them, on a request made of the
    trace's spans: the trace is sampled when a condition holds for a span (span event)."""
    from pipeline import Traces
    from pipeline._wire import ShallowTraces
    from pipeline.ottl.runner import filter_payload

    oc = cfg.ottl_condition
    assert oc is not None
    filters = oc.filters()

    def report(text: str, exc: BaseException) -> None:
        pass  # error_mode ignore/silent: the condition does not hold

    def ottl(t: TraceData) -> Decision:
        groups = t.groups or [(r, b"", b"", b"") for r in t._raw_resources]
        by_group: dict[tuple[bytes, bytes, bytes, bytes], list[bytes]] = {}
        for group, raw in zip(groups, t._raw, strict=True):
            by_group.setdefault(group, []).append(raw)
        req = ShallowTraces()
        for (resource, resource_url, scope, scope_url), raws in by_group.items():
            rs = req.resource_spans.add(resource=resource, schema_url=resource_url)
            rs.scope_spans.add(scope=scope, schema_url=scope_url).spans.extend(raws)
        payload = Traces(req.SerializeToString())
        kept, dropped = filter_payload(payload, filters, report)
        if dropped:  # a span condition held
            return Decision.SAMPLED
        if kept is None or kept is payload:
            return Decision.NOT_SAMPLED
        # a span event condition held when the filter took an event out
        events = sum(len(sk.events) for sk in t.skeletons)
        left = sum(
            len(s.events) for rs in kept.message().resource_spans
            for ss in rs.scope_spans for s in ss.spans
        )  # fmt: skip
        return Decision.SAMPLED if left < events else Decision.NOT_SAMPLED

    return Policy(cfg.name, ottl)


def _workflow_policy(cfg: PolicyCfg, keys: Mapping[str, int]) -> Policy:
    kind = cfg.type
    if kind == "workflow_outcome":
        outcomes = set(
            cfg.workflow_outcome.outcomes if cfg.workflow_outcome else ["failed", "timeout"]
        )

        def outcome(t: TraceData) -> Decision:
            value = t.workflow_attr(NAMES.workflow_outcome)
            if not value:
                root = t.root
                if root is None:
                    return Decision.NOT_SAMPLED
                attrs = t.root_attrs
                if not is_workflow_root(root, attrs, NAMES):
                    return Decision.NOT_SAMPLED
                value = workflow_outcome(root, attrs, NAMES)
            return Decision.SAMPLED if value in outcomes else Decision.NOT_SAMPLED

        k_outcome = keys.get(NAMES.workflow_outcome)

        def outcome_fast(f: Facts, tid: bytes, n: int) -> Decision | None:
            value = value_str(f.values[k_outcome])  # type: ignore[index]
            if not value:
                return None  # read from the root
            return Decision.SAMPLED if value in outcomes else Decision.NOT_SAMPLED

        return Policy(cfg.name, outcome, None if k_outcome is None else outcome_fast)
    if kind == "workflow_complexity_tier":
        assert cfg.workflow_complexity_tier is not None
        tiers = set(cfg.workflow_complexity_tier.tiers)
        k_tier = keys.get(NAMES.workflow_complexity_tier)
        return Policy(
            cfg.name,
            lambda t: (
                Decision.SAMPLED
                if t.workflow_attr(NAMES.workflow_complexity_tier) in tiers
                else Decision.NOT_SAMPLED
            ),
            None
            if k_tier is None
            else lambda f, tid, n: (
                Decision.SAMPLED if value_str(f.values[k_tier]) in tiers else Decision.NOT_SAMPLED
            ),
        )
    if kind == "workflow_sla":
        sla = cfg.workflow_sla
        assert sla is not None

        def over_sla(t: TraceData) -> Decision:
            facts = t.facts
            if facts is not None and len(facts.roots) <= 1 and t.workflow_attr(NAMES.workflow_id):
                # one root (or none): it is the workflow's, its times are in the facts
                if not facts.roots:
                    return Decision.NOT_SAMPLED
                wf_type = t.workflow_attr(NAMES.workflow_type)
                if not wf_type:
                    wf_type = workflow_type(t.root, t.root_attrs, NAMES)
                objective = sla.objective(wf_type)
                if objective is None:
                    return Decision.NOT_SAMPLED
                _, start, end = facts.roots[0]
                # the execution's duration when it is below the root (the workflow processor
                # wrote it on the root), else the root's own
                given = t.fact_value(NAMES.workflow_duration)
                seconds = duration_of(given) if given is not None else None
                duration = (end - start) / 1e9 if seconds is None else seconds
                return Decision.SAMPLED if duration > objective else Decision.NOT_SAMPLED
            root = t.root
            if root is None:
                return Decision.NOT_SAMPLED
            attrs = t.root_attrs
            if not is_workflow_root(root, attrs, NAMES) and not t.workflow_attr(NAMES.workflow_id):
                return Decision.NOT_SAMPLED
            wf_type = t.workflow_attr(NAMES.workflow_type) or workflow_type(root, attrs, NAMES)
            objective = sla.objective(wf_type)
            if objective is None:
                return Decision.NOT_SAMPLED
            duration = workflow_duration(root, attrs, NAMES)  # the execution's
            return Decision.SAMPLED if duration > objective else Decision.NOT_SAMPLED

        k_id, k_type = keys.get(NAMES.workflow_id), keys.get(NAMES.workflow_type)
        k_duration = keys.get(NAMES.workflow_duration)

        def over_sla_fast(f: Facts, tid: bytes, n: int) -> Decision | None:
            # over_sla's first branch, where it reads nothing but the facts
            values = f.values
            if len(f.roots) > 1 or not value_str(values[k_id]):  # type: ignore[index]
                return None
            if not f.roots:
                return Decision.NOT_SAMPLED
            wf_type = value_str(values[k_type])  # type: ignore[index]
            if not wf_type:
                return None  # read from the root
            objective = sla.objective(wf_type)
            if objective is None:
                return Decision.NOT_SAMPLED
            _, start, end = f.roots[0]
            given = values[k_duration]  # type: ignore[index]
            seconds = duration_of(given) if given is not None else None
            duration = (end - start) / 1e9 if seconds is None else seconds
            return Decision.SAMPLED if duration > objective else Decision.NOT_SAMPLED

        ready = k_id is not None and k_type is not None and k_duration is not None
        return Policy(cfg.name, over_sla, over_sla_fast if ready else None)
    if kind == "workflow_usage":
        uc = cfg.workflow_usage
        assert uc is not None

        def usage(t: TraceData) -> Decision:
            tokens, cost = _usage(t, uc)
            hit = (uc.min_tokens is not None and tokens >= uc.min_tokens) or (
                uc.min_cost is not None and cost >= uc.min_cost
            )
            return Decision.SAMPLED if hit else Decision.NOT_SAMPLED

        # no span has any key _usage reads: 0 tokens, 0 cost, below any minimum (the config
        # wants min_tokens >= 1, min_cost > 0)
        k_usage = [keys.get(k) for k in (*_INPUT, *_OUTPUT, uc.cost_attribute)]

        def usage_fast(f: Facts, tid: bytes, n: int) -> Decision | None:
            values = f.values
            for k in k_usage:
                if values[k] is not None:  # type: ignore[index]
                    return None
            return Decision.NOT_SAMPLED

        return Policy(cfg.name, usage, None if None in k_usage else usage_fast)
    if kind == "tool_call_failed":
        tools = set(cfg.tool_call_failed.tools) if cfg.tool_call_failed else set()

        def counted_tool(attrs: Any) -> bool:
            """A tool call the policy counts (any, or one of ``tools``)."""
            if not is_tool_call(attrs, NAMES):
                return False
            if not tools:
                return True
            name = attrs.get(NAMES.tool_name)
            return name is not None and attr_str(name) in tools

        def tool_failed(t: TraceData) -> Decision:
            facts = t.facts
            if facts is not None:  # the spans that failed are known: only those are decoded
                if not facts.failed:
                    return Decision.NOT_SAMPLED
                marked = set(t.tool_indices())
                for i in facts.failed:
                    if i in marked and counted_tool(t.attrs(i)):
                        return Decision.SAMPLED
                return Decision.NOT_SAMPLED
            # a failed call has an ERROR status (Status.code 2: bytes 0x18 0x02 as encoders
            # write it) or error.type; in the trace's spans, the tool spans that can have
            # either (STATUS_BYTES: every encoding of code 2) are decoded, no other
            if not (t.contains(b"\x18\x02") or t.contains(ERROR_TYPE)):
                return Decision.NOT_SAMPLED
            for i in t.tool_indices():
                raw = t.raw(i)
                if ERROR_TYPE not in raw and not any(n in raw for n in ERROR_STATUS):
                    continue  # neither failed nor given an error type: nothing to decode
                attrs = t.attrs(i)
                if not counted_tool(attrs):
                    continue
                if NAMES.error_type in attrs or t.span(i).status.code == STATUS_ERROR:
                    return Decision.SAMPLED
            return Decision.NOT_SAMPLED

        return Policy(
            cfg.name,
            tool_failed,
            lambda f, tid, n: None if f.failed else Decision.NOT_SAMPLED,
        )
    raise ValueError(f"unknown policy type {kind!r}")


ERROR_TYPE = NAMES.error_type.encode()
ERROR_STATUS = STATUS_BYTES[STATUS_ERROR]
USAGE_MARKER = b"token"  # in every usage key _usage reads
TOOL_MARKERS = (NAMES.tool_operation.encode(), NAMES.mcp_tool_method.encode())
_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
_OUTPUT = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)


def _usage(t: TraceData, uc: Any) -> tuple[int, float]:
    """Tokens and cost of a trace: summed over its model calls (spans whose
    ``gen_ai.operation.name`` is a model operation) when it has any, else the largest of any
    span (an agent span reporting the run's total); cost from ``cost_attribute`` when spans
    carry it, else from ``prices`` by ``gen_ai.response.model`` / ``gen_ai.request.model``."""
    calls: list[tuple[int, int, float | None, str]] = []
    others: list[tuple[int, int, float | None, str]] = []
    for i in t.indices_containing(USAGE_MARKER, uc.cost_attribute.encode()):
        attrs = t.attrs(i)
        inp = sum(int(_number(attrs[k]) or 0) for k in _INPUT if k in attrs)
        out = sum(int(_number(attrs[k]) or 0) for k in _OUTPUT if k in attrs)
        cost_v = attrs.get(uc.cost_attribute)
        cost = _number(cost_v) if cost_v is not None else None
        model_v = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
        model = attr_str(model_v) if model_v is not None else ""
        if not (inp or out or cost):
            continue
        op = attrs.get(NAMES.operation_name)
        entry = (inp, out, cost, model)
        if op is not None and attr_str(op) in _MODEL_OPERATIONS:
            calls.append(entry)
        else:
            others.append(entry)

    def cost_of(e: tuple[int, int, float | None, str]) -> float:
        if e[2] is not None:
            return e[2]
        price = uc.prices.get(e[3])
        return 0.0 if price is None else (e[0] * price.input + e[1] * price.output) / 1e6

    if calls:
        return sum(e[0] + e[1] for e in calls), sum(cost_of(e) for e in calls)
    if others:
        return max(e[0] + e[1] for e in others), max(cost_of(e) for e in others)
    return 0, 0.0


def fact_keys(policies: list[PolicyCfg]) -> tuple[str, ...]:
    """The attribute keys whose first value the configured policies read (``workflow_attr``,
    the :data:`Fast` answers), for the scan of a trace's spans (at most ``scan.MAX_KEYS``:
    past it the policies read the spans)."""
    keys: dict[str, None] = {}
    for p in policies:
        if p.type == "workflow_outcome":
            keys[NAMES.workflow_outcome] = None
        elif p.type == "workflow_complexity_tier":
            keys[NAMES.workflow_complexity_tier] = None
        elif p.type == "workflow_sla":
            keys[NAMES.workflow_id] = keys[NAMES.workflow_type] = None
            keys[NAMES.workflow_duration] = None
        elif p.type == "workflow_usage" and p.workflow_usage is not None:
            # whether any span has a key the usage reads (none: no span to read)
            keys.update(dict.fromkeys((*_INPUT, *_OUTPUT, p.workflow_usage.cost_attribute)))
        elif p.type in ("numeric_attribute", "string_attribute", "boolean_attribute"):
            attr = getattr(p, p.type)
            if attr is not None:  # the first span value of the key (a hit settles it)
                keys[attr.key] = None
        for sub in (p.and_, p.drop, p.composite):
            if sub is not None:
                for name in ("and_sub_policy", "drop_sub_policy", "composite_sub_policy"):
                    keys.update(dict.fromkeys(fact_keys(getattr(sub, name, None) or [])))
    return tuple(keys)


def final_decision(decisions: list[Decision]) -> bool:
    """The Collector's rule: a drop or an inverted non-match drops the trace; otherwise any
    sampled (or inverted sampled) decision keeps it."""
    sampled = False
    for d in decisions:
        if d is Decision.DROPPED or d is Decision.INVERT_NOT_SAMPLED:
            return False
        if d is Decision.SAMPLED or d is Decision.INVERT_SAMPLED:
            sampled = True
    return sampled


# the decision codes of scan.decide_request (a program's answers), in order
CODES = (
    Decision.SAMPLED, Decision.NOT_SAMPLED, Decision.INVERT_SAMPLED,
    Decision.INVERT_NOT_SAMPLED, Decision.DROPPED, Decision.ERROR,
)  # fmt: skip


def compile_program(
    policies: list[PolicyCfg], keys: Mapping[str, int]
) -> tuple[tuple[Any, ...], ...] | None:
    """The ops of ``scan.decide_request`` for ``policies`` (one per policy, each answering as
    its :data:`Fast` answer does, ``DEFER`` where that is ``None``), or ``None`` when a policy
    has no such op (it reads the spans, or keeps a state: rate limits, composite)."""
    ops = []
    for p in policies:
        op = _op(p, keys)
        if op is None:
            return None
        ops.append(op)
    return tuple(ops)


def _op(cfg: PolicyCfg, keys: Mapping[str, int]) -> tuple[Any, ...] | None:
    kind = cfg.type
    if kind == "always_sample":
        return (scan.OP_CONST, 0)
    if kind == "latency" and cfg.latency is not None:
        lo = cfg.latency.threshold_ms * 1_000_000
        hi = cfg.latency.upper_threshold_ms * 1_000_000
        if not (
            isinstance(lo, int) and isinstance(hi, int) and 0 <= lo < 2**64 and 0 <= hi < 2**64
        ):
            return None
        return (scan.OP_LATENCY, lo, hi)
    if kind == "probabilistic" and cfg.probabilistic is not None:
        pc = cfg.probabilistic
        threshold = probabilistic_threshold(min(pc.sampling_percentage, 100.0) / 100)
        if threshold == 2**64 - 1:
            return (scan.OP_CONST, 0)
        salted = fnv1a_64((pc.hash_salt or "default-hash-seed").encode())
        return (scan.OP_PROB, salted, threshold)
    if kind == "status_code" and cfg.status_code is not None:
        return (
            scan.OP_STATUS,
            sum(1 << c for c in {_STATUS[c] for c in cfg.status_code.status_codes}),
        )
    if kind == "span_count" and cfg.span_count is not None:
        return (scan.OP_COUNT, cfg.span_count.min_spans, cfg.span_count.max_spans)
    if kind == "workflow_outcome":
        k = keys.get(NAMES.workflow_outcome)
        if k is None:
            return None
        outcomes = cfg.workflow_outcome.outcomes if cfg.workflow_outcome else ["failed", "timeout"]
        return (scan.OP_OUTCOME, k, tuple(dict.fromkeys(o.encode() for o in outcomes)))
    if kind == "workflow_sla" and cfg.workflow_sla is not None:
        sla = cfg.workflow_sla
        k_id, k_type = keys.get(NAMES.workflow_id), keys.get(NAMES.workflow_type)
        k_duration = keys.get(NAMES.workflow_duration)
        if k_id is None or k_type is None or k_duration is None:
            return None
        objectives = tuple((t.encode(), float(v)) for t, v in sla.objectives.items())
        if any(float(v) != v for v in sla.objectives.values()):
            return None
        default = None if sla.default is None else float(sla.default)
        return (scan.OP_SLA, k_id, k_type, k_duration, objectives, default)
    if kind == "workflow_usage" and cfg.workflow_usage is not None:
        uc = cfg.workflow_usage
        k_usage = [keys.get(k) for k in (*_INPUT, *_OUTPUT, uc.cost_attribute)]
        if None in k_usage:
            return None
        return (scan.OP_USAGE, tuple(k_usage))
    if kind == "tool_call_failed":
        return (scan.OP_TOOLFAIL,)
    if kind in ("and", "drop"):
        sub = cfg.and_ if kind == "and" else cfg.drop
        if sub is None:
            return None
        cfgs = sub.and_sub_policy if kind == "and" else sub.drop_sub_policy  # type: ignore[union-attr]
        subs = []
        for c in cfgs:
            op = _op(c, keys)
            if op is None:
                return None
            subs.append(op)
        return (scan.OP_ALL, tuple(subs), 0 if kind == "and" else 4)
    return None


def tool_check(policies: list[PolicyCfg]) -> tuple[Any, ...] | None:
    """The ``tool`` of ``scan.decide_request``: what ``is_tool_call`` compares, with the check
    that a span decodes (``pipeline._otlpvalid``), when no ``tool_call_failed`` policy names
    tools (then each reads the tool name: ``None``, the call defers to the policy)."""
    from pipeline._otlpvalid import checker

    def named(ps: list[PolicyCfg]) -> bool:
        for p in ps:
            if p.type == "tool_call_failed" and p.tool_call_failed and p.tool_call_failed.tools:
                return True
            for sub in (p.and_, p.drop, p.composite):
                if sub is not None:
                    for name in ("and_sub_policy", "drop_sub_policy", "composite_sub_policy"):
                        if named(getattr(sub, name, None) or []):
                            return True
        return False

    if named(policies):
        return None
    return (
        NAMES.operation_name.encode(), NAMES.tool_operation.encode(),
        NAMES.mcp_method_name.encode(), NAMES.mcp_tool_method.encode(), checker("traces"),
    )  # fmt: skip
