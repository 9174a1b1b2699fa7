"""The ``workflow`` processor: grouping across requests, stamping, limits, late spans."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind, Seconds
from pipeline.telemetry import SelfTelemetry
from plugins.workflowprocessor import native as native_module
from plugins.workflowprocessor import processor as processor_module
from plugins.workflowprocessor import store as store_module
from plugins.workflowprocessor import wire as wire_module
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import WorkflowProcessor
from tests.plugins._agent_support import Capture, attrs_of, request, settings, span, tid
from tests.plugins._native_support import both_paths
from tests.support import wait_until

# every test runs on the C accelerator and on the pure-Python fallback (the module is loaded
# once, when the processor's module is imported)
accelerator = both_paths(
    "_tracewire", lambda monkeypatch: monkeypatch.setattr(processor_module, "_tracewire", None)
)


def make(
    telemetry: SelfTelemetry | None = None, **options: object
) -> tuple[WorkflowProcessor, Capture, SelfTelemetry]:
    telemetry = telemetry or SelfTelemetry()
    cfg = WorkflowConfig.model_validate({"wait_duration": "100ms", **options})
    capture = Capture()
    proc = WorkflowProcessor(settings(Kind.PROCESSOR, "workflow", telemetry), cfg, capture)
    return proc, capture, telemetry


def workflow_spans(trace: int, *, error: str | None = None, tool_error: str | None = None):
    """root(1) -> agent(2) -> tool(3), tool(4); 4 spans, 2 tool calls, depth 3."""
    root = span(
        trace,
        1,
        None,
        "workflow.support",
        attrs={"workflow.id": f"wf-{trace}", "workflow.name": "support"},
        error=error,
    )
    agent = span(
        trace,
        2,
        1,
        "invoke_agent planner",
        attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "agent-7"},
    )
    tools = [
        span(
            trace,
            3 + i,
            2,
            f"execute_tool t{i}",
            kind=Span.SPAN_KIND_CLIENT,
            attrs={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": f"t{i}",
                "mcp.server.name": "docs",
            },
            error=tool_error if i == 0 else None,
        )
        for i in range(2)
    ]
    return root, agent, tools


async def test_children_before_root_in_other_requests_are_stamped() -> None:
    proc, capture, tel = make()
    await proc.start(None)  # type: ignore[arg-type]
    root, agent, tools = workflow_spans(1, tool_error="upstream timed out after 5s")
    await proc.consume(request([tools[0]]))
    await proc.consume(request([tools[1], agent], service="other-svc"))
    await proc.consume(request([root]))
    assert capture.payloads == []  # held until the wait passes
    await wait_until(lambda: len(capture.spans()) == 4, within=5)
    got = {s.name: (res, attrs_of(s)) for res, s in capture.spans()}
    for name in ("workflow.support", "invoke_agent planner", "execute_tool t0", "execute_tool t1"):
        a = got[name][1]
        assert a["workflow.id"] == "wf-1"
        assert a["workflow.type"] == "support"
        assert a["workflow.agent.id"] == "agent-7"
        assert a["workflow.outcome"] == "success"
        assert a["workflow.complexity_tier"] == "simple"
    assert got["execute_tool t0"][1]["error.type"] == "timeout"
    assert "error.type" not in got["execute_tool t1"][1]
    # resources kept per span
    assert got["execute_tool t1"][0].attributes[0].value.string_value == "other-svc"
    assert got["workflow.support"][0].attributes[0].value.string_value == "agent-svc"
    # no duplicated keys on the root, which already had workflow.id
    keys = [kv.key for kv in next(s for _, s in capture.spans() if not s.parent_span_id).attributes]
    assert len(keys) == len(set(keys))
    assert (
        tel.value(
            "otelcol_processor_workflow_traces_released_total", processor="workflow", reason="wait"
        )
        == 1
    )
    await proc.shutdown()


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "success"),
        ("boom", "failed"),
        ("TimeoutError: deadline exceeded", "timeout"),
        ("task was cancelled", "cancelled"),
    ],
)
async def test_outcomes(error: str | None, outcome: str) -> None:
    proc, capture, _ = make()
    await proc.start(None)  # type: ignore[arg-type]
    root, agent, tools = workflow_spans(5, error=error)
    await proc.consume(request([root, agent, *tools]))
    await wait_until(lambda: len(capture.spans()) == 4, within=5)
    assert {attrs_of(s)["workflow.outcome"] for _, s in capture.spans()} == {outcome}
    await proc.shutdown()


async def test_complexity_tiers_from_config() -> None:
    tiers = [
        {"name": "tiny", "max_spans": 3, "max_tool_calls": 5, "max_depth": 5},
        {"name": "small", "max_spans": 10, "max_tool_calls": 1, "max_depth": 5},
        {"name": "medium", "max_spans": 10, "max_tool_calls": 5, "max_depth": 2},
    ]
    proc, capture, _ = make(complexity_tiers=tiers)
    await proc.start(None)  # type: ignore[arg-type]
    root, agent, tools = workflow_spans(9)
    await proc.consume(request([root, agent, *tools]))
    await wait_until(lambda: len(capture.spans()) == 4, within=5)
    # 4 spans (> tiny), 2 tool calls (> small), depth 3 (> medium): the top tier
    assert {attrs_of(s)["workflow.complexity_tier"] for _, s in capture.spans()} == {"complex"}
    await proc.shutdown()


async def test_late_spans_are_enriched_from_the_cache() -> None:
    proc, capture, tel = make()
    await proc.start(None)  # type: ignore[arg-type]
    root, agent, tools = workflow_spans(2)
    await proc.consume(request([root, agent]))
    await wait_until(lambda: len(capture.spans()) == 2, within=5)
    late = span(2, 9, 2, "late child", attrs={"workflow.outcome": "keep-mine"})
    await proc.consume(request([tools[0], late]))
    # passed on at once, not held again
    await wait_until(lambda: len(capture.spans()) == 4, within=0.08)
    got = {s.name: attrs_of(s) for _, s in capture.spans()}
    assert got["execute_tool t0"]["workflow.id"] == "wf-2"
    assert got["execute_tool t0"]["workflow.agent.id"] == "agent-7"
    assert got["late child"]["workflow.type"] == "support"
    assert got["late child"]["workflow.outcome"] == "keep-mine"  # not duplicated
    assert [kv.key for _, s in capture.spans() for kv in s.attributes].count(
        "workflow.outcome"
    ) == 4
    assert (
        tel.value(
            "otelcol_processor_workflow_late_spans_total", processor="workflow", result="enriched"
        )
        == 2
    )
    await proc.shutdown()


async def test_non_workflow_traces_pass_unchanged() -> None:
    proc, capture, _ = make()
    await proc.start(None)  # type: ignore[arg-type]
    plain = span(3, 1, None, "GET /health", kind=Span.SPAN_KIND_SERVER)
    await proc.consume(request([plain]))
    await wait_until(lambda: len(capture.spans()) == 1, within=5)
    assert capture.spans()[0][1] == plain
    await proc.shutdown()


async def test_max_traces_releases_early_counts_and_loses_nothing() -> None:
    proc, capture, tel = make(wait_duration="1h", max_traces=3)
    await proc.start(None)  # type: ignore[arg-type]
    for t in range(10):
        root, agent, tools = workflow_spans(100 + t)
        await proc.consume(request([root, agent, *tools]))
    await wait_until(lambda: len(capture.spans()) == 7 * 4, within=5)
    assert (
        tel.value(
            "otelcol_processor_workflow_traces_released_total",
            processor="workflow",
            reason="max_traces",
        )
        == 7
    )
    assert tel.value("otelcol_processor_workflow_traces_held", processor="workflow") == 3
    # the oldest were released first, fully stamped
    released = {attrs_of(s)["workflow.id"] for _, s in capture.spans()}
    assert released == {f"wf-{100 + t}" for t in range(7)}
    await proc.shutdown()
    assert len(capture.spans()) == 40
    assert (
        tel.value(
            "otelcol_processor_workflow_spans_released_total",
            processor="workflow",
            reason="shutdown",
        )
        == 12
    )


async def test_max_bytes_releases_early_counts_and_loses_nothing() -> None:
    proc, capture, tel = make(wait_duration="1h", max_bytes=8192)
    await proc.start(None)  # type: ignore[arg-type]
    big = "x" * 1000
    for t in range(20):
        s = span(200 + t, 1, None, "workflow.bulk", attrs={"payload": big})
        await proc.consume(request([s]))
    early = tel.value(
        "otelcol_processor_workflow_traces_released_total", processor="workflow", reason="max_bytes"
    )
    assert early >= 12
    assert tel.value("otelcol_processor_workflow_bytes_held", processor="workflow") <= 8192
    await proc.shutdown()
    ids = sorted(s.trace_id for _, s in capture.spans())
    assert ids == sorted(tid(200 + t) for t in range(20))


async def test_shutdown_flushes_everything_held() -> None:
    proc, capture, _ = make(wait_duration="1h")
    await proc.start(None)  # type: ignore[arg-type]
    root, agent, tools = workflow_spans(7)
    await proc.consume(request([root, agent, *tools]))
    await asyncio.sleep(0.05)
    assert capture.spans() == []
    await proc.shutdown()
    await proc.shutdown()  # safe twice
    assert len(capture.spans()) == 4
    assert all(attrs_of(s)["workflow.id"] == "wf-7" for _, s in capture.spans())


async def test_shutdown_before_start_flushes() -> None:
    proc, capture, _ = make()
    await proc.consume(request(list(workflow_spans(8)[:2])))
    await proc.shutdown()
    assert len(capture.spans()) == 2


def test_config_rejects_bad_regex_and_duplicate_tiers() -> None:
    with pytest.raises(ValueError, match="error_classification"):
        WorkflowConfig.model_validate(
            {"error_classification": [{"pattern": "(", "error_type": "x"}]}
        )
    with pytest.raises(ValueError, match="unique"):
        tier = {"name": "a", "max_spans": 1, "max_tool_calls": 1, "max_depth": 1}
        WorkflowConfig.model_validate({"complexity_tiers": [tier, tier]})
    assert WorkflowConfig().wait_duration == Seconds(2)


async def test_an_active_trace_does_not_delay_the_release_of_others() -> None:
    proc, capture, _ = make(wait_duration="300ms")
    await proc.start(None)  # type: ignore[arg-type]
    busy = workflow_spans(60)
    quiet = workflow_spans(61)
    await proc.consume(request([busy[1]]))  # first in the queue
    await proc.consume(request([quiet[0], quiet[1], *quiet[2]]))
    for tool in busy[2]:  # keeps trace 60 active
        await asyncio.sleep(0.15)
        await proc.consume(request([tool]))
    # trace 61 is due 300 ms after its spans, while trace 60 is still receiving spans
    await wait_until(lambda: any(s.trace_id == tid(61) for _, s in capture.spans()), within=0.5)
    assert not any(s.trace_id == tid(60) for _, s in capture.spans())
    await proc.shutdown()


class _Refusing:
    """A next consumer that always pushes back."""

    mutates_data = False

    async def consume(self, data: object) -> None:
        from pipeline import RetryableError

        raise RetryableError("busy", retry_after=0.01)


class _Gated:
    """A next consumer whose first consume waits for ``gate``; ``hook`` runs as each consume
    begins (in the sender's step)."""

    mutates_data = False

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.payloads: list[object] = []
        self.hook: Callable[[], None] = lambda: None

    async def consume(self, data: object) -> None:
        self.hook()
        self.payloads.append(data)
        if len(self.payloads) == 1:
            await self.gate.wait()


async def test_a_consume_cancelled_as_the_outbox_drains_is_cancelled() -> None:
    """A consume waits for the sender because the outbox holds more than ``max_bytes``; it is
    cancelled (a client gone, a deadline) in the loop turn in which the sender drains the
    outbox. The cancellation wins: the consume ends cancelled and takes nothing. Before,
    ``asyncio.wait_for`` (Python 3.11) answered the drained wait instead and the cancelled
    consume went on and took the request's spans."""
    tel = SelfTelemetry()
    cfg = WorkflowConfig.model_validate({"wait_duration": "1h", "max_bytes": 4096})
    nxt = _Gated()
    proc = WorkflowProcessor(settings(Kind.PROCESSOR, "workflow", tel), cfg, nxt)
    await proc.start(None)  # type: ignore[arg-type]
    big = "x" * 5000  # each trace is over max_bytes: released as it arrives
    traces = [request([span(80 + t, 1, None, "workflow.bulk", attrs={"p": big})]) for t in range(3)]
    await proc.consume(traces[0])  # released; the sender waits in the next consumer
    await wait_until(lambda: len(nxt.payloads) == 1)
    await proc.consume(traces[1])  # released; waits in the outbox: over max_bytes
    assert proc._outbox_bytes > cfg.max_bytes
    waiting = asyncio.ensure_future(proc.consume(traces[2]))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done()  # waits for the sender

    # the sender takes the second release off the outbox (the drained wait ends) and, in the
    # same turn, the waiting consume is cancelled
    def cancel_once() -> None:
        nxt.hook = lambda: None
        waiting.cancel()

    nxt.hook = cancel_once
    nxt.gate.set()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    assert len(proc.store.held) == 0 and len(nxt.payloads) == 2  # the third taken nowhere
    assert tel.value("otelcol_processor_workflow_refused_spans_total", processor="workflow") == 0
    await proc.shutdown()
    assert len(nxt.payloads) == 2


async def test_what_the_shutdown_deadline_cuts_off_is_counted() -> None:
    tel = SelfTelemetry()
    cfg = WorkflowConfig.model_validate({"wait_duration": "1h"})
    proc = WorkflowProcessor(settings(Kind.PROCESSOR, "workflow", tel), cfg, _Refusing())
    await proc.start(None)  # type: ignore[arg-type]
    root, agent, tools = workflow_spans(70)
    await proc.consume(request([root, agent, *tools]))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(proc.shutdown(), timeout=0.3)
    assert (
        tel.value(
            "otelcol_processor_dropped_items_total",
            processor="workflow",
            otel_signal="traces",
            reason="shutdown_deadline",
        )
        == 4
    )
    assert tel.value("otelcol_processor_workflow_spans_held", processor="workflow") == 0


async def test_a_trace_that_never_goes_quiet_is_released_after_max_wait() -> None:
    proc, capture, tel = make(wait_duration="200ms", max_wait_duration="500ms")
    await proc.start(None)  # type: ignore[arg-type]
    root, agent, _ = workflow_spans(80)
    await proc.consume(request([root, agent]))
    for i in range(12):  # a span every 100 ms: never quiet for 200 ms
        await asyncio.sleep(0.1)
        await proc.consume(request([span(80, 100 + i, 2, f"step {i}")]))
        if capture.spans():
            break
    assert capture.spans(), "released while still receiving spans"
    assert (
        tel.value(
            "otelcol_processor_workflow_traces_released_total",
            processor="workflow",
            reason="max_wait",
        )
        == 1
    )
    await proc.shutdown()
    # what came after the release was stamped from the cache: nothing lost, all stamped
    assert all(attrs_of(s)["workflow.id"] == "wf-80" for _, s in capture.spans())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("workflow.id", "wf-1"),
        ("k", "x" * 119),
        ("k", "x" * 120),
        ("k" * 200, "é" * 300),
        ("a", ""),
        ("workflow.id", "x" * 20_000),
    ],
)
def test_encoded_attribute_is_what_protobuf_writes(key: str, value: str) -> None:
    """Stamps are appended as hand-encoded ``Span.attributes`` entries (every length class of
    the varints involved)."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    expected = Span(attributes=[KeyValue(key=key, value=AnyValue(string_value=value))])
    assert wire_module.encode_attribute_uncached(key, value) == expected.SerializeToString()
    assert wire_module.encode_attribute(key, value) == expected.SerializeToString()


async def test_the_timer_is_set_only_when_the_first_deadline_changes() -> None:
    proc, capture, _ = make(wait_duration="300ms", max_traces=2)
    await proc.start(None)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert proc.timer.arms == 0  # nothing held: no timer
    first = workflow_spans(90)
    await proc.consume(request([first[0]]))  # none held -> one: set
    assert proc.timer.arms == 1
    loop = asyncio.get_running_loop()
    armed = proc.timer.armed
    assert armed is not None and armed > loop.time()
    await proc.consume(request([first[1]]))  # the first trace again: same deadline
    second = workflow_spans(91)
    await proc.consume(request([second[0], second[1]]))  # behind the first: same deadline
    await asyncio.sleep(0.01)
    assert proc.timer.arms == 1 and proc.timer.armed == armed
    await asyncio.sleep(0.1)
    third = workflow_spans(92)
    await proc.consume(request([third[0], third[1]]))  # max_traces releases trace 90
    assert any(s.trace_id == tid(90) for _, s in capture.spans())
    assert proc.timer.arms == 2  # set again for trace 91
    assert proc.timer.armed == proc.store.held[tid(91)].queued_at + 0.3
    # traces 91 and 92 are still released by the timer, after their wait
    await wait_until(lambda: any(s.trace_id == tid(92) for _, s in capture.spans()), within=1.0)
    assert any(s.trace_id == tid(91) for _, s in capture.spans())
    await asyncio.sleep(0.01)
    assert not proc.store.held and proc.timer.armed is None
    await proc.shutdown()


async def test_a_consume_behind_a_held_trace_leaves_the_timer_alone() -> None:
    """The first held trace's deadline moves only when nothing was held or the limits
    released the first traces: a consume behind a held trace does not look at the timer."""
    proc, _, _ = make(wait_duration="300ms", max_traces=2)
    await proc.start(None)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    pokes: list[None] = []
    poke = proc.timer.poke

    def counted() -> None:
        pokes.append(None)
        poke()

    proc.timer.poke = counted  # type: ignore[method-assign]
    first, second, third = workflow_spans(90), workflow_spans(91), workflow_spans(92)
    await proc.consume(request([first[0]]))  # none held -> one
    assert len(pokes) == 1
    await proc.consume(request([first[1]]))  # the first trace again
    await proc.consume(request([second[0]]))  # behind it
    assert len(pokes) == 1
    armed = proc.timer.armed
    assert armed == proc.store.held[tid(90)].queued_at + 0.3
    await proc.consume(request([third[0]]))  # max_traces releases trace 90
    assert len(pokes) == 2
    assert proc.timer.armed == proc.store.held[tid(91)].queued_at + 0.3
    await proc.shutdown()


async def test_the_release_runs_in_the_timers_callback_without_waking_a_task() -> None:
    """A release (and setting the timer again) is the timer's callback: the timer task is not
    woken for it, so each release costs the process no task switch."""
    proc, capture, _ = make(wait_duration="100ms")
    await proc.start(None)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    steps = 0
    set_wake = proc.timer.wake.set

    def counting_set() -> None:
        nonlocal steps
        steps += 1
        set_wake()

    proc.timer.wake.set = counting_set  # type: ignore[method-assign]
    for t in range(110, 114):
        root, agent, tools = workflow_spans(t)
        await proc.consume(request([root, agent, *tools]))
        await asyncio.sleep(0.03)
    await wait_until(lambda: len({s.trace_id for _, s in capture.spans()}) == 4, within=2.0)
    assert steps == 0 and not proc.store.held
    await proc.shutdown()
    assert steps == 1  # closing wakes it, to end


async def test_a_release_that_raises_is_raised_in_the_supervised_task() -> None:
    """A release that raises ends the timer's task with the exception (the supervisor counts
    and restarts it, as when the release ran in the task); restarted, it sets the timer again."""
    from plugins.workflowprocessor.timer import ReleaseTimer

    held = [0.0]
    released: list[float] = []

    def release(now: float) -> None:
        if not released:
            released.append(now)
            raise RuntimeError("boom")
        released.append(now)
        held.clear()

    timer = ReleaseTimer(0.1, lambda: held[0] if held else None, release)
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(timer.run(), 1.0)
    assert timer.armed is None and len(released) == 1
    task = asyncio.ensure_future(timer.run())
    await wait_until(lambda: len(released) == 2, within=1.0)
    assert not held and timer.armed is None
    timer.close()
    await asyncio.wait_for(task, 1.0)


async def test_traces_falling_due_within_a_tick_are_released_together() -> None:
    # wait 300 ms: releases at least 30 ms apart; 6 traces arriving a few ms apart fall due
    # within one tick, so they go out in at most 2 releases (not 6), each after its full wait
    proc, capture, _ = make(wait_duration="300ms")
    assert proc.timer.tick == pytest.approx(0.03)
    await proc.start(None)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    arrived: dict[bytes, float] = {}
    for t in range(100, 106):
        root, agent, tools = workflow_spans(t)
        await proc.consume(request([root, agent, *tools]))
        arrived[tid(t)] = loop.time()
        await asyncio.sleep(0.004)
    released: dict[bytes, float] = {}

    def seen() -> bool:
        for _, s in capture.spans():
            released.setdefault(s.trace_id, loop.time())
        return len(released) == 6

    await wait_until(seen, within=2.0, interval=0.002)
    spread = max(arrived.values()) - min(arrived.values())
    # (on a badly lagging machine the arrivals may spread over more than one tick)
    assert 1 <= len(capture.payloads) <= 2 + int(spread / proc.timer.tick)
    for trace_id, at in released.items():
        assert at - arrived[trace_id] >= 0.3 - 0.005
    await proc.shutdown()
    # a long wait: the tick stays at 100 ms
    assert make(wait_duration="10s")[0].timer.tick == pytest.approx(0.1)


async def test_many_traces_due_at_once_go_out_in_bounded_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "RELEASE_MAX_SPANS", 10)
    monkeypatch.setattr(native_module, "RELEASE_MAX_SPANS", 10)
    proc, capture, _ = make(wait_duration="50ms")
    await proc.start(None)  # type: ignore[arg-type]
    spans = []
    for t in range(200, 210):
        root, agent, tools = workflow_spans(t)
        spans += [root, agent, *tools]
    await proc.consume(request(spans))  # 10 traces of 4 spans, due together
    await wait_until(lambda: len(capture.spans()) == 40, within=2.0)
    # parts end with the trace that reaches 10 spans: 3 + 3 + 3 + 1 traces
    assert [p.item_count() for p in capture.payloads] == [12, 12, 12, 4]
    # every trace whole, in order, each stamped
    ids = [s.trace_id for _, s in capture.spans()]
    assert ids == [tid(t) for t in range(200, 210) for _ in range(4)]
    assert all("workflow.outcome" in attrs_of(s) for _, s in capture.spans())
    await proc.shutdown()


class _Slow:
    """A next consumer that never suspends and takes ``cost`` seconds of the loop's time per
    payload (a downstream that does its work in place, as a batch processor's consume)."""

    mutates_data = False

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.turns: list[int] = []  # the loop turns counted when each payload arrived
        self.turn = 0

    async def consume(self, data: object) -> None:
        self.turns.append(self.turn)
        end = time.monotonic() + self.cost  # work done in place (the loop's clock)
        while time.monotonic() < end:
            pass


async def test_the_sender_lets_other_work_run_between_slices_of_a_large_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many parts fall due at once and the next consumer never suspends: the sender passes
    them on in slices of about ``SEND_SLICE``, other callbacks running between them. Before,
    the whole outbox went on in one loop step (up to 180 ms at saturation), the rest waiting."""
    monkeypatch.setattr(store_module, "RELEASE_MAX_SPANS", 4)
    monkeypatch.setattr(native_module, "RELEASE_MAX_SPANS", 4)
    cost = processor_module.SEND_SLICE / 2.5  # a slice ends after the third payload at most
    nxt = _Slow(cost)
    cfg = WorkflowConfig.model_validate({"wait_duration": "50ms"})
    proc = WorkflowProcessor(settings(Kind.PROCESSOR, "workflow", SelfTelemetry()), cfg, nxt)
    await proc.start(None)  # type: ignore[arg-type]
    spans = []
    for t in range(300, 312):
        root, agent, tools = workflow_spans(t)
        spans += [root, agent, *tools]

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0)
            nxt.turn += 1

    ticking = asyncio.ensure_future(ticker())
    try:
        await proc.consume(request(spans))  # 12 traces of 4 spans, due together: 12 parts
        await wait_until(lambda: len(nxt.turns) == 12, within=5.0)
    finally:
        ticking.cancel()
    # at most three payloads in one loop step (the ticker ran between the slices)
    steps = collections.Counter(nxt.turns)
    assert len(steps) >= 4 and max(steps.values()) <= 3, steps
    await proc.shutdown()


async def test_error_types_of_the_same_message_are_classified_alike_and_counted() -> None:
    """The C path remembers the error.type of a status message (failed tool calls without
    events); the results and counts are the Python path's."""
    proc, capture, tel = make()
    await proc.start(None)  # type: ignore[arg-type]
    for trace in (1, 2, 3):
        root, agent, tools = workflow_spans(trace, tool_error="connection refused by docs")
        await proc.consume(request([root, agent, *tools]))
    await wait_until(lambda: len(capture.spans()) == 12, within=5)
    failed = [attrs_of(s) for _, s in capture.spans() if s.name == "execute_tool t0"]
    assert [a["error.type"] for a in failed] == ["connection"] * 3
    assert all("error.type" not in attrs_of(s) for _, s in capture.spans() if s.name.endswith("t1"))
    assert (
        tel.value("otelcol_processor_workflow_error_types_added_total", processor="workflow") == 3
    )
    await proc.shutdown()
