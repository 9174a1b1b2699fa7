"""One release decided in one call (``scan.decide_request``: ``_tailscan.decide_request`` in C
and its Python twin): the C call and the twin agree on every input (test mixes, the spans of
real libraries recorded in ``tests/data/agent_sources/``, the benchmark's load, mutated and
hostile requests); the processor decides, counts and passes on the same with the call and
without it (each policy read as before)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import MalformedDataError, Traces
from plugins.tailsamplingprocessor import scan
from plugins.tailsamplingprocessor.config import TailSamplingConfig
from plugins.tailsamplingprocessor.policies import (
    ERROR_TYPE,
    TOOL_MARKERS,
    compile_program,
    fact_keys,
    tool_check,
)
from tests.plugins.tailsampling.test_processor import (
    FACT_POLICIES as _FACT_POLICIES,
)
from tests.plugins.tailsampling.test_processor import (
    MIXED_POLICIES as _MIXED_POLICIES,
)
from tests.plugins.tailsampling.test_processor import (
    Sink,
    mixed_request,
    mutations,
    processor,
)

MIXED_POLICIES = cast(list[dict[str, Any]], _MIXED_POLICIES)
FACT_POLICIES = cast(list[dict[str, Any]], _FACT_POLICIES)

CORPUS = Path(__file__).resolve().parents[2] / "data" / "agent_sources"

# every policy with an op of the program, in and / drop too
PROGRAM_POLICIES: list[dict[str, Any]] = [
    *MIXED_POLICIES,
    {"name": "outcomes", "type": "workflow_outcome",
     "workflow_outcome": {"outcomes": ["failed", "timeout", "cancelled"]}},
    {"name": "sla-typed", "type": "workflow_sla",
     "workflow_sla": {"objectives": {"support": "0.5s", "other": "1m"}}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 5000}},
    {"name": "band", "type": "latency", "latency": {"threshold_ms": 1, "upper_threshold_ms": 2000}},
    {"name": "small", "type": "span_count", "span_count": {"min_spans": 2, "max_spans": 3}},
    {"name": "always", "type": "always_sample"},
    {"name": "all", "type": "probabilistic", "probabilistic": {"sampling_percentage": 100}},
    {"name": "salted", "type": "probabilistic",
     "probabilistic": {"sampling_percentage": 50, "hash_salt": "x"}},
    {"name": "and", "type": "and", "and": {"and_sub_policy": [
        {"name": "a1", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "a2", "type": "workflow_sla", "workflow_sla": {"default": "10s"}}]}},
    {"name": "drop-unset", "type": "drop", "drop": {"drop_sub_policy": [
        {"name": "d1", "type": "status_code", "status_code": {"status_codes": ["UNSET"]}},
        {"name": "d2", "type": "workflow_outcome",
         "workflow_outcome": {"outcomes": ["cancelled"]}}]}},
    {"name": "drop-tool", "type": "drop", "drop": {"drop_sub_policy": [
        {"name": "t1", "type": "tool_call_failed"},
        {"name": "t2", "type": "span_count", "span_count": {"min_spans": 30}}]}},
]  # fmt: skip


def _config(policies: list[dict[str, Any]], **kw: Any) -> TailSamplingConfig:
    return TailSamplingConfig.model_validate({"policies": policies, **kw})


def _args(cfg: TailSamplingConfig) -> tuple[Any, ...]:
    keys = fact_keys(cfg.policies)
    program = compile_program(cfg.policies, {k: i for i, k in enumerate(keys)})
    assert program is not None
    return tuple(k.encode() for k in keys), program


def plain_mixed(n: int = 60) -> bytes:
    """``mixed_request`` without its span whose trace id is not written first."""
    req = ExportTraceServiceRequest.FromString(mixed_request(n))
    del req.resource_spans[-1]
    return req.SerializeToString()


def stamped(raw: bytes) -> bytes:
    """``raw`` with workflow attributes on some spans (as the workflow processor stamps them),
    a duration given in several encodings, failed tool calls told by error.type and by the
    MCP method, and attributes written twice."""
    req = ExportTraceServiceRequest.FromString(raw)
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    for i, sp in enumerate(spans):
        if i % 3 == 0:
            sp.attributes.add(key="workflow.type").value.string_value = (
                "support" if i % 2 else "other"
            )
        if i % 5 == 0:
            d = sp.attributes.add(key="workflow.duration").value
            if i % 4 == 0:
                d.double_value = 0.25 * i
            elif i % 4 == 1:
                d.int_value = i
            elif i % 4 == 2:
                d.string_value = "12.5"
            else:
                d.double_value = -1.0
        if i % 7 == 0:
            sp.attributes.add(key="error.type").value.string_value = "Timeout"
        if i % 9 == 0:
            sp.attributes.add(key="mcp.method.name").value.string_value = "tools/call"
            sp.status.code = 2
        if i % 13 == 0:  # the last value counts (AttrView.get)
            sp.attributes.add(key="gen_ai.operation.name").value.string_value = "chat"
        if i % 17 == 0:
            sp.attributes.add(key="workflow.outcome").value.string_value = "timeout"
    return req.SerializeToString()


def corpus() -> list[tuple[str, bytes]]:
    """Every recorded request of the real libraries, encoded."""
    out = []
    for path in sorted(CORPUS.glob("*/*.json")):
        data = json.loads(path.read_text())
        items = data if isinstance(data, list) else [data]
        for k, item in enumerate(items):
            if not isinstance(item, dict) or "resourceSpans" not in item:
                continue
            msg = Parse(json.dumps(item), ExportTraceServiceRequest())
            out.append((f"{path.parent.name}/{path.stem}#{k}", msg.SerializeToString()))
    return out


def load_requests() -> list[bytes]:
    """The benchmark's load (benchmarks/agent_pipeline.py: workflow-shaped traces)."""
    from benchmarks.agent_components import requests
    from benchmarks.agent_pipeline import Load

    return requests(Load(attrs_per_span=8, spans_per_trace=10, traces_per_request=20), 4)


def inputs() -> list[bytes]:
    base = [plain_mixed(), stamped(plain_mixed(48)), *load_requests()]
    base += [raw for _, raw in corpus()]
    hostile = [b"", b"\x0a", b"\x0a\x00", b"\x0a\x02\x12\x00", b"\xff" * 12, b"\x0a\x80"]
    hostile.append(b"\x0a\x14\x12\x12\x12\x10" + b"\x00" * 16)  # a span that is all trace id
    return base + hostile + mutations(base[1], 300, 3) + mutations(base[0], 100, 4)


def _native() -> Any:
    if scan._tailscan is None:
        pytest.skip("the C accelerator _tailscan is not built")
    return scan._tailscan


@pytest.mark.parametrize("first_match", [False, True])
def test_the_c_call_and_its_twin_agree(first_match: bool) -> None:
    native = _native()
    cfg = _config(PROGRAM_POLICIES)
    keys, program = _args(cfg)
    tools = (None, tool_check(cfg.policies))
    taken = deferred = decided = 0
    for data in inputs():
        for tool in tools:
            args = (data, keys, ERROR_TYPE, TOOL_MARKERS, program, first_match, tool)
            got = native.decide_request(*args)
            assert got == scan.decide_request_python(*args), data.hex()
            if got is not None:
                taken += 1
                deferred += len(got[1])
                decided += sum(1 for e in got[0] if e[2] is not None)
    assert taken and deferred and decided  # every kind of answer was compared


def test_the_c_call_refuses_malformed_programs_as_its_twin() -> None:
    native = _native()
    data = plain_mixed(6)
    keys = (b"workflow.outcome",)
    programs: list[Any] = [
        ((99,),), ((0, 9),), ((5, 3, ()),), ((5, 0, [b"x"]),), ((9, ((0, 0),), 7),),
        ((6, 0, 0, 0, ((b"a", "x"),), None),), ("x",), ((1, -1, 0),), ((2, 2**64, 0),),
    ]  # fmt: skip
    for program in programs:
        args = (data, keys, ERROR_TYPE, TOOL_MARKERS, program, False, None)
        with pytest.raises((ValueError, TypeError)):
            native.decide_request(*args)
        with pytest.raises((ValueError, TypeError, IndexError)):
            scan.decide_request_python(*args)
    with pytest.raises(TypeError):
        native.decide_request(data, keys, ERROR_TYPE, TOOL_MARKERS, (), False, (b"a",))
    with pytest.raises(ValueError):
        native.decide_request(data, (b"k",) * 33, ERROR_TYPE, TOOL_MARKERS, (), False, None)


def test_a_failing_check_is_raised_and_a_refusal_defers() -> None:
    native = _native()
    cfg = _config([{"name": "tool", "type": "tool_call_failed"}])
    keys, program = _args(cfg)
    data = stamped(plain_mixed(12))

    def boom(_: bytes) -> int:
        raise RuntimeError("check failed")

    def refuse(_: bytes) -> int:
        raise ValueError("no")

    tool = tool_check(cfg.policies)
    assert tool is not None
    with pytest.raises(RuntimeError):
        native.decide_request(data, keys, ERROR_TYPE, TOOL_MARKERS, program, False,
                              (*tool[:4], boom))  # fmt: skip
    got = native.decide_request(data, keys, ERROR_TYPE, TOOL_MARKERS, program, False,
                                (*tool[:4], refuse))  # fmt: skip
    assert got is not None and got[1]  # the failed tool spans: read by the policy
    assert got == scan.decide_request_python(data, keys, ERROR_TYPE, TOOL_MARKERS, program,
                                             False, (*tool[:4], refuse))  # fmt: skip


def test_programs_only_for_policies_with_an_op() -> None:
    keys = {k: i for i, k in enumerate(fact_keys(_config(PROGRAM_POLICIES).policies))}
    assert compile_program(_config(PROGRAM_POLICIES).policies, keys) is not None
    for policy in FACT_POLICIES:  # numeric/string/boolean attributes, tiers: read the spans
        cfg = _config([policy])
        k = {key: i for i, key in enumerate(fact_keys(cfg.policies))}
        if policy["type"] in ("numeric_attribute", "string_attribute", "boolean_attribute",
                              "workflow_complexity_tier"):  # fmt: skip
            assert compile_program(cfg.policies, k) is None
    rate = _config(
        [{"name": "r", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 5}}]
    )
    assert compile_program(rate.policies, {}) is None
    named = _config(
        [{"name": "t", "type": "tool_call_failed", "tool_call_failed": {"tools": ["a"]}}]
    )
    assert tool_check(named.policies) is None


async def _run(policies: list[dict[str, Any]], data: bytes, one_call: bool,
               **kw: Any) -> tuple[Any, ...]:  # fmt: skip
    sink = Sink()
    proc = processor({"policies": policies, **kw}, sink)
    assert proc._program is not None
    if not one_call:
        proc._program = None
    payload = Traces(data)
    payload.whole_traces = True
    try:
        await proc.consume(payload)
    except MalformedDataError:
        return ("refused",)
    children = {k[1:]: c._value.get() for k, c in proc._children.items()}
    return ("ok", [p.to_bytes() for p in sink.got], dict(proc._decided.items), children)


@pytest.mark.parametrize("first_match", [False, True])
async def test_the_processor_decides_the_same_with_one_call(first_match: bool) -> None:
    """Decisions, output bytes and per-policy counts: the same with the one call as with each
    policy read as before, on the mixes, the recorded real-library requests, the load and
    mutated requests; late spans then follow the cached decisions."""
    _native()  # without the C module the processor keeps the per-trace path
    kept = dropped = 0
    for data in inputs():
        for policies in (PROGRAM_POLICIES, MIXED_POLICIES):
            a = await _run(policies, data, True, sample_on_first_match=first_match)
            b = await _run(policies, data, False, sample_on_first_match=first_match)
            assert a == b, data.hex()
            if a[0] == "ok":
                kept += sum(a[2].values())
                dropped += sum(not v for v in a[2].values())
    assert kept and dropped


async def test_late_spans_follow_decisions_taken_in_one_call() -> None:
    _native()
    data = stamped(plain_mixed(24))
    sink = Sink()
    proc = processor({"policies": MIXED_POLICIES}, sink)
    payload = Traces(data)
    payload.whole_traces = True
    await proc.consume(payload)
    decided = dict(proc._decided.items)
    assert True in decided.values() and False in decided.values()
    sink.got.clear()
    again = Traces(data)  # every span again, late: each follows its trace's decision
    again.whole_traces = True
    await proc.consume(again)
    kept = {t for t, v in decided.items() if v}
    assert set(sink.ids()) == kept
    late = {k[1:]: c._value.get() for k, c in proc._children.items() if "late" in str(k)}
    assert late or proc._children  # counted as late spans
