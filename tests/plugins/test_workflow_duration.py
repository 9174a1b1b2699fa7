"""A workflow's duration is its execution's (issue 12 item 4), also when an HTTP server span
sits above the execution: real pydantic-ai served by a Starlette app traced by OpenTelemetry's
ASGI instrumentation (``tests/data/agent_sources/pydantic_ai_http``, recorded by
``tests/agent_sources/pydantic_ai_http_source.py``). The ``workflow`` processor writes the
execution's duration on the root (``workflow.duration``) on both trace stores, for a root
arriving late too; the ``agentmetrics`` connector (C scanner and Python path) observes it in
``agent_workflow_duration_seconds`` and its SLA window; ``tail_sampling``'s ``workflow_sla``
policy judges it."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline import Kind, Traces
from pipeline.telemetry import SelfTelemetry
from plugins._native import load as native_load
from plugins.agentmetricsconnector.config import AgentMetricsConfig
from plugins.agentmetricsconnector.connector import AgentMetricsConnector
from plugins.tailsamplingprocessor.config import PolicyCfg
from plugins.tailsamplingprocessor.policies import Decision, TraceData, build
from plugins.workflowprocessor.config import WorkflowConfig
from plugins.workflowprocessor.processor import WorkflowProcessor
from tests.plugins._agent_support import Capture, attrs_of, settings
from tests.plugins.test__metricsagg import labels, points
from tests.plugins.test_workflowprocessor_executions import (
    STORES,
    load,
    make,
    one_span_per_request,
    run,
)

SOURCE = "pydantic_ai_http"
SCENARIOS = ("success", "failed_run", "slow_tool")
DURATION = "workflow.duration"
RUN = "invoke_agent calculator"


def seconds(s: Span) -> float:
    return (s.end_time_unix_nano - s.start_time_unix_nano) / 1e9


def named(spans: list[Span], name: str) -> Span:
    (found,) = [s for s in spans if s.name == name]
    return found


def corpus_spans(scenario: str) -> list[Span]:
    req = load(SOURCE, scenario)
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def with_duration(spans: list[Span]) -> dict[str, float]:
    """span name -> its workflow.duration, for the spans that carry one."""
    out = {}
    for s in spans:
        for kv in s.attributes:
            if kv.key == DURATION:
                assert kv.value.WhichOneof("value") == "double_value"
                out[s.name] = kv.value.double_value
    return out


def test_the_recorded_root_is_an_http_server_span_above_the_agent_run() -> None:
    for scenario in SCENARIOS:
        spans = corpus_spans(scenario)
        root = named(spans, "POST /compute")
        run_span = named(spans, RUN)
        assert not root.parent_span_id and root.kind == Span.SPAN_KIND_SERVER
        assert run_span.parent_span_id == root.span_id
        assert seconds(root) > seconds(run_span)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("split", [False, True])
def test_root_carries_the_execution_duration(store: str, scenario: str, split: bool) -> None:
    req = load(SOURCE, scenario)
    requests = one_span_per_request(req, seed=7) if split else [req.SerializeToString()]
    spans = run(make(store), requests)
    root = named(spans, "POST /compute")
    run_span = named(spans, RUN)
    # only the root carries it, and it is exactly the agent run's duration
    assert with_duration(spans) == {root.name: seconds(run_span)}
    # the root's other stamps as every span's
    assert attrs_of(root)["workflow.type"] == "calculator"


@pytest.mark.parametrize("store", STORES)
def test_no_duration_written_when_the_root_is_the_execution(store: str) -> None:
    spans = run(make(store), [load("pydantic_ai", "success").SerializeToString()])
    assert attrs_of(named(spans, RUN))["workflow.type"] == "calculator"
    assert with_duration(spans) == {}


@pytest.mark.parametrize("store", STORES)
def test_a_late_root_gets_the_duration(store: str) -> None:
    """The HTTP root arrives after its trace was released (its SDK exported it later than
    ``wait_duration``): stamped from the late-span memory, with the execution's duration."""
    req = load(SOURCE, "slow_tool")
    parts = one_span_per_request(req, seed=3)
    root_part = next(p for p in parts if b"POST /compute" in p and b"http send" not in p)
    proc = make(store)
    early = run(proc, [p for p in parts if p is not root_part])
    assert with_duration(early) == {}  # no root yet: nothing carries it
    late = run(proc, [root_part])
    assert [s.name for s in late] == ["POST /compute"]
    assert with_duration(late) == {"POST /compute": seconds(named(early, RUN))}
    assert attrs_of(late[0])["workflow.type"] == "calculator"


@pytest.mark.parametrize("path", ["native", "python"])
@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_connector_observes_the_execution_duration(
    path: str, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processor then connector, both on C (``_tracewire``, ``_agentscan``) or both in Python:
    ``agent_workflow_duration_seconds`` holds the agent run's duration, and the SLA window
    judges it (an objective between the agent run's and the HTTP span's durations is met)."""
    if path == "python":
        monkeypatch.setenv("PIPELINE_NATIVE", "0")
    elif native_load("_agentscan") is None or native_load("_tracewire") is None:
        pytest.skip("the C accelerators are not built")
    spans = corpus_spans(scenario)
    execution = seconds(named(spans, RUN))
    http = seconds(named(spans, "POST /compute"))
    objective = (execution + http) / 2
    tel = SelfTelemetry()
    out = Capture()
    cfg = AgentMetricsConfig.model_validate(
        {"metrics_flush_interval": "0s", "sla": {"default": f"{objective * 1000:.3f}ms"}}
    )
    conn = AgentMetricsConnector(settings(Kind.CONNECTOR, "agentmetrics", tel), cfg, out)
    proc = WorkflowProcessor(
        settings(Kind.PROCESSOR, "workflow", tel),
        WorkflowConfig.model_validate({"wait_duration": "1h"}),
        conn,
        native=path == "native",
    )
    await proc.consume(Traces(load(SOURCE, scenario).SerializeToString()))
    await proc.shutdown()
    await conn.shutdown()
    got = out.payloads[0].message()
    (dp,) = points(got, "agent_workflow_duration")
    assert labels(dp)["workflow_type"] == "calculator"
    assert dp.count == 1
    assert dp.sum == execution  # exactly: not the HTTP span's
    (sla,) = points(got, "agent_workflow_sla_compliance_ratio")
    assert sla.as_double == 1.0
    # the HTTP server span is still measured as itself
    (http_dp,) = points(got, "http_request_duration")
    assert http_dp.sum == http


def tail_decision(spans: list[Span], objective: float) -> Decision:
    policy = build(
        PolicyCfg.model_validate(
            {
                "name": "sla",
                "type": "workflow_sla",
                "workflow_sla": {"default": f"{objective * 1000:.3f}ms"},
            }
        )
    )
    raw = [s.SerializeToString() for s in spans]
    return policy.evaluate(TraceData(spans[0].trace_id, raw, [b""] * len(raw)))


@pytest.mark.parametrize("store", STORES)
def test_tail_sampling_workflow_sla_judges_the_execution(store: str) -> None:
    req = load(SOURCE, "slow_tool")
    spans = run(make(store), [req.SerializeToString()])
    execution = seconds(named(spans, RUN))
    http = seconds(named(spans, "POST /compute"))
    # over the agent run's duration: sampled; between it and the HTTP span's: not
    assert tail_decision(spans, execution * 0.9) is Decision.SAMPLED
    assert tail_decision(spans, (execution + http) / 2) is Decision.NOT_SAMPLED


class _Sink:
    mutates_data = False

    def __init__(self) -> None:
        self.spans = 0

    async def consume(self, data: Traces) -> None:
        self.spans += sum(len(ss.spans) for rs in data.message().resource_spans
                          for ss in rs.scope_spans)  # fmt: skip


@pytest.mark.parametrize("store", STORES)
async def test_tail_sampling_processor_judges_the_execution(store: str) -> None:
    """The same through the ``tail_sampling`` processor, on the whole traces the workflow
    processor releases (decided at once, by its own reading of the trace)."""
    from plugins.tailsamplingprocessor.config import TailSamplingConfig
    from plugins.tailsamplingprocessor.processor import TailSamplingProcessor

    spans = run(make(store), [load(SOURCE, "slow_tool").SerializeToString()])
    execution = seconds(named(spans, RUN))
    http = seconds(named(spans, "POST /compute"))
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.extend(spans)
    for objective, kept in ((execution * 0.9, len(spans)), ((execution + http) / 2, 0)):
        sink = _Sink()
        proc = TailSamplingProcessor(
            settings(Kind.PROCESSOR, "tail_sampling", SelfTelemetry()),
            TailSamplingConfig.model_validate(
                {
                    "policies": [
                        {
                            "name": "sla",
                            "type": "workflow_sla",
                            "workflow_sla": {"default": f"{objective * 1000:.3f}ms"},
                        }
                    ]
                }
            ),
            sink,
        )
        whole = Traces(req.SerializeToString())
        whole.whole_traces = True
        await proc.consume(whole)
        await proc.shutdown()
        assert sink.spans == kept, objective
