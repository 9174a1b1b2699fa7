"""The ``agentmetrics`` connector's logs input: GenAI events joined to their inference spans
(``plugins/agentmetricsconnector/events.py``): the span wins, an event gives what its span
lacks, an event whose span does not come counts on its own, once; bounded, atomic."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind, Signal
from pipeline.pdata import Logs
from pipeline.telemetry import SelfTelemetry
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from plugins.agentmetricsconnector.events import EventJoiner, read_events
from plugins.agentmetricsconnector.factory import AgentMetricsConnectorFactory
from tests.plugins._agent_support import Capture, kv, request, settings, sid, span, tid
from tests.plugins._native_support import both_paths
from tests.plugins.test__metricsagg import labels, points

scanner = both_paths("_agentscan")
DETAILS = "gen_ai.client.inference.operation.details"


def event(
    trace: int | None,
    span_id: int | None,
    *,
    tokens: tuple[Any, Any] | None = (100, 20),
    name: str = DETAILS,
    model: str = "gpt-4o",
    **attrs: Any,
) -> dict[str, Any]:
    a: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}
    if model:
        a["gen_ai.request.model"] = model
    if tokens is not None:
        a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"] = tokens
    a.update(attrs)
    return {"trace": trace, "span": span_id, "name": name, "attrs": a}


def logs(*events: dict[str, Any]) -> Logs:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", "agent-svc"))
    sl = rl.scope_logs.add()
    for e in events:
        lr = sl.log_records.add(event_name=e["name"])
        if e["trace"] is not None:
            lr.trace_id = tid(e["trace"])
        if e["span"] is not None:
            lr.span_id = sid(e["span"])
        lr.attributes.extend(kv(k, v) for k, v in e["attrs"].items())
    return Logs(req.SerializeToString())


def chat(trace: int, n: int, *, tokens: bool = True, model: str = "gpt-4o", **kw: Any) -> Span:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "workflow.type": "research",
        "workflow.agent.id": "planner",
    }
    if model:
        attrs["gen_ai.request.model"] = model
    if tokens:
        attrs["gen_ai.usage.input_tokens"] = 100
        attrs["gen_ai.usage.output_tokens"] = 20
    return span(trace, n, 1, "chat", kind=Span.SPAN_KIND_CLIENT, attrs=attrs, **kw)


def connector(**options: Any) -> tuple[AgentMetricsConnector, Capture, SelfTelemetry]:
    tel = SelfTelemetry()
    out = Capture()
    cfg = AgentMetricsConfig.model_validate(
        {
            "metrics_flush_interval": "0s",
            "prices": {"gpt-4o": {"input": 2.5, "output": 10}},
            **options,
        }
    )
    conn = AgentMetricsConnector(settings(Kind.CONNECTOR, "agentmetrics", tel), cfg, out)
    conn.accepts_logs = True  # as the factory sets it when a logs pipeline feeds the connector
    return conn, out, tel


async def finish(conn: AgentMetricsConnector, out: Capture) -> Any:
    await conn.shutdown()
    assert len(out.payloads) == 1
    return out.payloads[0].message()


def usage(req: Any) -> dict[tuple[str, str], tuple[int, float]]:
    """(model, token type) -> (count, sum) of gen_ai.client.token.usage."""
    return {
        (labels(dp).get("gen_ai.request.model", ""), labels(dp)["gen_ai.token.type"]): (
            dp.count,
            dp.sum,
        )
        for dp in points(req, "gen_ai.client.token.usage")
    }


def workflow_tokens(req: Any) -> dict[tuple[str, str, str], int]:
    return {
        tuple(labels(dp)[k] for k in ("workflow_type", "agent_id", "token_type")): dp.as_int
        for dp in points(req, "agent_workflow_tokens")
    }


def results(tel: SelfTelemetry) -> dict[str, float]:
    out = {}
    for result in ("joined", "duplicate", "alone", "early", "no_usage", "forgotten"):
        value = tel.value(
            "otelcol_connector_agentmetrics_genai_events_total",
            connector="agentmetrics",
            result=result,
        )
        if value:
            out[result] = value
    return out


@pytest.mark.parametrize("event_first", [True, False])
async def test_span_wins_when_both_carry_the_tokens(event_first: bool) -> None:
    conn, out, tel = connector()
    spans = request([chat(1, 2)])
    events = logs(event(1, 2, tokens=(100, 20)))
    for data in (events, spans) if event_first else (spans, events):
        await conn.consume(data)
    req = await finish(conn, out)
    assert usage(req) == {("gpt-4o", "input"): (1, 100.0), ("gpt-4o", "output"): (1, 20.0)}
    assert workflow_tokens(req) == {
        ("research", "planner", "input"): 100,
        ("research", "planner", "output"): 20,
    }
    (cost,) = points(req, "agent_workflow_cost_usd")
    assert cost.as_double == pytest.approx((100 * 2.5 + 20 * 10) / 1e6)
    assert results(tel) == {"duplicate": 1}


@pytest.mark.parametrize("event_first", [True, False])
async def test_event_gives_its_span_the_tokens_it_lacks(event_first: bool) -> None:
    """A span without usage (nor a model) takes its event's: counted with the span's labels
    (its workflow), the event's model filling in."""
    conn, out, tel = connector()
    spans = request([chat(1, 2, tokens=False, model="")])
    events = logs(event(1, 2, tokens=(300, 40), **{"gen_ai.response.model": "gpt-4o"}))
    for data in (events, spans) if event_first else (spans, events):
        await conn.consume(data)
    req = await finish(conn, out)
    assert usage(req) == {("gpt-4o", "input"): (1, 300.0), ("gpt-4o", "output"): (1, 40.0)}
    assert workflow_tokens(req) == {
        ("research", "planner", "input"): 300,
        ("research", "planner", "output"): 40,
    }
    token_points = points(req, "gen_ai.client.token.usage")
    (dp,) = [d for d in token_points if labels(d)["gen_ai.token.type"] == "input"]
    assert labels(dp) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.token.type": "input",
    }
    if event_first:  # the held event lent its model to the span's duration too
        (op,) = points(req, "gen_ai.client.operation.duration")
        assert labels(op)["gen_ai.request.model"] == "gpt-4o"
    assert results(tel) == {"joined": 1}


async def test_event_whose_span_never_comes_counts_alone_once() -> None:
    """After the window an event counts on its own (its workflow from the attributes the
    workflow processor stamps); its span arriving later adds no tokens; a second event of the
    same call adds none either."""
    conn, out, tel = connector(genai_events={"window": "0s"})
    await conn.consume(
        logs(event(1, 2, tokens=(7, 3), **{"workflow.type": "triage", "gen_ai.agent.name": "a"}))
    )
    await conn.consume(request([chat(1, 2)]))  # late: its usage is not counted again
    await conn.consume(logs(event(1, 2, tokens=(7, 3))))
    req = await finish(conn, out)
    assert usage(req) == {("gpt-4o", "input"): (1, 7.0), ("gpt-4o", "output"): (1, 3.0)}
    assert workflow_tokens(req) == {("triage", "a", "input"): 7, ("triage", "a", "output"): 3}
    assert len(points(req, "gen_ai.client.operation.duration")) == 1  # the span's duration
    assert results(tel) == {"alone": 1, "duplicate": 1}


async def test_held_event_is_settled_at_shutdown_and_by_the_flush() -> None:
    conn, out, tel = connector(genai_events={"window": "1h"})
    await conn.consume(logs(event(1, 2), event(None, None, tokens=(5, 1))))
    assert len(conn.events) == 1  # the one without a span id counted at once
    assert results(tel) == {"alone": 1}
    req = await finish(conn, out)
    assert usage(req) == {("gpt-4o", "input"): (2, 105.0), ("gpt-4o", "output"): (2, 21.0)}
    assert results(tel) == {"alone": 2}
    assert (
        tel.value("otelcol_connector_agentmetrics_genai_events_pending", connector="agentmetrics")
        == 0
    )


async def test_content_events_count_nothing() -> None:
    """The content events (openai-v2's legacy events, pydantic-ai's event mode, OpenLLMetry)
    carry no usage: read, nothing counted, nothing held."""
    conn, out, tel = connector()
    await conn.consume(
        logs(
            event(1, 2, name="gen_ai.user.message", tokens=None),
            event(1, 2, name="gen_ai.choice", tokens=None),
            event(1, 3, name="app.log", tokens=None),  # not a GenAI event: skipped
        )
    )
    assert len(conn.events) == 0
    await conn.shutdown()
    assert not out.payloads  # nothing to flush
    assert results(tel) == {"no_usage": 2}


async def test_pending_events_are_bounded() -> None:
    conn, out, tel = connector(genai_events={"max_pending": 2, "max_remembered": 3})
    await conn.consume(logs(*(event(1, n, tokens=(10, 1)) for n in range(2, 6))))
    assert len(conn.events) == 2
    assert results(tel) == {"early": 2}
    # the spans of the early ones: their usage is not counted again
    await conn.consume(request([chat(1, 2), chat(1, 3)]))
    req = await finish(conn, out)
    assert usage(req) == {("gpt-4o", "input"): (4, 40.0), ("gpt-4o", "output"): (4, 4.0)}
    assert len(conn.events.remembered) <= 3
    assert results(tel)["alone"] == 2
    assert results(tel)["forgotten"] >= 1


async def test_a_request_that_cannot_be_read_changes_nothing() -> None:
    conn, out, tel = connector()
    good = logs(event(1, 2)).to_bytes()
    with pytest.raises(DecodeError):
        await conn.consume(Logs(good + b"\x0a\x05\x0a\x03\xff\xff"))
    assert len(conn.events) == 0 and not results(tel)
    await conn.shutdown()
    assert not out.payloads


def test_hostile_token_values_are_ignored() -> None:
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add(event_name=DETAILS)
    for key, value in (
        ("gen_ai.usage.input_tokens", AnyValue(string_value="lots")),
        ("gen_ai.usage.prompt_tokens", AnyValue(int_value=-4)),
        ("gen_ai.usage.output_tokens", AnyValue(double_value=1e300)),
        ("gen_ai.usage.completion_tokens", AnyValue(double_value=2.5)),
        ("gen_ai.response.finish_reasons", AnyValue(string_value="stop")),
    ):
        lr.attributes.add(key=key).value.CopyFrom(value)
    (ev,) = read_events(req.SerializeToString(), AgentMetricsConfig().attributes)
    assert (ev.input_tokens, ev.output_tokens, ev.finish_reasons) == (None, None, ("stop",))
    # the older event.name attribute and the older usage names
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add()
    lr.attributes.extend([kv("event.name", DETAILS), kv("gen_ai.usage.prompt_tokens", "12")])
    (ev,) = read_events(req.SerializeToString(), AgentMetricsConfig().attributes)
    assert ev.input_tokens == 12 and ev.output_tokens is None


def test_joiner_forgets_by_age() -> None:
    joiner = EventJoiner(1.0, 10, 10, 5.0)
    assert joiner.settle(0.0) == []
    (ev,) = read_events(logs(event(1, 2)).to_bytes(), AgentMetricsConfig().attributes)
    assert joiner.add_events([ev], 0.0) == []
    assert joiner.settle(0.5) == []
    assert len(joiner.settle(1.5)) == 1 and len(joiner.remembered) == 1
    joiner.settle(10.0)
    assert not joiner.remembered


async def test_factory_one_instance_serves_traces_and_logs() -> None:
    factory = AgentMetricsConnectorFactory()
    assert factory.supports(Signal.LOGS, Signal.METRICS)
    cfg = factory.config_class.model_validate({})
    tel = SelfTelemetry()
    out = Capture()
    a = factory.create(
        Signal.TRACES, Signal.METRICS, settings(Kind.CONNECTOR, "agentmetrics", tel), cfg, out
    )
    b = factory.create(
        Signal.LOGS, Signal.METRICS, settings(Kind.CONNECTOR, "agentmetrics", tel), cfg, out
    )
    assert a is b and a.accepts_logs
    with pytest.raises(ValueError, match="genai_events"):
        factory.config_class.model_validate({"genai_events": {"window": "-1s"}})


async def test_without_a_logs_input_no_span_is_remembered() -> None:
    """The span path pays nothing for the join when no logs pipeline feeds the connector."""
    conn, out, _ = connector()
    conn.accepts_logs = False
    await conn.consume(request([chat(1, 2), chat(1, 3, tokens=False)]))
    assert not conn.events.remembered
    req = await finish(conn, out)
    assert usage(req) == {("gpt-4o", "input"): (1, 100.0), ("gpt-4o", "output"): (1, 20.0)}


async def test_logs_without_genai_events_are_not_decoded() -> None:
    """An application's own logs (no ``gen_ai.`` anywhere) are skipped unread."""
    conn, out, tel = connector()
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add(trace_id=tid(1), span_id=sid(2))
    lr.body.string_value = "GET /health 200"
    raw = req.SerializeToString()
    assert b"gen_ai." not in raw
    await conn.consume(Logs(raw))
    await conn.consume(Logs(raw + b"\xff"))  # corrupt, but nothing of ours in it: skipped
    assert not results(tel) and not conn.events.pending
    await conn.shutdown()
    assert not out.payloads


async def test_error_type_of_a_failed_call_labels_its_span() -> None:
    """A failed call's event (no usage, error.type) sent before its span: the span's duration
    takes the event's error.type (the span has none); nothing is counted from the event."""
    conn, out, tel = connector()
    failed = event(1, 2, tokens=None, **{"error.type": "rate_limit_exceeded"})
    await conn.consume(logs(failed))
    assert len(conn.events) == 1
    await conn.consume(request([chat(1, 2, tokens=False, error="boom")]))
    assert len(conn.events) == 0
    # the same without a span: nothing counted, nothing remembered (a span later counts)
    await conn.consume(logs(event(1, 3, tokens=None, **{"error.type": "timeout"})))
    conn._settle_events(0, 1e12)
    assert not conn.events.counted_alone(tid(1), sid(3))
    req = await finish(conn, out)
    (op,) = points(req, "gen_ai.client.operation.duration")
    assert labels(op)["error.type"] == "rate_limit_exceeded"
    assert not points(req, "gen_ai.client.token.usage")
    assert results(tel) == {"no_usage": 2}


async def test_reload_adding_and_removing_the_logs_input_keeps_one_instance(
    tmp_path: Any,
) -> None:
    """A reload that adds a logs pipeline to a running connector feeds the same instance (its
    held spans and events stay joined); removing it again leaves the instance running."""
    from pipeline.config import load_config
    from pipeline.pluginmanager import default_registry
    from pipeline.service import Service
    from tests.support import free_port, write_config

    base = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
connectors:
  agentmetrics: {{metrics_flush_interval: 1h}}
exporters:
  debug:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [agentmetrics]}}
    metrics: {{receivers: [agentmetrics], exporters: [debug]}}
"""
    with_logs = base + "    logs: {receivers: [otlp], exporters: [agentmetrics]}\n"
    path = write_config(tmp_path, base)
    service = Service(load_config([str(path)], default_registry()), SelfTelemetry())
    service.config_files = [str(path)]
    await service.start()

    def connectors() -> set[int]:
        return {id(n.component) for n in service.graph.nodes if n.kind == Kind.CONNECTOR}

    try:
        (first,) = connectors()
        write_config(tmp_path, with_logs)
        record = await service.reload("api")
        assert record.result == "applied", record
        assert connectors() == {first}
        (conn,) = [n.component for n in service.graph.nodes if n.kind == Kind.CONNECTOR][:1]
        assert conn.accepts_logs
        write_config(tmp_path, base)
        record = await service.reload("api")
        assert record.result == "applied", record
        assert connectors() == {first}
        assert conn._users == 1  # still running for its traces input
    finally:
        await service.shutdown()
