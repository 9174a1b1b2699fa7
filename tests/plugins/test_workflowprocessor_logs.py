"""The ``workflow`` processor in a logs pipeline (plugins/workflowprocessor/logs.py): log
records of a workflow trace stamped from the trace hold of the traces processor of the same
config (held until their trace's release, at once after it), the others passed on; bounded,
atomic; on both trace stores."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pipeline import Kind, Signal
from pipeline.pdata import Logs
from pipeline.telemetry import SelfTelemetry
from plugins.workflowprocessor import processor as processor_module
from plugins.workflowprocessor.factory import WorkflowProcessorFactory
from tests.plugins._agent_support import Capture, kv, request, settings, sid, span, tid
from tests.plugins._native_support import both_paths
from tests.plugins.test_workflowprocessor import workflow_spans

accelerator = both_paths(
    "_tracewire", lambda monkeypatch: monkeypatch.setattr(processor_module, "_tracewire", None)
)
STAMP = (
    "workflow.id",
    "workflow.type",
    "workflow.agent.id",
    "workflow.outcome",
    "workflow.complexity_tier",
)


def make(**options: Any) -> tuple[Any, Capture, Any, Capture, SelfTelemetry]:
    factory = WorkflowProcessorFactory()
    cfg = factory.config_class.model_validate({"wait_duration": "100ms", **options})
    tel = SelfTelemetry()
    spans_out, logs_out = Capture(), Capture()
    traces = factory.create(
        Signal.TRACES, settings(Kind.PROCESSOR, "workflow", tel), cfg, spans_out
    )
    logs = factory.create(Signal.LOGS, settings(Kind.PROCESSOR, "workflow", tel), cfg, logs_out)
    return traces, spans_out, logs, logs_out, tel


def records(*items: tuple[int | None, str]) -> Logs:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", "agent-svc"))
    sl = rl.scope_logs.add()
    sl.scope.name = "genai"
    for trace, body in items:
        lr = sl.log_records.add(event_name="gen_ai.client.inference.operation.details")
        lr.body.string_value = body
        if trace is not None:
            lr.trace_id, lr.span_id = tid(trace), sid(2)
        lr.attributes.append(kv("gen_ai.operation.name", "chat"))
    return Logs(req.SerializeToString())


def received(capture: Capture) -> dict[str, dict[str, Any]]:
    """body -> attributes of every record that reached ``capture``."""
    out = {}
    for payload in capture.payloads:
        for rl in payload.message().resource_logs:
            assert rl.resource.attributes[0].value.string_value == "agent-svc"
            for sl in rl.scope_logs:
                assert sl.scope.name == "genai"
                for lr in sl.log_records:
                    out[lr.body.string_value] = {a.key: a.value.string_value for a in lr.attributes}
    return out


def results(tel: SelfTelemetry) -> dict[str, float]:
    out = {}
    for result in ("stamped", "not_workflow", "no_trace", "unknown_trace", "overflow"):
        value = tel.value(
            "otelcol_processor_workflow_log_records_total", processor="workflow", result=result
        )
        if value:
            out[result] = value
    return out


async def test_records_of_a_held_workflow_are_stamped_at_its_release() -> None:
    traces, _, logs, logs_out, tel = make()
    await traces.start(None)
    await logs.start(None)
    try:
        root, agent, tools = workflow_spans(1)
        await traces.consume(request([agent, *tools]))  # the root comes later
        await logs.consume(records((1, "during"), (None, "no-trace"), (2, "not-a-workflow")))
        assert set(received(logs_out)) == {"no-trace"}  # the others are held
        assert logs.held_records == 2
        await traces.consume(request([root]))
        await traces.consume(request([span(2, 1, None, "GET /health")]))

        async def until(n: int) -> None:
            for _ in range(200):
                if len(received(logs_out)) >= n:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(received(logs_out))

        await until(3)
        await logs.consume(records((1, "after")))  # released: stamped at once
        got = received(logs_out)
        for body in ("during", "after"):
            assert {k: got[body][k] for k in STAMP} == {
                "workflow.id": "wf-1",
                "workflow.type": "support",
                "workflow.agent.id": "agent-7",
                "workflow.outcome": "success",
                "workflow.complexity_tier": "simple",
            }
            assert got[body]["gen_ai.operation.name"] == "chat"
        assert not set(STAMP) & (set(got["no-trace"]) | set(got["not-a-workflow"]))
        assert results(tel) == {"stamped": 2, "no_trace": 1, "not_workflow": 1}
        assert logs.held_records == 0
    finally:
        await traces.shutdown()
        await logs.shutdown()


async def test_unknown_trace_passed_on_after_the_wait_and_at_shutdown() -> None:
    traces, _, logs, logs_out, tel = make(wait_duration="50ms")
    await logs.start(None)
    await logs.consume(records((7, "lonely")))
    await asyncio.sleep(0.3)
    assert "workflow.id" not in received(logs_out)["lonely"]
    await logs.consume(records((8, "at-shutdown")))
    await logs.shutdown()
    assert set(received(logs_out)) == {"lonely", "at-shutdown"}
    assert results(tel) == {"unknown_trace": 2}
    await traces.shutdown()


async def test_untouched_requests_pass_as_they_came() -> None:
    _, _, logs, logs_out, tel = make()
    data = records((None, "a"), (None, "b"))
    await logs.consume(data)
    assert logs_out.payloads == [data]
    assert results(tel) == {"no_trace": 2}


async def test_held_records_are_bounded() -> None:
    _, _, logs, logs_out, tel = make(wait_duration="1h")
    logs.max_records = 2
    await logs.consume(records((1, "a"), (2, "b")))
    await logs.consume(records((3, "c")))
    assert set(received(logs_out)) == {"a"} and logs.held_records == 2
    assert results(tel) == {"overflow": 1}


async def test_a_corrupt_request_holds_nothing() -> None:
    _, _, logs, logs_out, _ = make()
    with pytest.raises(DecodeError):
        await logs.consume(Logs(records((1, "a")).to_bytes() + b"\x0a\x05\x0a\x03\xff\xff"))
    assert logs.held_records == 0 and not logs_out.payloads


async def test_record_attributes_are_kept_over_the_stamp() -> None:
    traces, _, logs, logs_out, _ = make()
    root, agent, tools = workflow_spans(1)
    await traces.consume(request([root, agent, *tools]))
    await traces.shutdown()  # released: remembered for late spans and records
    data = records((1, "own"))
    req = data.message()
    req.resource_logs[0].scope_logs[0].log_records[0].attributes.append(kv("workflow.type", "mine"))
    await logs.consume(Logs.from_message(req))
    got = received(logs_out)["own"]
    assert got["workflow.type"] == "mine" and got["workflow.id"] == "wf-1"


async def test_held_records_keep_their_acknowledgement_tokens() -> None:
    """With durability on, a held record's request stays unacknowledged until the record is
    passed on: the payload that carries it holds the request's tokens."""
    traces, _, logs, logs_out, _ = make(wait_duration="1h")

    class Token:
        pass

    token = Token()
    root, agent, tools = workflow_spans(1)
    await traces.consume(request([agent, *tools]))
    await logs.consume(records((1, "held"), (None, "now")).carry_acks((token,)))
    (first,) = logs_out.payloads
    assert token in first.ack_tokens  # the record passed at once
    assert all(token in entry.acks for entry in logs.held.values())
    await traces.consume(request([root]))
    await traces.shutdown()  # released: the held record's trace is now known
    payload = logs.release(asyncio.get_running_loop().time())
    assert payload is not None and token in payload.ack_tokens
    assert logs.held_records == 0
