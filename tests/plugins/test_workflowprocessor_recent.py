"""The ``workflow`` processor's WorkflowProvider (plugins/workflowprocessor/recent.py): held
traces, recent workflows while someone watches, a workflow's spans; on both paths."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.status import WorkflowProvider
from plugins.workflowprocessor import processor as processor_module
from plugins.workflowprocessor import recent as recent_module
from tests.plugins._agent_support import request, span
from tests.plugins._native_support import both_paths
from tests.plugins.test_workflowprocessor import make, workflow_spans
from tests.support import wait_until

accelerator = both_paths(
    "_tracewire", lambda monkeypatch: monkeypatch.setattr(processor_module, "_tracewire", None)
)


def provider_of(proc: Any) -> WorkflowProvider:
    (provider,) = [p for p in proc.settings.providers if isinstance(p, WorkflowProvider)]
    return provider  # type: ignore[no-any-return]


async def test_records_only_while_watched_and_summarises_on_demand() -> None:
    proc, capture, _ = make()
    provider = provider_of(proc)
    await proc.start(None)  # type: ignore[arg-type]
    try:
        root, agent, tools = workflow_spans(1)
        await proc.consume(request([root, agent, *tools]))
        await wait_until(lambda: len(capture.spans()) == 4, within=5)
        assert not provider.recording  # type: ignore[attr-defined]
        assert provider.recent_workflows() == []  # nobody watched: nothing was kept
        assert provider.recording  # type: ignore[attr-defined]
        root, agent, tools = workflow_spans(2, tool_error="connection refused")
        await proc.consume(request([root, agent, *tools]))
        # a trace that is no workflow is not listed
        await proc.consume(request([span(3, 1, None, "GET /health")]))
        root, agent, tools = workflow_spans(4, error="TimeoutError: deadline exceeded")
        await proc.consume(request([root, agent, *tools]))
        await wait_until(lambda: len(capture.spans()) == 13, within=5)
        listed = provider.recent_workflows()
        assert [w.workflow_id for w in listed] == ["wf-2", "wf-4"]
        first, second = listed
        assert first.type == "support" and first.agent == "agent-7"
        assert first.outcome == "success" and first.tier == "simple"
        assert first.spans == 4 and first.tool_calls == 2
        assert first.start_time == pytest.approx(1_700_000_000.0)
        assert first.duration == pytest.approx(0.1)
        assert first.reason == "wait" and first.released_at > 0
        assert first.trace_id == f"{2:032x}"
        assert second.outcome == "timeout"
        assert first.seq < second.seq
        assert provider.recent_workflows(after=first.seq) == [second]
        assert provider.recent_workflows(limit=1) == [second]
        spans = provider.workflow_spans(first.trace_id)
        assert spans is not None
        assert spans[0].name == "workflow.support"
        by_name = {s.name: s for s in spans}
        tool = by_name["execute_tool t0"]
        assert tool.parent_span_id == by_name["invoke_agent planner"].span_id
        assert tool.kind == "client" and tool.status == "error"
        assert tool.service == "agent-svc"
        assert tool.attributes["gen_ai.tool.name"] == "t0"
        assert "workflow.id" not in tool.attributes  # as received (the summary has the stamp)
        assert provider.workflow_spans(f"{99:032x}") is None
        assert provider.workflow_spans("not hex") is None
    finally:
        await proc.shutdown()


async def test_held_traces_and_bounds() -> None:
    proc, capture, _ = make(wait_duration="300ms")
    provider = provider_of(proc)
    provider.max_workflows = 2  # type: ignore[attr-defined]
    await proc.start(None)  # type: ignore[arg-type]
    try:
        provider.recent_workflows()
        root, agent, tools = workflow_spans(7)
        await proc.consume(request([agent, *tools]))
        held = provider.held_traces()
        assert (held.traces, held.spans) == (1, 3)
        assert held.max_traces == 10_000 and held.bytes > 0
        (one,) = held.oldest
        assert one.trace_id == f"{7:032x}" and one.spans == 3 and one.age >= 0
        assert one.workflow_type is None  # its root has not arrived
        await proc.consume(request([root]))
        assert provider.held_traces().oldest[0].workflow_type == "support"
        await wait_until(lambda: len(capture.spans()) == 4, within=5)
        # one at a time: traces whose waits end in the same timer tick leave in any order
        for t, released in ((8, 8), (9, 12)):
            root, agent, tools = workflow_spans(t)
            await proc.consume(request([root, agent, *tools]))
            await wait_until(lambda n=released: len(capture.spans()) == n, within=5)
        assert provider.held_traces().traces == 0
        assert [w.workflow_id for w in provider.recent_workflows()] == ["wf-8", "wf-9"]
        assert provider.workflow_spans(f"{7:032x}") is None  # no longer kept
    finally:
        await proc.shutdown()


async def test_stops_recording_when_nobody_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    proc, capture, _ = make()
    provider = provider_of(proc)
    await proc.start(None)  # type: ignore[arg-type]
    try:
        provider.recent_workflows()
        monkeypatch.setattr(recent_module.RecentWorkflows, "WATCH_SECONDS", 0.0)
        provider.recent_workflows()  # the watch ends now
        root, agent, tools = workflow_spans(11)
        await proc.consume(request([root, agent, *tools]))
        await wait_until(lambda: len(capture.spans()) == 4, within=5)
        monkeypatch.setattr(recent_module.RecentWorkflows, "WATCH_SECONDS", 15.0)
        assert provider.recent_workflows() == []
    finally:
        await proc.shutdown()
