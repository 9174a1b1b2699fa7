"""``tail_sampling`` unit behaviour: each policy type, the Collector's final decision, holding
for ``decision_wait``, late spans, ``num_traces``, the decision caches, whole-trace payloads
and durability tokens."""

from __future__ import annotations

import asyncio
import gc
import random
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from pipeline import Kind, Traces
from pipeline.testing import StubHost, create_settings
from plugins.tailsamplingprocessor.config import TailSamplingConfig
from plugins.tailsamplingprocessor.policies import (
    Decision,
    TraceData,
    build,
    final_decision,
    fnv1a_64,
    probabilistic_threshold,
)
from plugins.tailsamplingprocessor.processor import TailSamplingProcessor
from tests.support import wait_until


def span(trace_id: bytes, n: int, **kw: Any) -> dict[str, Any]:
    return {"trace_id": trace_id, "span_id": n.to_bytes(8, "big"), "name": f"op-{n}", **kw}


def request(*spans: dict[str, Any], resource: dict[str, Any] | None = None) -> Traces:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (resource or {}).items():
        _set(rs.resource.attributes.add(key=k).value, v)
    ss = rs.scope_spans.add()
    for s in spans:
        attrs = s.pop("attributes", {})
        status = s.pop("status", None)
        sp = ss.spans.add(**s)
        for k, v in attrs.items():
            _set(sp.attributes.add(key=k).value, v)
        if status is not None:
            sp.status.code = status
    return Traces(req.SerializeToString())


def _set(value: Any, v: Any) -> None:
    if isinstance(v, bool):
        value.bool_value = v
    elif isinstance(v, int):
        value.int_value = v
    elif isinstance(v, float):
        value.double_value = v
    else:
        value.string_value = v


def trace_of(payload: Traces) -> TraceData:
    msg = payload.message()
    spans = [sp for rs in msg.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    res = msg.resource_spans[0].resource.SerializeToString()
    return TraceData(
        bytes(spans[0].trace_id), [sp.SerializeToString() for sp in spans], [res] * len(spans)
    )


def decide(policy: dict[str, Any], payload: Traces) -> Decision:
    cfg = TailSamplingConfig.model_validate({"policies": [{"name": "p", **policy}]})
    return build(cfg.policies[0]).evaluate(trace_of(payload))


T = b"\x01" * 16


def test_collector_policies() -> None:
    slow = request(
        span(T, 1, start_time_unix_nano=0, end_time_unix_nano=10),
        span(T, 2, start_time_unix_nano=5, end_time_unix_nano=6_000_000_000,
             attributes={"http.status_code": 503, "tenant": "acme", "vip": True},
             status=2, trace_state="key3=value1"),
        resource={"service.name": "checkout"},
    )  # fmt: skip
    S, N = Decision.SAMPLED, Decision.NOT_SAMPLED
    assert decide({"type": "always_sample"}, slow) is S
    assert decide({"type": "latency", "latency": {"threshold_ms": 5000}}, slow) is S
    assert decide({"type": "latency", "latency": {"threshold_ms": 7000}}, slow) is N
    assert (
        decide(
            {"type": "latency", "latency": {"threshold_ms": 1, "upper_threshold_ms": 5000}}, slow
        )
        is N
    )
    num = {"type": "numeric_attribute"}
    assert decide({**num, "numeric_attribute": {"key": "http.status_code", "min_value": 500,
                                                "max_value": 599}}, slow) is S  # fmt: skip
    assert decide({**num, "numeric_attribute": {"key": "http.status_code", "min_value": 400,
                                                "max_value": 499}}, slow) is N  # fmt: skip
    assert decide({**num, "numeric_attribute": {"key": "http.status_code", "min_value": 500,
                   "invert_match": True}}, slow) is Decision.INVERT_NOT_SAMPLED  # fmt: skip
    assert decide({"type": "status_code", "status_code": {"status_codes": ["ERROR"]}}, slow) is S
    assert decide({"type": "status_code", "status_code": {"status_codes": ["OK"]}}, slow) is N
    sa = {"type": "string_attribute"}
    assert (
        decide({**sa, "string_attribute": {"key": "service.name", "values": ["checkout"]}}, slow)
        is S
    )  # fmt: skip  (resource attributes count)
    regex = {"key": "tenant", "values": ["ac.*"], "enabled_regex_matching": True}
    assert decide({**sa, "string_attribute": regex}, slow) is S
    assert decide({**sa, "string_attribute": {"key": "tenant", "values": ["acme"],
                   "invert_match": True}}, slow) is Decision.INVERT_NOT_SAMPLED  # fmt: skip
    assert decide({**sa, "string_attribute": {"key": "tenant", "values": ["other"],
                   "invert_match": True}}, slow) is Decision.INVERT_SAMPLED  # fmt: skip
    assert decide({"type": "span_count", "span_count": {"min_spans": 2}}, slow) is S
    assert decide({"type": "span_count", "span_count": {"min_spans": 1, "max_spans": 1}}, slow) is N
    assert decide({"type": "boolean_attribute",
                   "boolean_attribute": {"key": "vip", "value": True}}, slow) is S  # fmt: skip
    assert decide({"type": "trace_state",
                   "trace_state": {"key": "key3", "values": ["value1"]}}, slow) is S  # fmt: skip
    both = {"type": "and", "and": {"and_sub_policy": [
        {"name": "a", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "b", "type": "latency", "latency": {"threshold_ms": 5000}}]}}  # fmt: skip
    assert decide(both, slow) is S
    drop = {"type": "drop", "drop": {"drop_sub_policy": [
        {"name": "a", "type": "string_attribute",
         "string_attribute": {"key": "service.name", "values": ["checkout"]}}]}}  # fmt: skip
    assert decide(drop, slow) is Decision.DROPPED
    # the final decision: drop and inverted non-matches win over sampled
    assert final_decision([S, Decision.DROPPED]) is False
    assert final_decision([S, Decision.INVERT_NOT_SAMPLED]) is False
    assert final_decision([N, Decision.INVERT_SAMPLED]) is True
    assert final_decision([N, Decision.ERROR]) is False


def test_rate_limiting_and_composite_budgets() -> None:
    now = [100.0]
    cfg = TailSamplingConfig.model_validate({"policies": [
        {"name": "r", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 5}},
        {"name": "c", "type": "composite", "composite": {
            "max_total_spans_per_second": 4, "policy_order": ["errors", "all"],
            "composite_sub_policy": [
                ERRORS, {"name": "all", "type": "always_sample"}],
            "rate_allocation": [{"policy": "errors", "percent": 50}]}},
    ]})  # fmt: skip
    rate = build(cfg.policies[0], lambda: now[0])
    two = trace_of(request(span(T, 1), span(T, 2)))
    # a token bucket of 5 spans a second, 10 at most (twice the rate), full at the start
    got = [rate.evaluate(two) for _ in range(6)]
    assert got == [Decision.SAMPLED] * 5 + [Decision.NOT_SAMPLED]
    now[0] += 0.4  # 2 tokens back
    assert [rate.evaluate(two) for _ in range(2)] == [Decision.SAMPLED, Decision.NOT_SAMPLED]
    comp = build(cfg.policies[1], lambda: now[0])
    err = trace_of(request(span(T, 1, status=2), span(T, 2)))
    # errors has 2 spans/s, all the other half (2): an error trace uses errors' budget first
    assert comp.evaluate(err) is Decision.SAMPLED
    assert comp.evaluate(err) is Decision.SAMPLED  # errors' budget spent: "all" takes it
    assert comp.evaluate(err) is Decision.NOT_SAMPLED


def test_probabilistic_policy_is_the_collectors_hash() -> None:
    # FNV-1a 64 reference value, and the threshold arithmetic of calculateThreshold
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert probabilistic_threshold(1.0) == 2**64 - 1
    assert probabilistic_threshold(0.5) == 2**63 - 1  # 2^63 - 0.5 fits 64 bits, truncated
    assert probabilistic_threshold(0.0) == 0
    p = {"type": "probabilistic", "probabilistic": {"sampling_percentage": 25}}
    kept = 0
    rng = random.Random(5)
    for _ in range(2000):
        tid = rng.randbytes(16)  # random ids, as SDKs make them (FNV's high bits need entropy)
        want = fnv1a_64(b"default-hash-seed" + tid) <= probabilistic_threshold(0.25)
        got = decide(p, request(span(tid, 1))) is Decision.SAMPLED
        assert got == want
        kept += got
    assert 400 < kept < 600


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="policies"):
        TailSamplingConfig.model_validate({})
    with pytest.raises(ValidationError, match="missing 'latency:'"):
        TailSamplingConfig.model_validate({"policies": [{"name": "l", "type": "latency"}]})
    with pytest.raises(ValidationError, match="unique"):
        TailSamplingConfig.model_validate(
            {"policies": [{"name": "a", "type": "always_sample"}] * 2}
        )
    with pytest.raises(ValidationError, match="unknown outcome"):
        TailSamplingConfig.model_validate({"policies": [
            {"name": "o", "type": "workflow_outcome", "workflow_outcome": {"outcomes": ["bad"]}}
        ]})  # fmt: skip


class Sink:
    mutates_data = False

    def __init__(self) -> None:
        self.got: list[Traces] = []

    async def consume(self, data: Traces) -> None:  # type: ignore[override]
        self.got.append(data)

    def ids(self) -> list[bytes]:
        return [bytes(s.trace_id) for p in self.got for rs in p.message().resource_spans
                for ss in rs.scope_spans for s in ss.spans]  # fmt: skip

    def deliver(self) -> None:
        self.got.clear()


def processor(config: dict[str, Any], sink: Sink) -> TailSamplingProcessor:
    return TailSamplingProcessor(
        create_settings(Kind.PROCESSOR, "tail_sampling"),
        TailSamplingConfig.model_validate(config),
        sink,
    )


ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


async def test_held_for_decision_wait_then_late_spans_follow() -> None:
    sink = Sink()
    proc = processor({"decision_wait": "150ms", "policies": [ERRORS]}, sink)
    await proc.start(StubHost())
    a, b = b"A" * 16, b"B" * 16
    await proc.consume(request(span(a, 1), span(b, 2)))
    await asyncio.sleep(0.05)
    await proc.consume(request(span(a, 3, status=2), span(b, 4)))  # a has an error now
    assert sink.got == []
    await wait_until(lambda: len(sink.ids()) == 2, within=2)
    assert sink.ids() == [a, a]
    # late spans follow: a's is passed on at once, b's dropped
    await proc.consume(request(span(a, 5), span(b, 6)))
    assert sink.ids() == [a, a, a]
    tel = proc.settings.telemetry.service
    assert tel.value("otelcol_processor_tail_sampling_late_spans_total",
                     processor="tail_sampling", sampled="false") == 1  # fmt: skip
    assert tel.value("otelcol_processor_tail_sampling_decisions_total",
                     processor="tail_sampling", when="decision_wait") == 2  # fmt: skip
    await proc.shutdown()
    await proc.shutdown()


async def test_num_traces_bounds_memory_by_deciding_early() -> None:
    sink = Sink()
    proc = processor({"decision_wait": "30s", "num_traces": 10,
                      "policies": [{"name": "all", "type": "always_sample"}]}, sink)  # fmt: skip
    await proc.start(StubHost())
    for i in range(25):
        await proc.consume(request(span(i.to_bytes(16, "big"), i)))
    assert len(proc._held) == 10
    assert len(sink.ids()) == 15  # the oldest decided early, with what they had
    tel = proc.settings.telemetry.service
    assert tel.value("otelcol_processor_tail_sampling_sampling_traces_on_memory",
                     processor="tail_sampling") == 10  # fmt: skip
    await proc.shutdown()  # decides the rest
    assert len(sink.ids()) == 25


async def test_decision_cache_outlives_num_traces() -> None:
    sink = Sink()
    proc = processor({"decision_wait": "30s", "num_traces": 1,
                      "decision_cache": {"non_sampled_cache_size": 100},
                      "policies": [ERRORS]}, sink)  # fmt: skip
    ids = [i.to_bytes(16, "big") for i in range(10)]
    whole = request(*[span(t, n) for n, t in enumerate(ids)])
    whole.whole_traces = True
    await proc.consume(whole)  # decided at once: all not sampled
    assert sink.got == [] and len(proc._held) == 0
    # a late span of the first trace: the decided map (num_traces 1) forgot it, the cache not
    await proc.consume(request(span(ids[0], 99, status=2)))
    assert sink.got == [] and len(proc._held) == 0


async def test_whole_payload_decided_at_once_and_atomic() -> None:
    class Refuses(Sink):
        async def consume(self, data: Traces) -> None:  # type: ignore[override]
            from pipeline import RetryableError

            raise RetryableError("later")

    sink = Refuses()
    proc = processor({"policies": [ERRORS]}, sink)
    whole = request(span(T, 1, status=2), span(T, 2))
    whole.whole_traces = True
    from pipeline import RetryableError

    with pytest.raises(RetryableError):
        await proc.consume(whole)
    assert proc._known(T) is None  # nothing remembered, nothing counted
    ok = Sink()
    proc.next = ok
    await proc.consume(whole)
    assert ok.ids() == [T, T] and ok.got[0].whole_traces
    assert proc._known(T) is True


class Tok:
    dead: list[int] = []

    def __init__(self, n: int) -> None:
        self.n = n

    def __del__(self) -> None:
        Tok.dead.append(self.n)


async def test_durability_tokens_released_with_the_decision() -> None:
    """Tokens of held spans stay alive until their trace is decided: on the payload of the
    sampled traces, or done when the trace is dropped."""
    Tok.dead = []
    sink = Sink()
    # the traces arrive 1 s apart and wait 2 s each, so they are decided apart (a trace's
    # tokens go with the batch it is in) with a second's margin on every step: a loaded
    # machine that delays the loop by a few hundred milliseconds does not change the order
    proc = processor({"decision_wait": "2s", "policies": [ERRORS]}, sink)
    await proc.start(StubHost())
    kept, dropped = b"K" * 16, b"D" * 16
    await proc.consume(request(span(dropped, 2)).carry_acks([Tok(2)]))
    await asyncio.sleep(1.0)
    await proc.consume(request(span(kept, 1, status=2)).carry_acks([Tok(1)]))
    gc.collect()
    assert Tok.dead == []  # held: both records must stay
    await wait_until(lambda: proc._known(dropped) is False, within=3)
    assert kept in proc._held
    gc.collect()
    assert Tok.dead == [2]  # the dropped trace's record is done, the held one's is not
    await wait_until(lambda: len(sink.ids()) == 1, within=3)
    gc.collect()
    assert Tok.dead == [2]
    carried = [t.n for t in sink.got[0].ack_tokens]  # type: ignore[attr-defined]
    assert carried == [1]  # (computed outside the assert: pytest keeps its operands)
    sink.deliver()
    gc.collect()
    assert sorted(Tok.dead) == [1, 2]
    await proc.shutdown()


def test_ottl_condition_policy() -> None:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "checkout"
    sp = rs.scope_spans.add().spans.add(trace_id=T, span_id=b"\x01" * 8, name="pay")
    sp.attributes.add(key="tenant").value.string_value = "acme"
    sp.events.add(name="retry")
    payload = Traces(req.SerializeToString())

    def ottl(**section: Any) -> Decision:
        return decide({"type": "ottl_condition", "ottl_condition": section}, payload)

    assert ottl(span=['attributes["tenant"] == "acme"']) is Decision.SAMPLED
    assert ottl(span=['resource.attributes["service.name"] == "checkout"']) is Decision.SAMPLED
    assert ottl(span=['name == "other"']) is Decision.NOT_SAMPLED
    assert ottl(spanevent=['name == "retry"']) is Decision.SAMPLED
    assert ottl(spanevent=['name == "other"']) is Decision.NOT_SAMPLED
    with pytest.raises(ValidationError, match=r"ottl_condition\.span"):
        TailSamplingConfig.model_validate({"policies": [
            {"name": "o", "type": "ottl_condition", "ottl_condition": {"span": ["name =="]}}
        ]})  # fmt: skip


def test_trace_ids_of_spans_encoded_in_any_field_order() -> None:
    from pipeline import _wire
    from plugins.tailsamplingprocessor.processor import _parse

    tid = b"\x07" * 16
    in_order = b"\x0a\x10" + tid + b"\x2a\x01a"  # trace_id first, as encoders write it
    reordered = b"\x2a\x01b" + b"\x0a\x10" + tid  # the name first: the ids are parsed
    no_id = b"\x2a\x01c"
    req = _wire.ShallowTraces()
    req.resource_spans.add().scope_spans.add().spans.extend([in_order, reordered, no_id])
    got = _parse(Traces(req.SerializeToString()))
    assert [(t, raw) for t, _, raw in got] == [(tid, in_order), (tid, reordered), (b"", no_id)]


async def test_block_on_overflow_and_drop_pending_traces_on_shutdown() -> None:
    from pipeline import RetryableError

    sink = Sink()
    proc = processor({"decision_wait": "30s", "num_traces": 2, "block_on_overflow": True,
                      "drop_pending_traces_on_shutdown": True,
                      "policies": [{"name": "all", "type": "always_sample"}]}, sink)  # fmt: skip
    ids = [bytes([i]) * 16 for i in range(1, 4)]
    await proc.consume(request(span(ids[0], 1), span(ids[1], 2)))
    with pytest.raises(RetryableError) as err:
        await proc.consume(request(span(ids[2], 3)))  # a third trace: pushed back, not taken
    assert err.value.resource_exhausted
    assert len(proc._held) == 2 and ids[2] not in proc._held
    await proc.consume(request(span(ids[0], 4)))  # more of a held trace is taken
    await proc.shutdown()  # the two held traces are dropped, not decided
    assert sink.got == []
    tel = proc.settings.telemetry.service
    dropped = tel.value("otelcol_processor_dropped_items_total", processor="tail_sampling",
                        otel_signal="traces", reason="shutdown")  # fmt: skip
    assert dropped == 3


def test_attr_view_answers_as_the_dict_of_the_attributes() -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from plugins.tailsamplingprocessor.policies import AttrView

    s = Span(name="x")
    for k, v in (("a", "1"), ("b", "2"), ("a", "3")):
        s.attributes.add(key=k).value.string_value = v
    view, plain = AttrView(s.attributes), {kv.key: kv.value for kv in s.attributes}
    assert list(view) == list(plain) and len(view) == len(plain)
    for key in ("a", "b", "c"):
        assert (key in view) == (key in plain)
        assert view.get(key) == plain.get(key)
    assert view["a"].string_value == "3" and view.first("a").string_value == "1"
    with pytest.raises(KeyError):
        view["c"]


def test_contains_and_request_bytes_look_inside_one_span() -> None:
    from plugins.tailsamplingprocessor.policies import RequestBytes

    spans = [b"..ab", b"cd.."]  # "bc" only across the two spans' encodings
    t = TraceData(T, spans, [b""] * 2)
    assert t.contains(b"ab") and not t.contains(b"bc")
    request = RequestBytes(b"\x0a\x04..ab\x0a\x04cd..")
    t = TraceData(T, spans, [b""] * 2, request=request)
    assert t.contains(b"cd") and not t.contains(b"bc") and not t.contains(b"zz")
    assert request.has(b"zz") is False and t.indices_containing(b"zz", b"cd") == [1]


@pytest.mark.parametrize(
    "policy",
    [
        {"type": "rate_limiting", "rate_limiting": {"spans_per_second": 10}},
        {
            "type": "composite",
            "composite": {
                "max_total_spans_per_second": 20,
                "policy_order": ["all"],
                "composite_sub_policy": [{"name": "all", "type": "always_sample"}],
            },
        },
    ],
)
async def test_a_retried_request_is_not_counted_twice_by_rate_budgets(
    policy: dict[str, Any],
) -> None:
    """The budget a refused payload took is given back: its retry is decided the same way."""
    from pipeline import RetryableError

    class Refusing:
        mutates_data = False

        def __init__(self) -> None:
            self.refuse = 1
            self.got: list[Traces] = []

        async def consume(self, data: Traces) -> None:
            if self.refuse:
                self.refuse -= 1
                raise RetryableError("full")
            self.got.append(data)

    sink = Refusing()
    cfg = TailSamplingConfig.model_validate({"policies": [{"name": "p", **policy}]})
    proc = TailSamplingProcessor(create_settings(Kind.PROCESSOR, "tail_sampling"), cfg, sink)
    payload = request(*(span(T, i) for i in range(1, 16)))  # 15 spans: within 20, not twice
    payload.whole_traces = True
    with pytest.raises(RetryableError):
        await proc.consume(payload)
    again = request(*(span(T, i) for i in range(1, 16)))
    again.whole_traces = True
    await proc.consume(again)
    assert sum(p.item_count() for p in sink.got) == 15


async def test_spans_of_a_trace_decided_while_a_whole_payload_is_taken_follow_it() -> None:
    """A whole-traces request that also holds a span of a held trace: if that trace is decided
    while the next component takes the whole traces, the span follows the decision (it was
    lost), and what is passed on carries the request's tokens."""
    a, b = b"\x0a" * 16, b"\x0b" * 16

    class Deciding:
        mutates_data = False

        def __init__(self) -> None:
            self.got: list[Traces] = []
            self.proc: TailSamplingProcessor | None = None

        async def consume(self, data: Traces) -> None:
            self.got.append(data)
            proc = self.proc
            if proc is not None and a in proc._held:  # the timer decides trace a meanwhile
                decided = proc._decide_batch([(a, proc._held.pop(a))], "decision_wait")
                assert decided is not None
                self.got.append(decided)

    sink = Deciding()
    cfg = TailSamplingConfig.model_validate(
        {"decision_wait": "10s", "policies": [{"name": "all", "type": "always_sample"}]}
    )
    proc = TailSamplingProcessor(create_settings(Kind.PROCESSOR, "tail_sampling"), cfg, sink)
    await proc.consume(request(span(a, 1), span(a, 2)))  # held, waiting for decision_wait
    sink.proc = proc
    mixed = request(span(b, 3), span(b, 4), span(b, 5), span(a, 6))
    mixed.whole_traces = True
    mixed.carry_acks(["token"])
    await proc.consume(mixed)
    spans = [
        (bytes(s.trace_id), int.from_bytes(s.span_id, "big"))
        for p in sink.got for rs in p.message().resource_spans
        for ss in rs.scope_spans for s in ss.spans
    ]  # fmt: skip
    assert sorted(spans) == sorted([(a, 1), (a, 2), (b, 3), (b, 4), (b, 5), (a, 6)])
    assert not proc._held
    assert all("token" in p.ack_tokens for p in sink.got if p is not sink.got[1])


# the policies of benchmarks/sampling.py, but keeping a share of the rest: some traces dropped
MIXED_POLICIES = [
    {"name": "failed", "type": "workflow_outcome",
     "workflow_outcome": {"outcomes": ["failed"]}},
    {"name": "sla", "type": "workflow_sla", "workflow_sla": {"default": "30s"}},
    {"name": "tool", "type": "tool_call_failed"},
    {"name": "usage", "type": "workflow_usage", "workflow_usage": {"min_tokens": 1000}},
    ERRORS,
    {"name": "ok-status", "type": "status_code", "status_code": {"status_codes": ["OK"]}},
    {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 30}},
]  # fmt: skip


def mixed_request(n: int = 60) -> bytes:
    """Whole traces of every kind the policies tell apart, over two resources; some spans
    with their fields out of the order encoders write them."""
    req = ExportTraceServiceRequest()
    groups = [req.resource_spans.add().scope_spans.add() for _ in range(2)]
    req.resource_spans[1].resource.attributes.add(key="service.name").value.string_value = "b"
    rng = random.Random(7)
    for k in range(n):
        tid = rng.randbytes(16)
        kind = k % 6
        root_end = 40_000_000_000 if kind == 1 else 1_000_000_000
        ss = groups[k % 2]
        root = ss.spans.add(
            trace_id=tid, span_id=b"r" * 8, name="workflow.support",
            start_time_unix_nano=1, end_time_unix_nano=1 + root_end,
        )  # fmt: skip
        root.attributes.add(key="workflow.id").value.string_value = f"wf-{k}"
        if kind == 0:
            root.attributes.add(key="workflow.outcome").value.string_value = "failed"
        tool = groups[(k + 1) % 2].spans.add(
            trace_id=tid, span_id=b"t" * 8, parent_span_id=b"r" * 8, name="execute_tool x",
            start_time_unix_nano=2, end_time_unix_nano=3,
        )  # fmt: skip
        tool.attributes.add(key="gen_ai.operation.name").value.string_value = "execute_tool"
        if kind == 2:
            tool.status.code = 2
        if kind == 3:
            tool.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 5000
        if kind == 4:
            root.status.code = 1
        if kind == 5 and k % 4 == 1:  # a run's total on its root
            root.attributes.add(key="gen_ai.usage.output_tokens").value.int_value = 2000
        child = ss.spans.add(span_id=b"c" * 8, parent_span_id=b"t" * 8, name="c")
        child.trace_id = tid
    raw = req.SerializeToString()
    # a span whose trace id comes last (fields in another order): the walk reads it anyway
    odd = ExportTraceServiceRequest()
    sp = odd.resource_spans.add().scope_spans.add().spans.add(span_id=b"o" * 8, name="odd")
    body = sp.SerializeToString() + b"\x0a\x10" + b"\x0d" * 16
    span_field = b"\x12" + bytes([len(body)]) + body
    scope_spans = b"\x12" + bytes([len(span_field)]) + span_field
    return raw + b"\x0a" + bytes([len(scope_spans)]) + scope_spans


@pytest.mark.parametrize("policies", [MIXED_POLICIES, [ERRORS]])
async def test_whole_requests_decided_the_same_with_and_without_the_c_walk(
    monkeypatch: pytest.MonkeyPatch, policies: list[dict[str, Any]]
) -> None:
    """The C walk (``_tracewire.ingest``) and the Python path give the same decisions, the same
    output bytes and the same counts; a corrupt request is refused the same way."""
    from pipeline import MalformedDataError
    from plugins.tailsamplingprocessor import processor as module

    if module._tracewire is None:
        pytest.skip("the C accelerator _tracewire is not built")
    raw = mixed_request()
    results = []
    for native in (module._tracewire, None):
        monkeypatch.setattr(module, "_tracewire", native)
        sink = Sink()
        proc = processor({"policies": policies}, sink)
        payload = Traces(raw)
        payload.whole_traces = True
        await proc.consume(payload)
        bad = Traces(raw[:-3])
        bad.whole_traces = True
        with pytest.raises(MalformedDataError):
            await proc.consume(bad)
        counts = dict(proc._decided.items)
        children = {k[1:]: c._value.get() for k, c in proc._children.items()}
        results.append(([p.to_bytes() for p in sink.got], counts, children))
        fresh = processor({"policies": policies}, Sink())
        assert (fresh._walk_whole(payload) is not None) == (native is not None)
        assert proc._walk_whole(payload) is None  # its traces are decided: the general path
    assert results[0] == results[1]
    kept = sum(results[0][1].values())
    assert 0 < kept < len(results[0][1])  # some kept, some dropped


def test_status_bytes_are_in_every_encoding_of_the_code() -> None:
    """A tool span is decoded only when it holds one of ``STATUS_BYTES[2]`` (or error.type):
    every encoding protobuf accepts for code 1 or 2, tag or value written longer, holds one."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Status

    from plugins.tailsamplingprocessor.policies import STATUS_BYTES

    for code in (1, 2):
        for tag in (b"\x18", b"\x98\x00", b"\x98\x80\x00", b"\x98\x80\x80\x80\x00"):
            longest = bytes([code | 0x80]) + b"\x80" * 3 + b"\x10"  # 2**32 + code: int32 code
            for value in (bytes([code]), bytes([code | 0x80, 0]), longest):
                encoded = tag + value
                assert Status.FromString(encoded).code == code
                assert any(n in encoded for n in STATUS_BYTES[code])


def test_a_tool_call_failed_with_its_status_written_longer_is_found() -> None:
    """The tool span's own bytes decide whether it is decoded: an ERROR written with a longer
    varint than encoders use still counts when another span of the trace failed."""
    tool = {"gen_ai.operation.name": "execute_tool"}
    payload = request(span(T, 1, status=2), span(T, 2, attributes=dict(tool)))
    raws = [sp.SerializeToString() for rs in payload.message().resource_spans
            for ss in rs.scope_spans for sp in ss.spans]  # fmt: skip
    raws[1] += b"\x7a\x03\x18\x82\x00"  # status {code: 2}, the value in two bytes
    trace = TraceData(T, raws, [b""] * 2)
    cfg = TailSamplingConfig.model_validate(
        {"policies": [{"name": "p", "type": "tool_call_failed"}]}
    )
    assert build(cfg.policies[0]).evaluate(trace) is Decision.SAMPLED


def mutations(raw: bytes, count: int, seed: int) -> list[bytes]:
    """``count`` copies of ``raw`` with 1-4 random edits each (bytes changed, cut, repeated)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            at = rng.randrange(len(data))
            if op < 0.6:
                data[at] = rng.randrange(256)
            elif op < 0.8:
                del data[at : at + rng.randint(1, 20)]
            else:
                data[at:at] = data[at : at + rng.randint(1, 40)]
        out.append(bytes(data))
    return out


async def test_corrupt_whole_requests_answered_the_same_with_and_without_the_c_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mutated requests (bytes changed, cut, repeated): the C walk and the Python path refuse
    the same ones and decide the others the same way."""
    from pipeline import MalformedDataError
    from plugins.tailsamplingprocessor import processor as module

    if module._tracewire is None:
        pytest.skip("the C accelerator _tracewire is not built")
    seen: set[str] = set()
    for data in mutations(mixed_request(8), 300, 11):
        outcomes = []
        for native in (module._tracewire, None):
            monkeypatch.setattr(module, "_tracewire", native)
            sink = Sink()
            proc = processor({"policies": MIXED_POLICIES}, sink)
            payload = Traces(bytes(data))
            payload.whole_traces = True
            try:
                await proc.consume(payload)
                outcomes.append(("ok", [p.to_bytes() for p in sink.got], dict(proc._decided.items)))
            except MalformedDataError:
                outcomes.append(("refused", [], {}))
        assert outcomes[0] == outcomes[1], bytes(data).hex()
        seen.add(outcomes[0][0])
    assert seen == {"ok", "refused"}


FACT_POLICIES = [
    *MIXED_POLICIES,
    {"name": "tier", "type": "workflow_complexity_tier",
     "workflow_complexity_tier": {"tiers": ["simple"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 5000}},
    {"name": "and", "type": "and", "and": {"and_sub_policy": [
        {"name": "a1", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "a2", "type": "workflow_sla", "workflow_sla": {"default": "10s"}}]}},
    {"name": "drop-unset", "type": "drop", "drop": {"drop_sub_policy": [
        {"name": "d1", "type": "status_code", "status_code": {"status_codes": ["UNSET"]}},
        {"name": "d2", "type": "workflow_outcome",
         "workflow_outcome": {"outcomes": ["cancelled"]}}]}},
    # policies answering from the facts alone (Policy.fast), inside and / drop
    {"name": "and-fast", "type": "and", "and": {"and_sub_policy": [
        {"name": "f1", "type": "always_sample"},
        {"name": "f2", "type": "span_count", "span_count": {"min_spans": 2, "max_spans": 3}},
        {"name": "f4", "type": "probabilistic", "probabilistic": {"sampling_percentage": 60}},
        {"name": "f5", "type": "latency",
         "latency": {"threshold_ms": 1, "upper_threshold_ms": 900000}}]}},
    {"name": "drop-costly", "type": "drop", "drop": {"drop_sub_policy": [
        {"name": "c1", "type": "workflow_usage", "workflow_usage": {"min_cost": 0.0001}},
        {"name": "c2", "type": "tool_call_failed"}]}},
    {"name": "tier-complex", "type": "workflow_complexity_tier",
     "workflow_complexity_tier": {"tiers": ["complex"]}},
    # attribute policies: a hit of the first span value settles them, else they read the spans
    {"name": "retries", "type": "numeric_attribute",
     "numeric_attribute": {"key": "retry.count", "min_value": 2, "max_value": 3}},
    {"name": "no-retries", "type": "numeric_attribute",
     "numeric_attribute": {"key": "retry.count", "min_value": 1, "invert_match": True}},
    {"name": "route", "type": "string_attribute",
     "string_attribute": {"key": "http.route", "values": ["/b", "/c"]}},
    {"name": "route-re", "type": "string_attribute",
     "string_attribute": {"key": "http.route", "values": ["^/a"],
                          "enabled_regex_matching": True, "invert_match": True}},
    {"name": "service", "type": "string_attribute",
     "string_attribute": {"key": "service.name", "values": ["b"]}},
    {"name": "flag", "type": "boolean_attribute",
     "boolean_attribute": {"key": "feature.on", "value": True}},
    {"name": "no-flag", "type": "boolean_attribute",
     "boolean_attribute": {"key": "feature.on", "value": False, "invert_match": True}},
]  # fmt: skip


async def test_decisions_the_same_with_and_without_the_scans_facts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The facts of the C scan (``scan.trace_facts``: status codes, times, roots, workflow
    attributes, failed spans) give every policy the answer it gets reading the spans: the same
    decisions, bytes and counts, on whole requests and on mutated ones whose spans protobuf
    decodes (a span it refuses, a string that is not UTF-8 say, is for the receivers' edge
    check to refuse)."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from pipeline import MalformedDataError
    from plugins.tailsamplingprocessor import processor as module
    from plugins.tailsamplingprocessor import scan

    req = ExportTraceServiceRequest()
    req.MergeFromString(mixed_request(40))
    for i, sp in enumerate(s for rs in req.resource_spans for ss in rs.scope_spans
                           for s in ss.spans):  # fmt: skip
        if i % 3 == 0:  # workflow attributes stamped on some spans, as the workflow processor
            sp.attributes.add(key="workflow.complexity_tier").value.string_value = (
                "simple" if i % 2 else "complex"
            )
            sp.attributes.add(key="workflow.type").value.string_value = "support"
        if i % 7 == 0:
            sp.attributes.add(key="error.type").value.string_value = "Timeout"
            sp.attributes.add(key="gen_ai.operation.name").value.string_value = "execute_tool"
        # attributes of the attribute policies: first values that hit and that do not (a
        # later span's may), of the right type and not
        if i % 4 == 1:
            sp.attributes.add(key="retry.count").value.int_value = i % 5
        if i % 5 == 2:
            sp.attributes.add(key="retry.count").value.double_value = 2.5
        if i % 3 == 1:
            sp.attributes.add(key="http.route").value.string_value = "/abc"[i % 4 :] or "/c"
        if i % 8 == 3:
            sp.attributes.add(key="http.route").value.int_value = 7
        if i % 5 == 0:
            sp.attributes.add(key="feature.on").value.bool_value = i % 2 == 0
        if i % 11 == 4:
            sp.attributes.add(key="feature.on").value.string_value = "true"
    raw = req.SerializeToString()
    rng = random.Random(5)
    inputs = [raw]
    for _ in range(150):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            data[at] = rng.randrange(256)
        inputs.append(bytes(data))
    compared = 0
    for data in inputs:
        try:
            decoded = ExportTraceServiceRequest.FromString(data)
            for rs in decoded.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        Span.FromString(s.SerializeToString())
        except Exception:
            continue
        outcomes = []
        for facts in (scan.trace_facts, lambda *a: None):
            monkeypatch.setattr(module, "trace_facts", facts)
            sink = Sink()
            proc = processor({"policies": FACT_POLICIES}, sink)
            payload = Traces(data)
            payload.whole_traces = True
            try:
                await proc.consume(payload)
            except MalformedDataError:
                outcomes.append(("refused", [], {}, {}))
                continue
            children = {k[1:]: c._value.get() for k, c in proc._children.items()}
            outcomes.append(
                ("ok", [p.to_bytes() for p in sink.got], dict(proc._decided.items), children)
            )
        assert outcomes[0] == outcomes[1], data.hex()
        compared += 1
    assert compared > 20


def test_a_run_id_shaped_workflow_name_is_no_workflow_type() -> None:
    """The workflow_sla policy reads a workflow's type as the workflow processor does
    (``plugins._agentconv.workflow_type_of``): a UUID-shaped ``workflow.name`` is a per-run
    id, not a type; the span name after ``workflow.`` is."""
    uuid = "3f2b8c1e-9d4a-4e6b-8f7c-2a1d5e9b0c34"
    by_type = {"workflow_sla": {"objectives": {uuid: "0s", "support": "1h"}}}
    root = span(
        T,
        1,
        name="workflow.support",
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=2_000_000_000,
        attributes={"workflow.name": uuid},
    )
    # the type is "support" (objective 1h, not missed), not the UUID (objective 0s)
    assert decide({"type": "workflow_sla", **by_type}, request(root)) is Decision.NOT_SAMPLED
    named = span(
        T,
        1,
        name="workflow.support",
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=2_000_000_000,
        attributes={"workflow.name": "triage"},
    )
    by_name = {"workflow_sla": {"objectives": {"triage": "0s"}}}
    assert decide({"type": "workflow_sla", **by_name}, request(named)) is Decision.SAMPLED
