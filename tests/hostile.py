"""Measuring what hostile input costs, for the decoders' amplification and loop-stall tests:
CPU time and Python memory in the test's own process (never wall-clock thresholds on the
work itself), and how long the event loop stops answering while a receiver decodes."""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pipeline._pbwire import encode_varint


def cost(fn: Callable[[], Any]) -> tuple[float, int]:
    """CPU seconds of ``fn()`` (run once untraced), and the peak of the Python memory it
    allocates (run again under ``tracemalloc``).

    The CPU is this thread's (threads other tests left running are not ``fn``'s) with the
    cyclic collector paused: a full collection that ``fn``'s allocations happen to trigger
    walks the whole heap the test session built, which is not ``fn``'s cost."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        started = time.thread_time()
        fn()
        cpu = time.thread_time() - started
    finally:
        if enabled:
            gc.enable()
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return cpu, peak


class LoopLag:
    """The longest time the running event loop took to come back to a task that asked to
    run every ``interval`` seconds: how long it was unable to serve anybody."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.worst = max(self.worst, loop.time() - before - self.interval)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def probe_during(
    work: Awaitable[Any], probe: Callable[[], Awaitable[Any]], pause: float = 0.01
) -> tuple[Any, float, list[float], float]:
    """Run ``work`` while probing: ``probe()`` again and again until ``work`` is done.
    Returns ``work``'s result, its duration, every probe's latency and the loop's worst
    lag meanwhile."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    async with LoopLag() as lag:
        started = loop.time()
        task = asyncio.ensure_future(work)
        while not task.done():
            t0 = loop.time()
            await probe()
            latencies.append(loop.time() - t0)
            await asyncio.sleep(pause)
        result = await task
        duration = loop.time() - started
    return result, duration, latencies, lag.worst


def mutate(data: bytes, rng: random.Random, other: bytes) -> bytes:
    """``data`` with one to four seeded random changes: a bit flipped, a byte overwritten with
    an interesting one, cut short, random bytes inserted, a slice repeated, a piece of
    ``other`` spliced in, a huge varint length inserted."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(7)
        at = rng.randrange(len(buf) + 1)
        if how == 0 and buf:  # flip a bit
            i = min(at, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif how == 1 and buf:  # overwrite a byte with an interesting one
            buf[min(at, len(buf) - 1)] = rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x22, 0x7B])
        elif how == 2:  # truncate
            del buf[at:]
        elif how == 3:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif how == 4:  # duplicate a slice
            end = min(len(buf), at + rng.randint(1, 32))
            buf[at:at] = buf[at:end]
        elif how == 5:  # splice in a piece of another valid request
            start = rng.randrange(len(other))
            buf[at:at] = other[start : start + rng.randint(1, 64)]
        else:  # a huge varint length
            buf[at:at] = b"\xff\xff\xff\xff\x0f"
    return bytes(buf)


def refused_requests(service: Any) -> float:
    """The requests a running gateway's receivers counted as refused, whatever the reason
    (``otelcol_receiver_refused_requests``, every label)."""
    return float(
        sum(
            s.value
            for family in service.telemetry.registry.collect()
            if family.name == "otelcol_receiver_refused_requests"
            for s in family.samples
            if s.name.endswith("_total")
        )
    )


# -- corrupt but framing-valid agent traces ------------------------------------------------------
# Hand-written protobuf (not the generated classes: they refuse to build most of these), so each
# request is well framed and wrong in one way an agent component reads.
def _tag(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def _bytes(field: int, data: bytes) -> bytes:
    return _tag(field, 2) + encode_varint(len(data)) + data


def _fixed64(field: int, n: int) -> bytes:
    return _tag(field, 1) + (n & (2**64 - 1)).to_bytes(8, "little")


def any_string(value: bytes) -> bytes:
    """An ``AnyValue`` holding ``value`` as its string (any bytes, valid UTF-8 or not)."""
    return _bytes(1, value)


def attribute(key: bytes, value: bytes) -> bytes:
    """A ``KeyValue`` whose value is the encoded ``AnyValue`` ``value``."""
    return _bytes(1, key) + _bytes(2, value)


def nested_any_value(depth: int, kind: str = "array") -> bytes:
    """An ``AnyValue`` ``depth`` levels deep: arrays of arrays, or kvlists of kvlists."""
    value = any_string(b"leaf")
    for _ in range(depth):
        if kind == "array":
            value = _bytes(5, _bytes(1, value))  # array_value { values: value }
        else:
            value = _bytes(6, _bytes(1, attribute(b"k", value)))  # kvlist_value {values {..}}
    return value


def raw_span(
    trace_id: bytes,
    span_id: bytes,
    name: bytes,
    *,
    parent: bytes = b"",
    kind: int = 1,
    start: int = 0,
    end: int = 0,
    attributes: Iterable[bytes] = (),
    error: bool = False,
) -> bytes:
    """An encoded ``Span``; ``attributes`` are encoded ``KeyValue`` messages."""
    out = _bytes(1, trace_id) + _bytes(2, span_id)
    if parent:
        out += _bytes(4, parent)
    out += _bytes(5, name) + _tag(6, 0) + encode_varint(kind)
    out += _fixed64(7, start) + _fixed64(8, end)
    for a in attributes:
        out += _bytes(9, a)
    if error:
        out += _bytes(15, _tag(3, 0) + encode_varint(2))  # status { code: ERROR }
    return out


def raw_traces(
    spans: Iterable[bytes], service: bytes = b"agent-svc", resource_attributes: Iterable[bytes] = ()
) -> bytes:
    """An ``ExportTraceServiceRequest`` of one resource (``service.name``, then the encoded
    ``KeyValue`` messages ``resource_attributes``) and one scope."""
    resource = _bytes(1, attribute(b"service.name", any_string(service)))
    resource += b"".join(_bytes(1, a) for a in resource_attributes)
    scope = _bytes(1, _bytes(1, b"agent.test")) + b"".join(_bytes(2, s) for s in spans)
    return _bytes(1, _bytes(1, resource) + _bytes(2, scope))


def agent_workflow(
    trace_id: bytes,
    first_span: int,
    start_ns: int,
    *,
    workflow: bytes = b"workflow.good",
    agent: bytes = b"agent-good",
    tool: bytes = b"search",
    duration_ns: int = 100_000_000,
    tool_start_ns: int | None = None,
    tool_end_ns: int | None = None,
    extra: Iterable[bytes] = (),
) -> list[bytes]:
    """A workflow root (``workflow.id``, ``gen_ai.agent.name``) with one MCP tool call under
    it: the spans the agent components derive an execution and a tool call from."""
    root_id = first_span.to_bytes(8, "big")
    root = raw_span(
        trace_id,
        root_id,
        workflow,
        start=start_ns,
        end=start_ns + duration_ns,
        attributes=[
            attribute(b"workflow.id", any_string(b"wf-" + trace_id.hex().encode())),
            attribute(b"gen_ai.agent.name", any_string(agent)),
            *extra,
        ],
    )
    tool_call = raw_span(
        trace_id,
        (first_span + 1).to_bytes(8, "big"),
        b"execute_tool " + tool,
        parent=root_id,
        kind=3,  # client
        start=start_ns + 10_000_000 if tool_start_ns is None else tool_start_ns,
        end=start_ns + 50_000_000 if tool_end_ns is None else tool_end_ns,
        attributes=[
            attribute(b"gen_ai.operation.name", any_string(b"execute_tool")),
            attribute(b"gen_ai.tool.name", any_string(tool)),
            attribute(b"mcp.server.name", any_string(b"web")),
        ],
    )
    return [tool_call, root]


def hostile_agent_traces(start_ns: int) -> list[tuple[str, bytes]]:
    """Well-framed trace requests an agent pipeline must survive, each wrong in one way:
    invalid UTF-8 in agent/tool attributes and names, huge attribute values, AnyValues nested
    thousands deep, a request of 100,000 spans, missing, short, long and zero ids, duplicate
    span ids and parent cycles, tool calls with absurd timestamps. Trace ids start with
    ``0xbad``; the workflows are ``workflow.hostile``."""

    def tid(n: int) -> bytes:
        return b"\x0b\xad" + n.to_bytes(14, "big")

    def wf(n: int, **kw: Any) -> list[bytes]:
        kw.setdefault("workflow", b"workflow.hostile")
        kw.setdefault("agent", b"agent-hostile")
        return agent_workflow(tid(n), 1, start_ns, **kw)

    out: list[tuple[str, bytes]] = []
    bad_utf8 = b"agent-\xff\xfe\xc3(\xed\xa0\x80"
    out.append(("bad UTF-8 agent name", raw_traces(wf(1, agent=bad_utf8))))
    out.append(("bad UTF-8 tool name", raw_traces(wf(2, tool=bad_utf8))))
    out.append(("bad UTF-8 workflow name", raw_traces(wf(3, workflow=b"workflow.\xc0\xaf"))))
    out.append(("bad UTF-8 service", raw_traces(wf(4), service=b"svc-\x80")))
    huge = b"h" * (1 << 20)
    out.append(("huge agent name", raw_traces(wf(5, agent=huge))))
    out.append(("huge tool name", raw_traces(wf(6, tool=huge[: 512 << 10]))))
    out.append(
        (
            "huge attributes",
            raw_traces(wf(7, extra=[attribute(b"gen_ai.prompt", any_string(huge))] * 2)),
        )
    )
    # as deep as a full parse allows (100 messages: upb's limit), and far deeper
    for kind, depth in (("array", 45), ("kvlist", 30), ("array", 3000), ("kvlist", 3000)):
        deep = attribute(b"gen_ai.tool.call.arguments", nested_any_value(depth, kind))
        out.append((f"{kind} nested {depth} deep", raw_traces(wf(8, extra=[deep]))))
    # 100,000 spans: 1,000 workflows of a root, a tool call and 98 children
    many: list[bytes] = []
    for t in range(1000):
        many += wf(100 + t)
        root = (1).to_bytes(8, "big")
        many += [
            raw_span(tid(100 + t), (10 + i).to_bytes(8, "big"), b"step", parent=root,
                     start=start_ns, end=start_ns + 1)
            for i in range(98)
        ]  # fmt: skip
    out.append(("100,000 spans", raw_traces(many)))
    for what, trace_id, span_id in (
        ("no ids", b"", b""),
        ("short ids", b"\x0b\xad\x01", b"\x01"),
        ("long ids", tid(9) * 2, b"\x01" * 20),
        ("zero ids", bytes(16), bytes(8)),
    ):
        spans = [
            raw_span(trace_id, span_id, b"workflow.hostile", start=start_ns, end=start_ns + 1,
                     attributes=[attribute(b"gen_ai.agent.name", any_string(b"agent-hostile"))]),
            raw_span(trace_id, span_id, b"execute_tool search", parent=span_id, kind=3,
                     start=start_ns, end=start_ns + 1,
                     attributes=[attribute(b"gen_ai.tool.name", any_string(b"search"))]),
        ]  # fmt: skip
        out.append((what, raw_traces(spans)))
    dup = wf(10) * 50  # the same two span ids fifty times
    out.append(("duplicate span ids", raw_traces(dup)))
    a, b = (1).to_bytes(8, "big"), (2).to_bytes(8, "big")
    cycle = [
        raw_span(tid(11), a, b"workflow.hostile", parent=b, start=start_ns, end=start_ns + 1),
        raw_span(tid(11), b, b"execute_tool search", parent=a, kind=3, start=start_ns,
                 end=start_ns + 1,
                 attributes=[attribute(b"gen_ai.tool.name", any_string(b"search"))]),
        raw_span(tid(11), (3).to_bytes(8, "big"), b"self", parent=(3).to_bytes(8, "big")),
    ]  # fmt: skip
    out.append(("parent cycle", raw_traces(cycle)))
    for n, (what, t0, t1) in enumerate(
        (
            ("tool ends before it starts", start_ns + 10**12, start_ns),
            ("tool at the end of time", 2**64 - 1, 2**64 - 1),
            ("tool from 0 to the end of time", 0, 2**64 - 1),
            ("tool before the epoch", 2**63, 1),
        )
    ):
        out.append((what, raw_traces(wf(20 + n, tool_start_ns=t0, tool_end_ns=t1))))
    return out
