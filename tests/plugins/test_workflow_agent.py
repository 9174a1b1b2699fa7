"""The agent a workflow is stamped with (``workflow.agent.id``): ``gen_ai.agent.name``, else a
``gen_ai.agent.id`` not shaped like a per-run id (the ``gateway`` dialect's ``agent_name``);
a UUID-shaped id names no agent and becomes the workflow's id when the root has none
(docs/agent-conventions.md). Both trace stores, byte for byte alike, on hand-built and hostile
values; the C run-id test against the Python one on hostile and random strings."""

from __future__ import annotations

import random
import string
import struct
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind
from pipeline.telemetry import SelfTelemetry
from plugins._agentconv import AttributeNames
from plugins._agentdialects import gateway_table, looks_like_run_id
from plugins._spanview import TracesView, value_str
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import WorkflowProcessor
from tests.plugins._agent_support import Capture, request, settings, span, tid
from tests.plugins._native_support import ld, require_native, varint
from tests.plugins.test_workflowprocessor_executions import executions, make, run

UUID = "3f1c2b9e-6a1d-4c3e-9b8a-0f2d4e6a8c1b"
ULID = "01HZY3K5V8M9QW2E4R6T7Y8U9P"  # (U is no ULID letter: not one)


# -- hand encoding: values protobuf's classes would not write --------------------------------------
def string_value(raw: bytes) -> bytes:
    return ld(1, raw)


def int_value(n: int) -> bytes:
    return b"\x18" + varint(n)


def bool_value(b: bool) -> bytes:
    return b"\x10" + (b"\x01" if b else b"\x00")


def double_value(x: float) -> bytes:
    return b"\x21" + struct.pack("<d", x)


def attribute(key: str, any_value: bytes) -> bytes:
    return ld(9, ld(1, key.encode()) + ld(2, any_value))


def encoded(s: Span, extra: list[bytes]) -> bytes:
    """A span with hand-encoded attributes appended (field 9, as protobuf would read them)."""
    return s.SerializeToString() + b"".join(extra)


def raw_request(spans: list[bytes]) -> bytes:
    scope = ld(1, ld(1, b"agent.test"))  # ScopeSpans.scope
    return ld(1, ld(2, scope + b"".join(ld(2, s) for s in spans)))


def released(store: str, requests: list[bytes]) -> list[bytes]:
    """What the processor sends on (encoded requests: a hostile value passes through, and
    protobuf's classes would refuse a string that is not UTF-8)."""
    proc = make(store)
    for raw in requests:
        proc._ingest(raw, 0.0)
    proc._release_all("shutdown")
    out = []
    while proc._outbox:
        payload, _, _ = proc._outbox.popleft()
        out.append(payload.to_bytes())
    return out


def stamps_of(payloads: list[bytes]) -> dict[bytes, tuple[str, ...]]:
    """trace id -> the stamp (workflow.type, agent, outcome, workflow.id) of its spans, read
    with the span view (attribute values left encoded)."""
    keys = ("workflow.type", "workflow.agent.id", "workflow.outcome", "workflow.id")
    out: dict[bytes, tuple[str, ...]] = {}
    for payload in payloads:
        for rs in TracesView.FromString(payload).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    a = s.attributes
                    if keys[0] in a:
                        stamp = tuple(value_str(a[k]) for k in keys)
                        assert out.setdefault(s.trace_id, stamp) == stamp
    return out


def both(requests: list[bytes]) -> dict[bytes, tuple[str, ...]]:
    """The stamps of both stores, which must give the same bytes."""
    require_native("_tracewire")
    native = released("native", requests)
    assert native == released("python", requests)
    return stamps_of(native)


def root(trace: int, *, workflow_id: str | None = "wf-1") -> Span:
    attrs = {"workflow.name": "support"}
    if workflow_id is not None:
        attrs["workflow.id"] = workflow_id
    return span(trace, 1, None, "workflow.support", attrs=attrs)


def child(trace: int, span_id: int, attrs: dict[str, Any], name: str = "step") -> Span:
    return span(trace, span_id, 1, name, attrs=attrs)


# -- the rule, on both stores ------------------------------------------------------------------
S = string_value
CASES: list[tuple[str, list[tuple[str, bytes]], str, str | None]] = [
    # (case, root attributes appended, agent stamped, workflow.id when the root has none)
    ("name only", [("gen_ai.agent.name", S(b"planner"))], "planner", None),
    ("id only (logical)", [("gen_ai.agent.id", S(b"research-agent"))], "research-agent", None),
    ("id UUID-shaped", [("gen_ai.agent.id", S(UUID.encode()))], "unknown", UUID),
    ("id ULID-shaped", [("gen_ai.agent.id", S(b"01ARZ3NDEKTSV4RRFFQ69G5FAV"))], "unknown",
     "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ("id prefixed UUID", [("gen_ai.agent.id", S(b"pyd_ai_" + UUID.replace("-", "").encode()))],
     "unknown", "pyd_ai_" + UUID.replace("-", "")),
    ("id not a ULID", [("gen_ai.agent.id", S(ULID.encode()))], ULID, None),
    ("both: the name wins",
     [("gen_ai.agent.id", S(b"research-agent")), ("gen_ai.agent.name", S(b"planner"))],
     "planner", None),
    ("name UUID-shaped, id logical",
     [("gen_ai.agent.name", S(UUID.encode())), ("gen_ai.agent.id", S(b"research-agent"))],
     "research-agent", UUID),
    ("both run ids: the first is the run's",
     [("gen_ai.agent.name", S(UUID.encode())), ("gen_ai.agent.id", S(b"f" * 32))],
     "unknown", UUID),
    ("empty name", [("gen_ai.agent.name", S(b"")), ("gen_ai.agent.id", S(b"research-agent"))],
     "research-agent", None),
    ("empty both", [("gen_ai.agent.name", S(b"")), ("gen_ai.agent.id", S(b""))], "unknown", None),
    ("huge logical id", [("gen_ai.agent.id", S(b"agent-" + b"x" * 100_000))],
     "agent-" + "x" * 100_000, None),
    ("huge hex id", [("gen_ai.agent.id", S(b"ab" * 50_000))], "unknown", "ab" * 50_000),
    ("hex with a newline", [("gen_ai.agent.id", S(b"0123456789abcdef\n"))],
     "0123456789abcdef\n", None),
    ("non-UTF-8 short", [("gen_ai.agent.id", S(b"agent-\xff\xfe"))], "agent-\ufffd\ufffd", None),
    ("non-UTF-8 hex-like", [("gen_ai.agent.id", S(b"0123456789abcdef\xff"))],
     "0123456789abcdef\ufffd", None),
    ("non-UTF-8 long", [("gen_ai.agent.id", S(b"\xff" * 300))], "unknown", None),
    ("truncated value", [("gen_ai.agent.id", b"\x0a\x09agent")], "agent", None),
    ("int", [("gen_ai.agent.id", int_value(42))], "42", None),
    ("int of 19 digits (hex-shaped)", [("gen_ai.agent.id", int_value(1234567890123456789))],
     "unknown", "1234567890123456789"),
    ("bool", [("gen_ai.agent.id", bool_value(True))], "true", None),
    ("double", [("gen_ai.agent.id", double_value(1.5))], "1.5", None),
    ("bytes", [("gen_ai.agent.id", ld(7, b"research-agent"))], "unknown", None),
    ("array", [("gen_ai.agent.id", ld(5, ld(1, S(b"research-agent"))))], "unknown", None),
    ("int name, logical id",
     [("gen_ai.agent.name", int_value(7)), ("gen_ai.agent.id", S(b"research-agent"))], "7", None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "attrs", "agent", "run_id"), CASES, ids=[c[0] for c in CASES])
def test_the_root_names_its_agent(
    case: str, attrs: list[tuple[str, bytes]], agent: str, run_id: str | None
) -> None:
    extra = [attribute(k, v) for k, v in attrs]
    tool = child(1, 2, {"gen_ai.operation.name": "execute_tool"}, "execute_tool t")
    # with the root's own workflow.id, first and last in its trace; without one
    for wf_id in ("wf-1", None):
        for order in (0, 1):
            spans = [encoded(root(1, workflow_id=wf_id), extra), tool.SerializeToString()]
            got = both([raw_request(spans[::-1] if order else spans)])
            expected_id = wf_id or run_id or tid(1).hex()
            assert got == {tid(1): ("support", agent, "success", expected_id)}, (case, wf_id)


def test_a_run_id_names_no_agent_the_next_span_naming_one_does() -> None:
    """A UUID-shaped gen_ai.agent.id on the root: the agent comes from a span below (its
    gen_ai.agent.id, logical), never from a run id on another span."""
    spans = [
        encoded(root(1, workflow_id=None), [attribute("gen_ai.agent.id", S(UUID.encode()))]),
        child(1, 2, {"gen_ai.agent.id": "a0b1c2d3e4f5a6b7c8d9"}).SerializeToString(),
        # a tool call naming its agent (read with the tool call's facts)
        child(
            1,
            3,
            {"gen_ai.operation.name": "execute_tool", "gen_ai.agent.id": "helper"},
            "execute_tool t",
        ).SerializeToString(),
        child(1, 4, {"gen_ai.agent.name": "late"}).SerializeToString(),
    ]
    assert both([raw_request(spans)]) == {tid(1): ("support", "helper", "success", UUID)}
    # spread over requests, the root last
    got = both([raw_request([s]) for s in spans[1:] + spans[:1]])
    assert got == {tid(1): ("support", "helper", "success", UUID)}


def test_an_agent_run_below_the_root_named_by_its_id() -> None:
    spans = [
        root(1),
        child(
            1,
            2,
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "research-agent"},
            "invoke_agent",
        ),
    ]
    assert both([request(spans).to_bytes()]) == {
        tid(1): ("support", "research-agent", "success", "wf-1")
    }


def test_renamed_attributes_are_read() -> None:
    """The ``attributes:`` option: the agent's id key renamed (the gateway dialect's table
    follows it, and so does the processor)."""
    require_native("_tracewire")
    names = AttributeNames(agent_id="myco.agent.id")
    table = gateway_table(names)
    assert table.labels["agent_name"] == [names.agent_name, names.agent_id]
    spans = [span(1, 1, None, "workflow.support", attrs={"myco.agent.id": "research-agent"})]
    got = []
    for native in (True, False):
        proc = WorkflowProcessor(
            settings(Kind.PROCESSOR, "workflow", SelfTelemetry()),
            WorkflowConfig.model_validate(
                {"wait_duration": "10s", "attributes": {"agent_id": "myco.agent.id"}}
            ),
            Capture(),
            native=native,
        )
        got.append(executions(run(proc, [request(spans).to_bytes()])))
    assert got[0] == got[1] == {tid(1): ("support", "research-agent", "success", tid(1).hex())}


def test_the_rule_is_the_gateway_dialects_agent_name() -> None:
    """The processor reads what the gateway table lists for agent_name, in order."""
    for names in (AttributeNames(), AttributeNames(agent_name="a.n", agent_id="a.i")):
        table = gateway_table(names)
        workflow = next(r for r in table.rules if r.role.value == "workflow")
        assert workflow.labels["agent_name"] == [names.agent_name, names.agent_id]
        assert table.labels["agent_name"] == [names.agent_name, names.agent_id]


# -- looks_like_run_id: C against Python -----------------------------------------------------------
def hostile_strings(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    hexd = string.hexdigits
    crock = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    pre = string.ascii_letters + "_-"
    out: list[bytes] = [
        b"", b"\n", b"0" * 15, b"0" * 16, b"0" * 16 + b"\n", b"\n" + b"0" * 16,
        UUID.encode(), UUID.upper().encode(), UUID.replace("-", "").encode(),
        b"call_" + UUID.encode(), b"pyd_ai_" + UUID.replace("-", "").encode(),
        b"-" * 40 + UUID.encode(), UUID.encode() + b"-", UUID[:-1].encode(),
        UUID.encode() + b"0", b"a" + UUID.encode(), b"1" + UUID.encode(),
        b"01ARZ3NDEKTSV4RRFFQ69G5FAV", b"01ARZ3NDEKTSV4RRFFQ69G5FAVX", ULID.encode(),
        b"01arz3ndektsv4rrffq69g5fav", "".join(map(chr, range(0xFF10, 0xFF20))).encode(),
        b"0123456789abcdef\xff", b"\xc3\xa9" * 16, b"\x00" * 16, b"a" * 1_000_000,
        b"research-agent", b"agent-0", b"x" * 16,
    ]  # fmt: skip
    for _ in range(n):
        kind = rng.randrange(6)
        if kind == 0:  # a UUID, dashes dropped at random, a prefix, a mutation
            u = "-".join("".join(rng.choice(hexd) for _ in range(g)) for g in (8, 4, 4, 4, 12))
            u = "".join(c for c in u if c != "-" or rng.random() < 0.7)
            u = "".join(rng.choice(pre) for _ in range(rng.randrange(6))) + u
            raw = bytearray(u.encode())
            for _ in range(rng.randrange(3)):
                op = rng.randrange(3)
                at = rng.randrange(len(raw) + 1)
                if op == 0:
                    raw.insert(at, rng.choice(b"-_aZ0\n\xff"))
                elif op == 1 and at < len(raw):
                    del raw[at]
                elif at < len(raw):
                    raw[at] = rng.randrange(256)
            out.append(bytes(raw))
        elif kind == 1:  # hex of any length
            out.append("".join(rng.choice(hexd) for _ in range(rng.randrange(40))).encode())
        elif kind == 2:  # ULID-like
            alphabet = crock + "ILOU" if rng.random() < 0.3 else crock
            out.append(
                "".join(rng.choice(alphabet) for _ in range(rng.choice((25, 26, 26, 27)))).encode()
            )
        elif kind == 3:  # random bytes
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(48))))
        elif kind == 4:  # prefix characters and hex
            chars = pre + hexd
            out.append("".join(rng.choice(chars) for _ in range(rng.randrange(30, 44))).encode())
        else:  # random text with non-ASCII characters
            chars = hexd + "-_é€\u00a0\U0001f600"
            out.append("".join(rng.choice(chars) for _ in range(rng.randrange(40))).encode())
    return out


def test_the_c_run_id_test_is_the_python_one() -> None:
    tw = require_native("_tracewire")
    hits = 0
    for raw in hostile_strings(12, 20_000):
        expected = looks_like_run_id(raw.decode("utf-8", "replace"))
        assert tw.looks_like_run_id(raw) is expected, raw
        hits += expected
    assert hits > 2_000  # (the random shapes reach both answers)
